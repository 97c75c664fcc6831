"""The benchmark under another instruction set, and the cold start, each in a child process.

``--isa avx2`` runs the whole comparison with AVX2 code on a host that has more (AVX-512): a child
process in which Numba compiles for Haswell (``NUMBA_CPU_NAME=haswell`` with Haswell's feature string
in ``NUMBA_CPU_FEATURES``: the name alone keeps the host's AVX-512 features) into a cache of its own,
and PyTorch dispatches its AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``) and oneDNN, which runs its
convolutions, JIT-compiles AVX2 code (``ONEDNN_MAX_CPU_ISA=AVX2``). The child first checks that this is
so, and its evidence goes into the results: one numba conv kernel compiled afresh there has no zmm
(AVX-512) register in its machine code, PyTorch reports the capability, and oneDNN's verbose line for a
conv names its AVX2 implementation. The cold start is a
fresh process with an empty Numba cache running one training step of each demo model at the demo's
batch and size, run twice (cold, then on the cache it filled): the difference is the compile time.

Run as ``python -m minicv.bench.isa bench|cold-start ISA ...`` by ``minicv.bench.run``, never by hand.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minicv.demo import BATCH_SIZE, IMAGE_SIZE

ISAS = ("native", "avx2")
# LLVM's features of the Haswell CPU (the first AVX2 + FMA one): what a 2013-2024 laptop's CPU has at least
HASWELL_FEATURES = ("+64bit,+aes,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fsgsbase,+fxsr,+invpcid,"
                    "+lzcnt,+mmx,+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,"
                    "+xsave,+xsaveopt,-avx512f")
ENVIRONMENTS = {  # what each ISA other than the host's own sets in the child's environment
    # ATEN_CPU_CAPABILITY is PyTorch's own kernels' dispatch only: its convolutions are oneDNN's, which
    # JIT-compiles for the host's ISA unless ONEDNN_MAX_CPU_ISA caps it
    "avx2": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": HASWELL_FEATURES, "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
TORCH_CAPABILITY = {"avx2": "AVX2"}  # what torch.backends.cpu.get_cpu_capability() must say in the child
# batch, image side: the demo's, since which algorithm a layer takes (and so which kernels compile) depends
# on them (Winograd needs 512 2x2 tiles a batch; kernels/numba/conv.py)
COLD_START_SIZE = (BATCH_SIZE, IMAGE_SIZE)
SIMD_REPORT = "isa_choice"  # kernels/numba/simd.py's report of its ISA / vector width, read where it exists


def parse_isas(isa: str | Sequence[str]) -> tuple[str, ...]:
    """``"native"``, ``"avx2"``, ``"native,avx2"`` (or a sequence of those) -> the ISAs, each once, in order."""
    names = [n.strip() for part in ([isa] if isinstance(isa, str) else isa) for n in part.split(",") if n.strip()]
    unknown = [n for n in names if n not in ISAS]
    if unknown or not names:
        given, bad = ",".join(names) or repr(isa), ", ".join(unknown) or "empty"
        raise SystemExit(f"minicv bench: --isa {given}: unknown {bad}; expected {' or '.join(ISAS)}, "
                         "or both comma-separated (native,avx2)")
    return tuple(dict.fromkeys(names))


def host_features() -> set[str]:
    import llvmlite.binding as llvm

    return {f[1:] for f in llvm.get_host_cpu_features().flatten().split(",") if f.startswith("+")}


def host_has(isa: str) -> bool:
    """Whether this CPU can run ``isa``'s code (the child would die of an illegal instruction otherwise)."""
    return isa == "native" or isa in host_features()


