"""The benchmark harness (minicv.bench): it times the right computations, counts work right, and runs end
to end in --quick mode on numpy and numba, writing valid JSON, markdown and a plot. Nothing here asserts
on speed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import minicv.kernels.numpy as spec
import numpy as np
import pytest
import torch
from PIL import Image

from minicv import nn, optim
from minicv.bench import run as bench_run
from minicv.bench.backends import BenchBackend, minicv_backend
from minicv.bench.cases import BenchCase, gpu_cases, issue_cases, sweep_cases
from minicv.bench.jobs import Job
from minicv.bench.judge import judge_targets
from minicv.bench.machine import machine_info, machine_slug, numba_code
from minicv.bench.problems import (
    Conv2dProblem,
    ConvTranspose2dProblem,
    CrossEntropyProblem,
    MaxPool2dProblem,
    MaxUnpool2dProblem,
    NearestProblem,
    Problem,
)
from minicv.bench.run import run_bench
from minicv.bench.steps import _step_torch
from minicv.bench.timing import QUICK_PLAN, Plan, Timed
from minicv.ops import OPS

REPO = Path(__file__).resolve().parents[1]
QUICK_PROBLEMS = list(dict.fromkeys(c.problem for c in issue_cases(quick=True)))


@pytest.mark.parametrize("problem", QUICK_PROBLEMS, ids=lambda p: p.label)
def test_kernel_path_computes_what_torch_computes(problem: Problem) -> None:
    """The kernel calls timed as 'kernels' are the op: forward and input/weight gradients equal PyTorch's."""
    arrays = problem.arrays(np.random.default_rng(3), np.float64)
    saved = problem.kernel_forward(spec, arrays)
    grads = problem.kernel_backward(spec, arrays, saved)

    t = {k: torch.from_numpy(v).requires_grad_(k in problem.differentiable) for k, v in arrays.items()}
    out = problem.torch(t)
    out.backward(t["gy"] if out.ndim else None)

    forward = {
        MaxPool2dProblem: lambda: saved[0],
        CrossEntropyProblem: lambda: saved[0].mean(),  # per-pixel losses; the op's reduction is the mean
    }.get(type(problem), lambda: saved)()
    np.testing.assert_allclose(forward, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    if isinstance(problem, MaxPool2dProblem):
        torch_indices = torch.nn.functional.max_pool2d(t["x"], problem.k, return_indices=True)[1]
        np.testing.assert_array_equal(saved[1], torch_indices.numpy())
    assert len(grads) == len(problem.differentiable)
    for name, grad in zip(problem.differentiable, grads, strict=True):
        np.testing.assert_allclose(grad, t[name].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_case_names_are_unique(quick: bool) -> None:
    """Ratios and targets are looked up by (group, case, pass): two cases never share a name."""
    cases = issue_cases(quick) + gpu_cases() + sweep_cases(quick, gpu=True)
    keys = [(c.group, c.problem.label, c.passes) for c in cases]
    assert len(keys) == len(set(keys))


def test_work_counts() -> None:
    """FLOPs are 2 * MACs (x3 with the backward); bytes count each input read and each output written once."""
    conv = Conv2dProblem(n=2, c_in=3, c_out=5, hw=6, stride=2)  # 3x3 s2 p1: 6x6 -> 3x3
    assert conv.work(False, 4) == 2 * (2 * 5 * 3 * 3) * (3 * 3 * 3)
    assert conv.work(True, 4) == 3 * conv.work(False, 4)
    # every input pixel meets 4x4 taps per output channel
    transposed = ConvTranspose2dProblem(n=1, c_in=2, c_out=3, hw=4)
    assert transposed.out_hw == 8
    assert transposed.work(False, 4) == 2 * (1 * 2 * 16) * 3 * 16

    # x (1, 1, 4, 4) read; y (1, 1, 2, 2) and int64 indices written; backward: gy read, gx written.
    assert MaxPool2dProblem(1, 1, 4).work(False, 4) == 16 * 4 + 4 * 4 + 4 * 8
    assert MaxPool2dProblem(1, 1, 4).work(True, 4) == 16 * 4 + 4 * 4 + 4 * 8 + 4 * 4 + 16 * 4
    # values and int64 indices (1, 1, 2, 2) read, out (1, 1, 4, 4) written
    assert MaxUnpool2dProblem(1, 1, 4).work(False, 4) == 4 * 4 + 4 * 8 + 16 * 4
    assert NearestProblem(1, 2, 3).work(False, 8) == (2 * 9 + 2 * 36) * 8
    assert NearestProblem(1, 2, 3).work(True, 8) == 2 * (2 * 9 + 2 * 36) * 8
    # logits (2, 4, 3, 3) and int64 targets (2, 3, 3) read; backward writes the logits' gradient
    assert CrossEntropyProblem(2, 4, 3).work(False, 4) == 72 * 4 + 18 * 8
    assert CrossEntropyProblem(2, 4, 3).work(True, 4) == 72 * 4 + 18 * 8 + 72 * 4


def test_unpool_indices_are_one_per_pooling_window() -> None:
    problem = MaxUnpool2dProblem(2, 3, 8)
    indices = problem.arrays(np.random.default_rng(0), np.float32)["indices"]
    rows, cols = np.divmod(indices, 8)
    assert indices.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(rows // 2, np.broadcast_to(np.arange(4)[:, None], indices.shape))
    np.testing.assert_array_equal(cols // 2, np.broadcast_to(np.arange(4), indices.shape))


@pytest.fixture(scope="module", params=["numpy", "numba"])
def quick_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, Path]:
    out = tmp_path_factory.mktemp(f"bench-{request.param}")
    # glibc's default allocator: "reuse" would change this test process for good (tested in a subprocess)
    return request.param, run_bench(out, device=request.param, quick=True, malloc="system"), out


def test_quick_run_times_every_op_on_every_path(quick_run: tuple[str, dict, Path]) -> None:
    device, results, _ = quick_run
    rows = results["results"]
    assert [r for r in rows if "error" in r] == []
    mine = [r for r in rows if r["device"] == device]
    issue = [r for r in mine if r["group"] == "issue"]
    written = {c.problem.op for c in issue_cases(quick=True)}  # the ops with a problem class of their own
    assert {r["op"] for r in issue} == written
    assert {(r["op"], r["pass"]) for r in issue if r["path"] == "op"} == {(o, p) for o in written
                                                                          for p in ("fwd", "fwd+bwd")}
    assert {r["op"] for r in issue if r["path"] == "kernels"} == written
    registry = [r for r in mine if r["group"] == "registry"]  # every other op of the registry, on its timing case
    assert {(r["op"], r["pass"], r["path"]) for r in registry} == {(o, p, "op") for o in set(OPS) - written
                                                                   for p in ("fwd", "fwd+bwd")}
    algorithms = minicv_backend(device).algorithms
    for r in (r for r in issue if r["op"] == "conv2d" and r["path"] == "kernels"):
        assert r["algorithm"] in (algorithms or (None,))
    if algorithms:  # every algorithm of the device is timed and named
        assert {r["algorithm"] for r in issue if r["path"] == "kernels" and r["bound"] == "compute"} == set(algorithms)
    assert any(r["group"].startswith("sweep") for r in mine)
    assert {r["device"] for r in rows} == {device, "torch-cpu"}


def test_quick_run_statistics_and_ratios(quick_run: tuple[str, dict, Path]) -> None:
    _, results, _ = quick_run
    rows = results["results"]
    torch_time = {(r["group"], r["case"], r["pass"]): r["median_s"] for r in rows if r["device"] == "torch-cpu"}
    copy = results["copy_bandwidth_gbps"]["cpu"]
    assert copy > 0
    for r in rows:
        assert r["repeats"] == QUICK_PLAN.min_repeats
        assert 0 < r["min_s"] <= r["q1_s"] <= r["median_s"] <= r["q3_s"] <= r["max_s"]
        rate = r["work"] / r["median_s"] / 1e9
        if r["bound"] == "compute":
            assert r["gflops"] == pytest.approx(rate) and "gbps" not in r
        else:
            assert r["gbps"] == pytest.approx(rate) and r["pct_copy"] == pytest.approx(100 * rate / copy)
        if r["device"] != "torch-cpu" and (r["group"], r["case"], r["pass"]) in torch_time:
            assert r["vs_torch"] == pytest.approx(torch_time[r["group"], r["case"], r["pass"]] / r["median_s"])
        elif r["device"] != "torch-cpu":  # an op PyTorch does not have (batch_norm_relu): no ratio to give
            assert "vs_torch" not in r and r["case"].startswith("batch_norm_relu")


def test_quick_run_judges_no_target(quick_run: tuple[str, dict, Path]) -> None:
    """Its header says a quick run's tiny sizes make the targets meaningless: no row is met or missed."""
    _, results, _ = quick_run
    assert [r for r in results["results"] if "target" in r or "met" in r] == []
    table = Path(results["files"][1]).read_text()
    assert "targets not judged" in table and "missed" not in table and ": met" not in table


def test_targets_are_judged_on_numbas_op_rows() -> None:
    cases = issue_cases(quick=False)
    conv, pool = cases[0], next(c for c in cases if c.problem.op == "max_pool2d" and c.target)
    base = {"group": "issue", "device": "numba", "path": "op"}
    rows = [
        {**base, "case": conv.problem.label, "pass": conv.passes, "vs_torch": 1.2},
        {**base, "case": pool.problem.label, "pass": pool.passes, "gbps": 12.0},
        {**base, "case": conv.problem.label, "pass": conv.passes, "path": "kernels", "vs_torch": 0.5},
        {**base, "case": conv.problem.label, "pass": conv.passes, "device": "numpy", "vs_torch": 0.1},
        {**base, "case": cases[2].problem.label, "pass": cases[2].passes},  # no PyTorch in the run
    ]
    judge_targets(rows, cases)
    assert [(r.get("target"), r.get("met")) for r in rows] == [
        ("vs torch >= 1", True), ("GB/s >= 18", False), (None, None), (None, None), ("vs torch >= 0.9", None)]


def test_quick_run_writes_json_markdown_and_plot(quick_run: tuple[str, dict, Path]) -> None:
    _, results, out = quick_run
    json_path, md_path, png_path = map(Path, results["files"])
    assert json_path.parent == out and json_path.name.endswith("-quick.json")
    written = json.loads(json_path.read_text())
    assert written == {k: v for k, v in results.items() if k != "files"}
    for key in ("cpu", "cores", "numpy", "numba", "torch", "date"):
        assert written["machine"][key]
    table = md_path.read_text()
    assert numba_code(written["machine"]) in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    assert len(rows) == len(results["results"])
    assert all(r["case"] in table for r in results["results"])
    with Image.open(png_path) as image:
        assert image.format == "PNG" and min(image.size) > 100
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".md", ".png"]  # no partial file left


def test_a_run_cut_short_keeps_the_rows_it_timed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A time limit or Ctrl-C during a long run (a GPU session's) leaves the rows of the cases timed so far."""
    time_together = bench_run.time_together
    timed: list[dict] = []

    def time_then_stop(jobs: list[Job], *args):
        if len(timed) == 3:  # the first case's three rows (numpy op and kernels, each alone; torch): stop
            raise KeyboardInterrupt
        rows = time_together(jobs, *args)
        timed.extend(rows)
        return rows

    monkeypatch.setattr(bench_run, "time_together", time_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_bench(tmp_path, device="numpy", op="max_pool2d", quick=True, malloc="system")
    (partial,) = tmp_path.iterdir()
    assert partial.name.endswith("-quick.partial.json")
    results = json.loads(partial.read_text())["results"]
    assert results == timed and [(r["device"], r["path"]) for r in results] == [
        ("numpy", "op"), ("numpy", "kernels"), ("torch-cpu", "torch")]


def test_unknown_op_malloc_and_cudasim_without_quick_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown op 'conv3d'"):
        run_bench(tmp_path, op="conv3d", quick=True)
    with pytest.raises(SystemExit, match="unknown malloc 'jemalloc'; expected one of reuse, system"):
        run_bench(tmp_path, quick=True, malloc="jemalloc")
    with pytest.raises(SystemExit, match="cudasim"):
        run_bench(tmp_path, device="cudasim")
    assert list(tmp_path.iterdir()) == []


def _written_rows(out: Path) -> list[dict]:
    (written,) = out.glob("*-quick.json")
    assert {p.suffix for p in out.iterdir()} == {".json", ".md", ".png"}
    return json.loads(written.read_text())["results"]


def test_python_m_benchmarks(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--device", "numpy", "--op", "interpolate",
                    "--out", str(tmp_path)], cwd=REPO, check=True, capture_output=True)
    rows = _written_rows(tmp_path)
    assert rows and {r["op"] for r in rows} == {"interpolate"}
    (written,) = tmp_path.glob("*-quick.json")
    assert json.loads(written.read_text())["malloc"] == "reuse"  # glibc here: the default applies
    assert "freed blocks reused" in written.with_suffix(".md").read_text()


def test_quick_run_records_the_allocator(quick_run: tuple[str, dict, Path]) -> None:
    _, results, out = quick_run
    assert results["malloc"] == "system"
    assert "glibc's default" in Path(results["files"][1]).read_text()


def test_warm_up_lasts_its_calls_and_its_time() -> None:
    """At least ``warmup`` calls and ``warmup_s`` seconds before the timed repeats; a slow case stops early."""
    calls = []

    def timer(fn):
        calls.append(fn)
        return 0.25

    times = Plan(warmup=3, min_repeats=5, max_repeats=5, budget_s=1.0, warmup_s=1.0).measure(None, timer)
    assert len(times) == 5 and len(calls) == 4 + 5  # 4 warm-up calls fill the second
    calls.clear()
    Plan(warmup=3, min_repeats=2, max_repeats=2, budget_s=0.1, warmup_s=1.0).measure(None, timer)
    assert len(calls) == 2 + 2  # each call over half the budget: the compile call and one more suffice


def test_steps_compared_are_timed_in_alternating_rounds() -> None:
    """All warm up, then each round times each step's share of its repeats in turn, after one untimed
    call, inside the step's context; a step that fails leaves the rounds with its error, the others go on."""
    calls: list[str] = []
    inside: list[str] = []

    def timer_of(name: str, seconds: float, fail_at: int | None = None):
        def timer(fn) -> float:
            calls.append(name)
            if fail_at is not None and calls.count(name) == fail_at:
                raise RuntimeError(f"{name} broke")
            return seconds
        return timer

    @contextlib.contextmanager
    def context_of(name: str):
        inside.append(name)
        yield

    plan = Plan(warmup=2, min_repeats=1, max_repeats=10, budget_s=1.0, rounds=3)
    steps = [Timed(None, timer_of("a", 0.25), lambda: context_of("a")),  # 4 repeats: 1 + 1 + 2 per round
             Timed(None, timer_of("b", 0.5)),  # 2 repeats: 0 + 1 + 1
             Timed(None, timer_of("c", 0.1, fail_at=9))]  # 10 repeats: 3 + 3 + 4, its 9th call fails
    a, b, c = plan.measure_alternating(steps)
    assert a == [0.25] * 4 and b == [0.5] * 2 and isinstance(c, RuntimeError) and str(c) == "c broke"
    # warm-ups; then per round and step the untimed call and the timed ones ("" where a round has none)
    assert "".join(calls) == "aa" "bb" "cc" + "aa" "" "cccc" + "aa" "bb" "ccc" + "aaa" "bb"
    assert inside == ["a"] * 4  # its warm-up and each of its rounds
    assert plan.measure_alternating([Timed(None, timer_of("d", 0.5))]) == [[0.5] * 2] and calls[-4:] == ["d"] * 4


def test_a_problem_may_ask_for_a_longer_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A problem's ``budget_scale`` multiplies the plan's time budget for its rows (the training steps'
    medians need more samples than one kernel's)."""

    @dataclasses.dataclass(frozen=True)
    class Patient(NearestProblem):
        budget_scale: ClassVar[float] = 3.0

    monkeypatch.setattr(BenchBackend, "timer", lambda self: lambda fn: 0.25)  # every call "takes" 0.25 s
    plan = Plan(warmup=1, min_repeats=1, max_repeats=100, budget_s=1.0)
    backend = BenchBackend("torch-cpu", on_gpu=False)
    for problem, repeats in ((NearestProblem(1, 2, 3), 4), (Patient(1, 2, 3), 12)):
        arrays = problem.arrays(np.random.default_rng(0), np.float32)
        assert Job(BenchCase(problem, True, "issue"), backend, "torch").run(plan, arrays)["repeats"] == repeats
    assert TrainStepProblem.budget_scale > 1


def test_torch_runs_on_its_own_aligned_copies() -> None:
    """oneDNN is slower on numpy's 16-byte-aligned buffers: PyTorch gets copies in its own memory."""
    seen = {}

    @dataclasses.dataclass(frozen=True)
    class Probe(NearestProblem):
        def torch(self, t):
            seen.update(t)
            return super().torch(t)

    arrays = Probe(1, 2, 3).arrays(np.random.default_rng(0), np.float32)
    case, backend = BenchCase(Probe(1, 2, 3), True, "issue"), BenchBackend("torch-cpu", on_gpu=False)
    _step_torch(case, backend, arrays)()
    for name, array in arrays.items():
        if name in seen:
            assert not np.shares_memory(seen[name].detach().numpy(), array)
            assert seen[name].data_ptr() % 64 == 0
            np.testing.assert_array_equal(seen[name].detach().numpy(), array)


def test_machine_slug_names_the_microarchitecture() -> None:
    info = {"cpu": "AMD EPYC", "cpu_arch": "znver5", "cores": 2, "gpu": None}
    assert machine_slug(info) == "amd-epyc-znver5-2c"
    assert machine_slug({**info, "gpu": "NVIDIA H200"}) == "amd-epyc-znver5-2c-nvidia-h200"
    assert machine_info([])["cpu_arch"]  # LLVM's name of this CPU, through numba's llvmlite


def test_the_numba_kernels_code_generation_is_recorded() -> None:
    from minicv.kernels.numba import code_generation

    info = machine_info([])
    code = code_generation()
    assert info["numba_code"] == code
    fixed = {"isa": "avx2", "layout": "avx2", "vector_bytes": 64, "tile_rows": 6, "cpu": "znver3", "source": "isa"}
    assert numba_code({"numba_code": fixed}) == "numba code avx2, 64-byte vectors (znver3)"
    emulated = {**fixed, "layout": "avx512", "vector_bytes": 128, "tile_rows": 8, "source": "MINICV_LAYOUT_ISA"}
    assert numba_code({"numba_code": emulated}) == "numba code avx2, avx512 layout, 128-byte vectors (znver3)"


# The engine's modules (the CLI's too), imported and used in a fresh process: the bench stays unloaded.
OUTSIDE_THE_BENCH = """
import pkgutil, sys
import minicv
from minicv import nn, optim
from minicv.ops import OPS

def modules(package):  # its modules and subpackages', recursively; the bench's package not entered
    for m in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if m.name not in ("minicv.bench", "minicv.__main__"):  # (__main__ runs the CLI)
            yield m.name
            if m.ispkg:
                yield from modules(__import__(m.name, fromlist=["_"]))

engine = list(modules(minicv))
for name in engine:
    __import__(name)
assert "minicv.cli" in engine and "minicv.train" in engine, engine
model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
optimizer = optim.SGD(model.parameters(), lr=0.1)
loss = minicv.functional.cross_entropy(model(minicv.ones((2, 3, 8, 8))), minicv.zeros((2, 8, 8), dtype="int64"))
loss.backward()
optimizer.step()
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("minicv.bench", "torch.")))
assert not loaded, f"loaded by the engine: {loaded}"

from minicv.cli import build_parser

build_parser()  # defines bench's options from minicv.bench.options, without the harness
assert "minicv.bench.options" in sys.modules
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("minicv.bench.run", "minicv.bench.timing",
                                                                       "minicv.bench.report", "torch.")))
assert not loaded, f"loaded by the command line's parser: {loaded}"
"""


def test_the_engine_and_the_cli_never_load_the_bench() -> None:
    """The bench is a tool beside the library: importing and using minicv (its CLI included) loads none of
    it, nor PyTorch; the CLI's parser loads only the bench's options."""
    done = subprocess.run([sys.executable, "-c", OUTSIDE_THE_BENCH], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_minicv_bench_command(tmp_path: Path) -> None:
    from minicv.cli import main  # the cli imports the models, hence all of minicv.nn

    assert main(["bench", "--quick", "--device", "numpy", "--op", "max_pool2d", "--out", str(tmp_path)]) == 0
    rows = _written_rows(tmp_path)
    assert rows and {r["op"] for r in rows} == {"max_pool2d"}


def test_several_devices_in_one_run(tmp_path: Path) -> None:
    """--device may repeat: the CPU-vs-GPU plot needs numba and cuda in the same run."""
    results = run_bench(tmp_path, device=["numpy", "cpu", "numba"], op="interpolate", quick=True, malloc="system")
    assert {r["device"] for r in results["results"]} == {"numpy", "numba", "torch-cpu"}


# ---------------------------------------------------------------------------------------------------
# Training steps, the step's breakdown, the AVX2 child and the cold start.

from minicv.bench.breakdown import breakdown  # noqa: E402 (grouped with their tests)
from minicv.bench.isa import evidence_problems, host_features, host_has, parse_isas  # noqa: E402
from minicv.bench.train_step import QUICK_TRAIN_SIZES, TrainStepProblem, geometric_means, train_cases  # noqa: E402
from minicv.bench.twin import torch_twin  # noqa: E402
from minicv.models import TASKS  # noqa: E402


@pytest.mark.parametrize("model", list(TASKS))
def test_torch_twin_gives_the_same_loss(model: str) -> None:
    """The PyTorch twin is the same network: same loss on the same batch, before and after an SGD step
    (so its gradients and update agree too)."""
    problem = TrainStepProblem(model, 2, 32)
    arrays = problem.arrays(np.random.default_rng(1), np.float32)
    mine, theirs = problem.minicv_step("numba", arrays), problem.torch_step("cpu", arrays)
    for _ in range(2):
        assert mine().item() == pytest.approx(theirs().item(), rel=1e-4, abs=1e-4)


def test_torch_twin_refuses_what_it_cannot_copy() -> None:
    with pytest.raises(TypeError, match="expected one of NaiveSegmenter.*but got Sequential"):
        torch_twin(nn.Sequential(nn.ReLU()))


def test_train_step_rows_for_the_five_models_with_ratios(tmp_path: Path) -> None:
    results = run_bench(tmp_path, device="numba", op="train_step", quick=True, malloc="system")
    rows = results["results"]
    assert [r for r in rows if "error" in r] == []
    sizes = {f"N{n} 3x{hw}x{hw}" for n, hw in QUICK_TRAIN_SIZES}
    numba = [r for r in rows if r["device"] == "numba"]
    assert {r["case"] for r in numba} == {f"{m} {s}" for m in TASKS for s in sizes}
    assert {r["case"] for r in rows if r["device"] == "torch-cpu"} == {r["case"] for r in numba}
    assert all(r["op"] == "train_step" and r["path"] == "op" and r["vs_torch"] > 0 and r["isa"] == "native"
               for r in numba)
    assert {key.split(" ", 1)[1] for key in geometric_means(rows)} == sizes
    assert "geometric mean over the five models" in Path(results["files"][1]).read_text()


def test_full_train_steps_are_the_demos_and_the_issues_sizes() -> None:
    from minicv.demo import BATCH_SIZE

    cases = train_cases(quick=False)
    assert {c.problem.label for c in cases} == {f"{m} N{n} 3x{hw}x{hw}" for m in TASKS
                                                for n, hw in ((BATCH_SIZE, 64), (8, 128))}
    assert all(c.target == ("vs torch", 1.0) for c in cases)


def test_breakdown_lists_the_kernel_table_functions(tmp_path: Path) -> None:
    from minicv.ops import kernel_table

    subprocess.run([sys.executable, "-m", "benchmarks", "--breakdown", "segnet", "--quick", "--out", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True)
    (written,) = tmp_path.glob("*-breakdown-segnet-quick.md")
    table = written.read_text()
    # freed memory reused as in the benchmark's rows (glibc: Linux), and said
    memory = "reuse" if sys.platform == "linux" else "(reuse|system)"
    assert re.search(rf"host memory {memory} \(see `--malloc`\); mean of 3 steps", table)
    used = {"conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "max_pool2d_forward",
            "unpool_scatter", "unpool_gather", "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
            "batch_norm_forward", "batch_norm_backward"}
    assert used <= set(kernel_table())
    for name in used:  # every kernel a SegNet step calls, each on its own row
        assert f"| kernel {name} |" in table
    assert "| op Conv2dFunction.forward |" in table and "| optimizer SGD.step |" in table and "| other " in table
    shares = [float(line.split("|")[3].strip().rstrip("%")) for line in table.splitlines()
              if line.startswith("| ") and not line.startswith("| where")]
    assert sum(shares) == pytest.approx(100, abs=0.5)


def test_breakdown_restores_what_it_timed() -> None:
    import minicv.kernels.numba as kernels

    from minicv.functional.conv import Conv2dFunction

    before = (kernels.conv2d_forward, Conv2dFunction.__dict__["forward"], optim.Optimizer.step)
    breakdown("naive", n=1, hw=8, steps=1)
    assert (kernels.conv2d_forward, Conv2dFunction.__dict__["forward"], optim.Optimizer.step) == before


def test_unknown_isa_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--isa native,avx3: unknown avx3; expected native or avx2, or both"):
        run_bench(tmp_path, quick=True, isa="native,avx3")
    assert parse_isas("native, avx2,native") == ("native", "avx2")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not host_has("avx2"), reason="this CPU has no AVX2 at all: no AVX2 code can run here")
def test_avx2_child_runs_avx2_code_and_says_so(tmp_path: Path) -> None:
    """--isa native,avx2: the AVX2 rows come from a child whose numba conv kernel has no zmm register and
    whose PyTorch reports AVX2; the header names both ISAs; ratios pair each ISA with its own PyTorch."""
    results = run_bench(tmp_path, device="numba", op="cross_entropy", quick=True, malloc="system",
                        isa="native,avx2")
    avx2 = results["isa"]["avx2"]
    assert avx2["zmm"] == 0 and avx2["ymm"] > 0 and avx2["numba_cpu"] == "haswell"
    assert avx2["torch_capability"] == "AVX2" and avx2["torch_conv_code"] == "jit:avx2"  # oneDNN capped too
    if "avx512f" in host_features():  # the native run's evidence shows what the child left out
        assert results["isa"]["native"]["zmm"] > 0 and "avx512" in results["isa"]["native"]["torch_conv_code"]
    rows = results["results"]
    assert {r["isa"] for r in rows} == {"native", "avx2"}
    assert {(r["case"], r["pass"], r["device"]) for r in rows if r["isa"] == "avx2"} == \
        {(r["case"], r["pass"], r["device"]) for r in rows if r["isa"] == "native"}
    torch_time = {(r["case"], r["pass"], r["isa"]): r["median_s"] for r in rows if r["device"] == "torch-cpu"}
    for r in (r for r in rows if r["device"] == "numba"):
        assert r["vs_torch"] == pytest.approx(torch_time[r["case"], r["pass"], r["isa"]] / r["median_s"])
    table = Path(results["files"][1]).read_text()
    assert "ISAs in this run: native, avx2" in table and "## issue (avx2)" in table
    assert "PyTorch capability AVX2, its convolutions oneDNN's jit:avx2" in table


def test_evidence_against_the_isa_is_a_problem() -> None:
    evidence = {"zmm": 3, "conv_kernel": "conv._winograd_tiles", "torch_capability": "AVX512",
                "torch_conv_code": "jit:avx512_core"}
    assert evidence_problems("avx2", evidence) == [
        "numba's conv._winograd_tiles uses zmm (AVX-512) registers 3 times",
        "PyTorch reports capability AVX512, not AVX2", "PyTorch's convolutions run oneDNN's jit:avx512_core"]
    assert evidence_problems("native", evidence) == []


def test_cold_start_row(tmp_path: Path) -> None:
    """A fresh process with an empty cache, then again on the cache it filled: compile = cold - warm."""
    results = run_bench(tmp_path, device="numba", op="cold_start", quick=True, malloc="system")
    (row,) = results["results"]
    assert row["op"] == "cold_start" and row["isa"] == "native" and row["device"] == "numba"
    assert row["median_s"] > row["warm_s"] > 0 and row["compile_s"] == pytest.approx(row["median_s"] - row["warm_s"])
    assert "compile " in Path(results["files"][1]).read_text()
    rows = [{**row, "compile_s": 12.0}, {**row, "compile_s": 31.0}]
    judge_targets(rows, [])
    assert [(r["target"], r["met"]) for r in rows] == [("compile s <= 30", True), ("compile s <= 30", False)]


def test_op_overhead_script_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/op_overhead.py calls the kernel table directly: it must follow the kernels' contract."""
    from benchmarks import op_overhead

    monkeypatch.setattr(op_overhead, "ROUNDS", 1)
    monkeypatch.setattr(op_overhead, "CALLS", 1)
    result = op_overhead.measure(1, 3, 4, 8)
    assert set(result) == {"kernel conv2d_forward", "op F.conv2d, no_grad", "op F.conv2d, recording",
                           "op forward + sum + backward"}
    assert all(us >= 0 for us in result.values())
