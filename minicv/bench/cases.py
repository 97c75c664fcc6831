"""The cases: a problem forward or forward+backward in a group of the report; the issue's sizes (and their
targets), the GPU sizes, and the sweeps of the plot."""

from __future__ import annotations

from dataclasses import dataclass

from minicv.bench.problems import (
    Conv2dProblem,
    ConvTranspose2dProblem,
    CrossEntropyProblem,
    MaxPool2dProblem,
    MaxUnpool2dProblem,
    NearestProblem,
    Problem,
    RegistryProblem,
)
from minicv.ops import OPS


@dataclass(frozen=True)
class BenchCase:
    """A problem, forward or forward+backward, in a group of the report, with its CPU target if any."""

    problem: Problem
    backward: bool
    group: str  # "issue" (the issue's sizes), "gpu" (GPU sizes), or "sweep <family>"
    target: tuple[str, float] | None = None  # ("vs torch", 1.0) or ("GB/s", 18.0), judged on numba's op
    gpu_only: bool = False

    @property
    def passes(self) -> str:
        return "fwd+bwd" if self.backward else "fwd"


# The issue's sizes (and their targets), the GPU sizes, and the sweeps of the plot.

SWEEPS = {  # family -> (problem at size s, CPU sizes, sizes added where a GPU is present)
    "conv2d 3x3 N8 64->64": (lambda s: Conv2dProblem(8, 64, 64, s), (8, 16, 32, 64), (128,)),
    "nearest x2 N8 C64": (lambda s: NearestProblem(8, 64, s), (16, 32, 64, 128), (256,)),
}
QUICK_SWEEPS = {family: (make, (4, 8), ()) for family, (make, _, _) in SWEEPS.items()}


def issue_cases(quick: bool) -> list[BenchCase]:
    """The issue's problems; --quick shrinks every one to a few kilobytes, keeping its kind."""
    if quick:
        conv, pool, classes = dict(n=2, c_in=8, c_out=8, hw=8), dict(n=2, c=4, hw=8), dict(n=2, classes=5, hw=8)
        small = dict(n=1, c_in=16, c_out=16, hw=4)
    else:
        conv, pool, classes = dict(n=16, c_in=64, c_out=64, hw=64), dict(n=16, c=64, hw=128), \
            dict(n=16, classes=21, hw=128)
        small = dict(n=8, c_in=128, c_out=128, hw=32)
    ratio, bandwidth = "vs torch", "GB/s"
    return [
        BenchCase(Conv2dProblem(**conv), False, "issue", (ratio, 1.0)),
        BenchCase(Conv2dProblem(**conv), True, "issue", (ratio, 1.0)),
        BenchCase(Conv2dProblem(**small), False, "issue", (ratio, 0.9)),
        BenchCase(Conv2dProblem(**conv, stride=2), True, "issue", (ratio, 1.0)),
        BenchCase(ConvTranspose2dProblem(**conv), False, "issue", (ratio, 1.5)),
        BenchCase(ConvTranspose2dProblem(**conv), True, "issue"),
        BenchCase(MaxPool2dProblem(**pool), False, "issue", (bandwidth, 18.0)),
        BenchCase(MaxPool2dProblem(**pool), True, "issue"),
        BenchCase(MaxUnpool2dProblem(**pool), False, "issue", (bandwidth, 18.0)),
        BenchCase(MaxUnpool2dProblem(**pool), True, "issue"),
        BenchCase(NearestProblem(pool["n"], pool["c"], pool["hw"] // 2), False, "issue", (bandwidth, 18.0)),
        BenchCase(NearestProblem(pool["n"], pool["c"], pool["hw"] // 2), True, "issue"),
        BenchCase(CrossEntropyProblem(**classes), False, "issue"),
        BenchCase(CrossEntropyProblem(**classes), True, "issue", (ratio, 2.0)),
    ]


def gpu_cases() -> list[BenchCase]:
    """The issue's GPU sizes beyond the CPU ones: N64 128->128 32x32 convs, memory-bound ops at N64 C64 256."""
    big = dict(n=64, c=64, hw=256)
    return [
        BenchCase(Conv2dProblem(64, 128, 128, 32), False, "gpu", gpu_only=True),
        BenchCase(Conv2dProblem(64, 128, 128, 32), True, "gpu", gpu_only=True),
        BenchCase(MaxPool2dProblem(**big), False, "gpu", gpu_only=True),
        BenchCase(MaxUnpool2dProblem(**big), False, "gpu", gpu_only=True),
        BenchCase(NearestProblem(64, 64, 128), False, "gpu", gpu_only=True),
        BenchCase(CrossEntropyProblem(64, 21, 256), True, "gpu", gpu_only=True),
    ]


def sweep_cases(quick: bool, gpu: bool) -> list[BenchCase]:
    cases = []
    for family, (make, sizes, gpu_sizes) in (QUICK_SWEEPS if quick else SWEEPS).items():
        cases += [BenchCase(make(s), False, f"sweep {family}") for s in sizes]
        cases += [BenchCase(make(s), False, f"sweep {family}", gpu_only=True) for s in (gpu_sizes if gpu else ())]
    return cases


def registry_cases(timed: set[str]) -> list[BenchCase]:
    """Every op of the registry (minicv/ops.py) not in ``timed`` (the ops the cases above time), forward and
    forward+backward on its timing case: a new op is benchmarked as soon as it is registered."""
    return [BenchCase(RegistryProblem(op.name), backward, "registry")
            for op in OPS.values() if op.name not in timed and op.timing_case() is not None
            for backward in (False, True)]
