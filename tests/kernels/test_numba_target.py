"""The CPU the Numba kernels compile for and the vector width chosen for it (kernels/numba/target.py)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import minicv.kernels.numba as nb
import pytest
from minicv.kernels.numba import conv_tiles, simd, target
from numba.core.registry import cpu_target

# LLVM's haswell: AVX2 and FMA, no AVX-512 (NUMBA_CPU_NAME alone keeps the host's features)
HASWELL_FEATURES = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fsgsbase,+fxsr,+invpcid,+lzcnt,"
                    "+mmx,+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+xsaveopt")


def _enabled(features: str) -> frozenset[str]:
    return frozenset(flag[1:] for flag in features.split(",") if flag.startswith("+"))


@pytest.mark.parametrize("arch, features, isa", [
    ("x86_64", "+avx,+avx2,+fma,+avx512f,+avx512bw,-avx512fp16", "avx512"),
    ("x86_64", HASWELL_FEATURES, "avx2"),
    ("x86_64", "+avx,+avx2,+fma,-avx512f,-avx512vl", "avx2"),
    ("x86_64", "+sse2,+avx,-avx2", "sse"),  # Sandy Bridge: AVX without FMA
    ("aarch64", "+neon,+fp-armv8", "neon"),
    ("arm64", "", "neon"),
    ("ppc64le", "+altivec", "generic"),
])
def test_instruction_set_of_a_target(arch, features, isa):
    assert target.instruction_set(arch, _enabled(features)) == isa


def test_the_width_is_the_one_of_the_isa_numba_compiles_for():
    """The same CPU name and features as Numba's code generator (its cache key), so the width and the
    machine code agree."""
    _, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    code = nb.code_generation()
    assert code["cpu"] == cpu
    assert code["isa"] == target.instruction_set(target._ARCH, _enabled(features))
    assert code["layout"] == os.environ.get(target.LAYOUT_OVERRIDE) or code["isa"]
    overrides = [name for name in (target.LAYOUT_OVERRIDE, target.OVERRIDE) if os.environ.get(name)]
    assert code["source"] == (", ".join(overrides) or "isa")
    width = os.environ.get(target.OVERRIDE) or target.TILES[code["layout"]][0]
    assert (simd.VECTOR_BYTES, conv_tiles.ROWS) == (code["vector_bytes"], code["tile_rows"])
    assert (code["vector_bytes"], code["tile_rows"]) == (int(width), target.TILES[code["layout"]][1])


CHILD = textwrap.dedent("""
    import json
    import minicv.kernels.numba as nb
    import minicv.kernels.numpy as spec
    import numpy as np
    from minicv.kernels.numba import notice, simd

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 70)).astype(np.float32)
    w = rng.standard_normal((9, 3, 3, 3)).astype(np.float32)
    hyper = ((1, 2), (1, 1), (1, 1), 1)  # stride 2 along w: the split's vectors, rows wider than any vector
    with nb.conv_algorithm("direct"):
        y = nb.conv2d_forward(x, w, (5, 35), *hyper)
    error = float(np.abs(y - spec.conv2d_forward(x, w, (5, 35), *hyper)).max())
    # the pixel-lanes weight gradient (27 taps) sums its lanes by a tree from 8 lanes, one by one below
    for dtype in (np.float32, np.float64):
        xd, gy = x.astype(dtype), rng.standard_normal((2, 9, 5, 35)).astype(dtype)
        gw = nb.conv2d_backward_weight(xd, gy, w.shape, *hyper)
        error = max(error, float(np.abs(gw - spec.conv2d_backward_weight(xd, gy, w.shape, *hyper)).max()))
    print(json.dumps({"code": nb.code_generation(), "lanes": simd.VECTOR_BYTES // 4, "error": error}))
""")


def _run_child(env: dict) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_an_overridden_width_caches_apart_and_switching_back_and_forth_is_right(tmp_path):
    """Numba's cache keys code on the CPU, not on the width: each overridden width caches under a folder of
    its own, so a process with another width never loads code compiled for the first (whose vectors would
    not match the lanes the Python side lays out)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    env.pop(target.LAYOUT_OVERRIDE, None)
    isa = nb.code_generation()["isa"]
    seen = []
    for width in (32, 64, 32):
        result, stderr = _run_child({**env, target.OVERRIDE: str(width)})
        assert result["code"] == {**result["code"], "isa": isa, "vector_bytes": width, "source": target.OVERRIDE}
        assert result["lanes"] == width // 4
        assert result["error"] < 1e-4  # the forward and the weight gradient's, ~20 products of N(0, 1) each
        seen.append("compiling" in stderr)
    assert seen == [True, True, False]  # the third process found 32's code in 32's folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minicv-vector-bytes-32", "minicv-vector-bytes-64"]


LAYOUT_CHILD = textwrap.dedent("""
    import json
    import minicv.kernels.numba as nb
    import minicv.kernels.numpy as spec
    import numpy as np
    from minicv.kernels.numba import conv, conv_tiles, loss

    rng = np.random.default_rng(0)
    errors = {}

    def check(name, got, want):  # float64 convolutions: the sums differ by rounding only
        errors[name] = max(errors.get(name, 0.0), float(np.abs(got - want).max() / np.abs(want).max()))

    # (C_in, C_out, kernel, stride, size) with AVX-512's thresholds: 3 channels (direct, pixel-lane weight
    # gradient), stride 2 (direct, channels-last weight gradient, two-phase transposed), 32 -> 40 (Winograd
    # forward, backward-input and weight gradient), 4x4 stride 2 with 33 channels (Winograd transposed);
    # output channels that leave a short last tile of 8 rows
    for c_in, c_out, k, s, size in [(3, 20, 3, 1, 11), (16, 20, 3, 2, 13), (32, 40, 3, 1, 10), (36, 33, 4, 2, 12)]:
        hyper = ((s, s), (1, 1), (1, 1), 1)
        out_hw = ((size + 2 - k) // s + 1,) * 2
        x, w = rng.standard_normal((2, c_in, size, size)), rng.standard_normal((c_out, c_in, k, k))
        gy = rng.standard_normal((2, c_out, *out_hw))
        check("forward", nb.conv2d_forward(x, w, out_hw, *hyper), spec.conv2d_forward(x, w, out_hw, *hyper))
        check("backward_input", nb.conv2d_backward_input(gy, w, x.shape, *hyper),
              spec.conv2d_backward_input(gy, w, x.shape, *hyper))
        check("backward_weight", nb.conv2d_backward_weight(x, gy, w.shape, *hyper),
              spec.conv2d_backward_weight(x, gy, w.shape, *hyper))
    # cross-entropy in float32: AVX-512's blocks of a literal width, one full and one ragged
    x = rng.standard_normal((2, 5, loss.FORWARD_BLOCK + 7)).astype(np.float32)
    target, weight = rng.integers(0, 5, (2, x.shape[2])), np.ones(5, np.float32)
    got, stats = nb.softmax_cross_entropy_forward(x, target, weight, -100, 0.0)
    want, _ = spec.softmax_cross_entropy_forward(x.astype(np.float64), target, weight.astype(np.float64), -100, 0.0)
    check("cross_entropy", got, want)
    print(json.dumps({"code": nb.code_generation(), "rows": conv_tiles.ROWS, "literal_width": loss.LITERAL_WIDTH,
                      "winograd": [conv.WINOGRAD_MIN_CHANNELS, conv.WINOGRAD_MIN_PAIRS], "errors": errors}))
""")


def test_another_isas_layout_runs_here_and_agrees_with_the_spec(tmp_path):
    """MINICV_LAYOUT_ISA=avx512 on any machine: AVX-512's 128-byte vectors, tiles of 8 rows, thresholds and
    cross-entropy blocks, in this CPU's machine code, cached apart; every path the layout changes agrees
    with the spec. (The whole kernel suite under it: docs/DECISIONS.md.)"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), target.LAYOUT_OVERRIDE: "avx512"}
    env.pop(target.OVERRIDE, None)
    done = subprocess.run([sys.executable, "-c", LAYOUT_CHILD], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == {**result["code"], "isa": nb.code_generation()["isa"], "layout": "avx512",
                              "vector_bytes": 128, "tile_rows": 8, "source": target.LAYOUT_OVERRIDE}
    assert (result["rows"], result["literal_width"], result["winograd"]) == (8, True, [[16, 32], 1024])
    assert set(result["errors"]) == {"forward", "backward_input", "backward_weight", "cross_entropy"}
    assert max(result["errors"].values()) < 1e-6, result["errors"]  # float32 cross-entropy: a few ulp
    assert [p.name for p in tmp_path.iterdir()] == ["minicv-layout-avx512-vector-bytes-128"]


def test_a_bad_override_names_the_variable_and_the_choices():
    done = subprocess.run([sys.executable, "-c", "import minicv.kernels.numba"], capture_output=True, text=True,
                          env={**os.environ, target.OVERRIDE: "48"})
    assert done.returncode != 0
    assert "ValueError: MINICV_VECTOR_BYTES='48': expected one of 16, 32, 64, 128 (bytes per vector)" in done.stderr
    done = subprocess.run([sys.executable, "-c", "import minicv.kernels.numba"], capture_output=True, text=True,
                          env={**os.environ, target.LAYOUT_OVERRIDE: "avx10"})
    assert done.returncode != 0
    assert ("ValueError: MINICV_LAYOUT_ISA='avx10': expected one of avx512, avx2, neon, sse, generic (the "
            "instruction set whose layout the kernels take)") in done.stderr


@pytest.mark.skipif(nb.code_generation()["isa"] not in ("avx512", "avx2"), reason="x86 code only")
def test_avx2_code_on_any_x86_host_has_no_zmm_register(tmp_path):
    """NUMBA_CPU_NAME=haswell with haswell's features (the name alone keeps the host's AVX-512) gives AVX2
    code, and the kernels the width and the Winograd thresholds for it."""
    script = textwrap.dedent("""
        import numpy as np
        import minicv.kernels.numba as nb
        from minicv.kernels.numba import conv, conv_tiles
        x = np.zeros((1, 1, 3, 200), np.float32)
        out = np.empty((1, 1, 1, 2, 3, 100), np.float32)
        conv_tiles._split_phases(0, 1, x, 0, 0, out)  # the one plane, called directly
        asm = "".join(conv_tiles._split_phases.inspect_asm().values())
        print(nb.code_generation()["isa"], "zmm" in asm, "ymm" in asm, conv.WINOGRAD_MIN_CHANNELS[1],
              conv.WINOGRAD_MIN_PAIRS, conv.WINOGRAD_WEIGHT_MIN_CHANNELS)
    """)
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": HASWELL_FEATURES,
           "NUMBA_CACHE_DIR": str(tmp_path)}
    env.pop(target.OVERRIDE, None), env.pop(target.LAYOUT_OVERRIDE, None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["avx2", "False", "True", "8", "64", "24"]


@pytest.mark.skipif(nb.code_generation()["isa"] not in ("avx512", "avx2"), reason="x86 code only")
def test_avx2_cross_entropy_kernels_have_no_masked_store(tmp_path):
    """AVX2 has no mask registers: a loop storing only some lanes (``peak[q] = v if v > peak[q] else
    peak[q]``, or logging log_sum in place behind a select) becomes vmaskmovps, microcoded on AMD (it took a
    third of the AVX2 forward's time on Zen 4). The kernels store whole vectors."""
    script = textwrap.dedent("""
        import numpy as np
        from minicv.kernels.numba import loss
        for dtype in (np.float32, np.float64):
            x = np.zeros((1, 3, loss.BACKWARD_BLOCK + 5), dtype)  # full and ragged blocks of both kernels
            target, weight = np.zeros((1, x.shape[2]), np.int64), np.ones(3, dtype)
            _, stats = loss.softmax_cross_entropy_forward(x, target, weight, -100, 0.0)
            loss.softmax_cross_entropy_backward(x, target, weight, -100, 0.0, stats, np.ones(target.shape, dtype))
        for kernel in (loss._forward, loss._backward):
            asm = "".join(kernel.inspect_asm().values())
            print(kernel.__name__, len(kernel.signatures), "ymm" in asm, "zmm" in asm, asm.count("vmaskmov"))
    """)
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": HASWELL_FEATURES,
           "NUMBA_CACHE_DIR": str(tmp_path)}
    env.pop(target.OVERRIDE, None), env.pop(target.LAYOUT_OVERRIDE, None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["_forward", "2", "True", "False", "0", "_backward", "2", "True", "False", "0"]



def test_an_overridden_width_caches_beside_numbas_own_choice(monkeypatch, tmp_path):
    """NUMBA_CACHE_DIR if set; else the kernels' __pycache__ (a checkout), or Numba's user folder when the
    package cannot be written (an installed one): never a place Numba would refuse and fall back from."""
    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    assert target._cache_base() == tmp_path
    monkeypatch.setattr(config, "CACHE_DIR", "")
    assert target._cache_base() == Path(target.__file__).with_name("__pycache__")  # the editable checkout
    monkeypatch.setattr(target.os, "access", lambda *args: False)
    assert target._cache_base() == Path(target.AppDirs(appname="numba", appauthor=False).user_cache_dir)