def cache_dir(isa: str) -> Path:
    """The child's own Numba cache: kept between runs, so that only the first one per ISA compiles."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "minicv" / f"numba-{isa}"


def child_env(isa: str, numba_cache: Path | None) -> dict[str, str]:
    env = {**os.environ, **ENVIRONMENTS.get(isa, {})}
    if numba_cache is not None:
        env["NUMBA_CACHE_DIR"] = str(numba_cache)
    return env


# ---------------------------------------------------------------------------------------------------
# The evidence, taken inside the process whose code it describes.


def conv_kernel_asm() -> tuple[str, str]:
    """(name, machine code) of one numba conv kernel, compiled afresh in this process.

    Numba cannot show the code of a kernel loaded from its cache, so the Winograd tile kernel (the one
    built on simd's vectors), or failing that the first compiled conv kernel, is compiled again,
    uncached, for the signature a small conv just used.
    """
    import numpy as np
    from numba import njit
    from numba.core.registry import CPUDispatcher

    import minicv.kernels.numba as kernels

    # 32 -> 32 channels: wide enough for the device's default algorithm, Winograd, to take the layer
    x, w = np.ones((1, 32, 8, 8), np.float32), np.ones((32, 32, 3, 3), np.float32)
    kernels.conv2d_forward(x, w, (8, 8), (1, 1), (1, 1), (1, 1), 1)
    found = []
    for module in pkgutil.iter_modules(kernels.__path__):
        if "conv" in module.name:
            mod = importlib.import_module(f"{kernels.__name__}.{module.name}")
            found += [(f"{module.name}.{name}", d) for name, d in vars(mod).items()
                      if isinstance(d, CPUDispatcher) and d.signatures]
    if not found:
        raise RuntimeError("no compiled numba conv kernel found in minicv.kernels.numba")
    name, dispatcher = next(((n, d) for n, d in found if "winograd_tiles" in n), found[0])
    options = {k: v for k, v in dispatcher.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = njit(**options)(dispatcher.py_func)
    signature = dispatcher.signatures[0]
    fresh.compile(signature)
    return name, fresh.inspect_asm(signature)


def onednn_conv_code() -> str:
    """The implementation oneDNN runs a PyTorch convolution with in this process (e.g. ``jit:avx512_core``,
    ``jit:avx2``), from its verbose line: fd 1 goes to a file while one small conv runs."""
    import torch

    x, w = torch.ones(8, 64, 32, 32), torch.ones(64, 64, 3, 3)  # PyTorch's own code serves tiny convs
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                torch.nn.functional.conv2d(x, w, padding=1)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = [line for line in log.read().splitlines() if ",convolution," in line]
    found = [field for line in lines for field in line.split(",") if field.startswith(("jit:", "brg", "gemm:", "ref"))]
    return found[0] if found else "unknown"


def isa_evidence(isa: str) -> dict[str, Any]:
    """What this process's code really uses: numba's CPU, one conv kernel's registers, PyTorch's capability."""
    import llvmlite.binding as llvm
    from numba.core import config

    name, asm = conv_kernel_asm()
    evidence: dict[str, Any] = {
        "isa": isa,
        "numba_cpu": config.CPU_NAME or llvm.get_host_cpu_name(),
        "numba_cpu_features": "set (NUMBA_CPU_FEATURES)" if config.CPU_FEATURES else "the host's",
        "conv_kernel": name,
        "zmm": asm.count("%zmm"),
        "ymm": asm.count("%ymm"),
    }
    simd = importlib.import_module("minicv.kernels.numba.simd")
    report = getattr(simd, SIMD_REPORT, None)
    evidence["simd"] = report() if callable(report) else {"vector_bytes": getattr(simd, "VECTOR_BYTES", None)}
    with contextlib.suppress(ImportError):
        import torch

        evidence["torch_capability"] = torch.backends.cpu.get_cpu_capability()
        evidence["torch_conv_code"] = onednn_conv_code()
    return evidence


def evidence_problems(isa: str, evidence: dict[str, Any]) -> list[str]:
    """What contradicts the ISA's promise (an empty list: it does what it says)."""
    problems = []
    if isa == "avx2" and evidence["zmm"]:
        problems.append(f"numba's {evidence['conv_kernel']} uses zmm (AVX-512) registers {evidence['zmm']} times")
    expected = TORCH_CAPABILITY.get(isa)
    if expected and evidence.get("torch_capability", expected) != expected:
        problems.append(f"PyTorch reports capability {evidence['torch_capability']}, not {expected}")
    if isa == "avx2" and "avx512" in evidence.get("torch_conv_code", ""):
        problems.append(f"PyTorch's convolutions run oneDNN's {evidence['torch_conv_code']}")
    return problems


def describe(evidence: dict[str, Any]) -> str:
    """One line of the report's header."""
    return (f"{evidence['isa']}: numba for {evidence['numba_cpu']} ({evidence['numba_cpu_features']} features), "
            f"{evidence['conv_kernel']} compiled here uses {evidence['zmm']} zmm and {evidence['ymm']} ymm "
            f"register operands; simd {evidence['simd']}; PyTorch capability {evidence.get('torch_capability', '-')}, "
            f"its convolutions oneDNN's {evidence.get('torch_conv_code', '-')}")


# ---------------------------------------------------------------------------------------------------
# The children.


def _run_child(args: list[str], env: dict[str, str], what: str) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "minicv.bench.isa", *args], env=env)
    if done.returncode:
        raise SystemExit(f"minicv bench: {what} failed (exit status {done.returncode}; its error is above)")
    return time.perf_counter() - began


def run_child(isa: str, options: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's rows (``minicv.bench.run.time_isa(isa, **options)``) and the evidence, from a child
    process running ``isa``'s code."""
    if not host_has(isa):
        raise SystemExit(f"minicv bench: --isa {isa}: this CPU has no {isa.upper()}")
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rows.json"
        _run_child(["bench", isa, json.dumps(options), str(result)], child_env(isa, cache_dir(isa)),
                   f"the {isa} child process")
        return json.loads(result.read_text())


def cold_start(isa: str) -> dict[str, Any]:
    """A results row: the wall time of a fresh process with an empty numba cache running one training step
    of each demo model (cold), then of the same on the cache it filled (warm); compile = cold - warm."""
    from minicv.models import TASKS

    n, hw = COLD_START_SIZE
    with tempfile.TemporaryDirectory() as cache:
        env = child_env(isa, Path(cache))
        what = f"the cold-start child process ({isa})"
        cold = _run_child(["cold-start", isa], env, what)
        warm = _run_child(["cold-start", isa], env, what)  # the same work on the cache the cold run filled
    return {
        "group": "cold start", "op": "cold_start", "isa": isa, "pass": "step", "device": "numba", "path": "op",
        "algorithm": None, "bound": "time", "work": 0,
        "case": f"import + one step of {', '.join(TASKS)} (N{n} 3x{hw}x{hw}), empty numba cache",
        "median_s": cold, "q1_s": cold, "q3_s": cold, "min_s": cold, "max_s": cold, "repeats": 1,
        "warm_s": warm, "compile_s": cold - warm,
    }


def _child_cold_start() -> None:
    """One training step of each demo model on the numba device (the cold-start child's work)."""
    import numpy as np

    from minicv.bench.train_step import TrainStepProblem
    from minicv.models import TASKS
    from minicv.precompile import compile_ahead

    n, hw = COLD_START_SIZE
    compile_ahead(list(TASKS), (hw, hw), n)  # as the demo does
    for model in TASKS:
        problem = TrainStepProblem(model, n, hw)
        problem.minicv_step("numba", problem.arrays(np.random.default_rng(0), np.float32))()


def main(argv: Sequence[str]) -> int:
    command, isa, *rest = argv
    if command == "cold-start":
        _child_cold_start()
        return 0
    evidence = isa_evidence(isa)
    problems = evidence_problems(isa, evidence)
    if problems:
        print(f"minicv bench: --isa {isa} does not run {isa} code here: {'; '.join(problems)}", file=sys.stderr)
        return 3
    from minicv.bench.run import time_isa  # here: run imports this module

    options, result = json.loads(rest[0]), Path(rest[1])
    result.write_text(json.dumps({"evidence": evidence, "rows": time_isa(isa, **options)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
