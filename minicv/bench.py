"""``minicv bench`` (and ``python -m benchmarks``): time every op of the lecture on every device present,
against PyTorch in the same run.

Each op runs forward and forward+backward, at the issue's sizes and over a sweep of sizes, through two
paths per minicv device: ``op`` (minicv.functional, what a user calls: validation, Tensors, autograd) and
``kernels`` (the device's kernel functions called directly on raw arrays, once per conv algorithm), so
kernel speed and engine overhead are both visible. PyTorch (CPU, and CUDA where a GPU is present) runs
the same problems. Every timing excludes JIT compilation (warm-up calls first) and reports the median
and the quartiles over repeats; convolutions report GFLOP/s (2 * the direct sum's MACs, whatever the
algorithm: Winograd does fewer, so its rate can pass the FMA peak), memory-bound ops GB/s (each
input read once, each output written once) and the share of the device's copy bandwidth; every row
reports ``vs torch`` = torch time / minicv time (> 1: faster than PyTorch). Results go to
``<out>/<machine>.json``, ``.md`` (the table, each target marked met or missed; a ``--quick`` run's tiny
sizes judge no target) and ``.png`` (time against problem size, log-log).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import importlib
import json
import math
import os
import platform
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import minicv
import minicv.functional as F
from minicv.devices import canonical_name, get_device
from minicv.functional.conv import conv_output_hw, conv_transpose_output_hw
from minicv.tensor import Tensor

Pair = tuple[int, int]
ONE: Pair = (1, 1)
ZERO: Pair = (0, 0)
IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------------
# The problems: one class per op, its three ways to run (minicv op, PyTorch, kernels) side by side.


@dataclass(frozen=True)
class Problem:
    """One op at one size. ``arrays`` holds its inputs and ``gy``, the upstream gradient of its output."""

    op: ClassVar[str] = ""  # the minicv.functional / torch.nn.functional name
    bound: ClassVar[str] = "memory"  # "compute": rate in GFLOP/s; "memory": rate in GB/s
    differentiable: ClassVar[tuple[str, ...]] = ("x",)  # the inputs that get gradients
    kernel_path: ClassVar[bool] = True  # whether a "kernels" path (the kernel-table calls alone) exists
    devices: ClassVar[tuple[str, ...] | None] = None  # the minicv devices it runs on (None: every one)

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def minicv(self, t: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def torch(self, t: dict[str, Any]) -> Any:
        raise NotImplementedError

    def kernel_forward(self, k: Any, a: dict[str, Any]) -> Any:
        """The forward kernels; returns what the backward kernels need."""
        raise NotImplementedError

    def kernel_backward(self, k: Any, a: dict[str, Any], saved: Any) -> tuple[Any, ...]:
        """The backward kernels for upstream gradient ``gy``; the gradients of ``differentiable``, in order."""
        raise NotImplementedError

    def work(self, backward: bool, itemsize: int) -> float:
        """Floating-point operations (compute-bound) or bytes moved (memory-bound) of one pass."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError

    def step(self, path: str, case: BenchCase, backend: BenchBackend,
             arrays: dict[str, np.ndarray]) -> Callable[[], Any]:
        """One run of the case through ``path`` ("op", "kernels" or "torch"), as a no-argument callable."""
        return STEPS[path](case, backend, arrays)


def _nbytes(itemsize: int, *shapes: tuple[int, ...]) -> int:
    return itemsize * sum(math.prod(s) for s in shapes)


@dataclass(frozen=True)
class Conv2dProblem(Problem):
    n: int
    c_in: int
    c_out: int
    hw: int
    k: int = 3
    stride: int = 1
    padding: int = 1
    op = "conv2d"
    bound = "compute"
    differentiable = ("x", "w")

    @property
    def out_hw(self) -> int:
        return conv_output_hw((self.hw, self.hw), (self.k, self.k), *self._hyper()[:3])[0]

    @property
    def label(self) -> str:
        return f"conv{self.k}x{self.k} s{self.stride} N{self.n} {self.c_in}->{self.c_out} {self.hw}x{self.hw}"

    def arrays(self, rng, dtype):
        return {
            "x": rng.standard_normal((self.n, self.c_in, self.hw, self.hw), dtype),
            "w": rng.standard_normal((self.c_out, self.c_in, self.k, self.k), dtype) * 0.1,
            "gy": rng.standard_normal((self.n, self.c_out, self.out_hw, self.out_hw), dtype),
        }

    def minicv(self, t):
        return F.conv2d(t["x"], t["w"], stride=self.stride, padding=self.padding)

    def torch(self, t):
        import torch.nn.functional as TF

        return TF.conv2d(t["x"], t["w"], stride=self.stride, padding=self.padding)

    def _hyper(self) -> tuple[Pair, Pair, Pair, int]:
        return (self.stride, self.stride), (self.padding, self.padding), ONE, 1

    def kernel_forward(self, k, a):
        return k.conv2d_forward(a["x"], a["w"], (self.out_hw, self.out_hw), *self._hyper())

    def kernel_backward(self, k, a, saved):
        return (k.conv2d_backward_input(a["gy"], a["w"], a["x"].shape, *self._hyper()),
                k.conv2d_backward_weight(a["x"], a["gy"], a["w"].shape, *self._hyper()))

    def work(self, backward, itemsize):
        macs = self.n * self.c_out * self.out_hw**2 * self.c_in * self.k**2
        return 2 * macs * (3 if backward else 1)  # backward: one GEMM's worth for the input, one for the weight


@dataclass(frozen=True)
class ConvTranspose2dProblem(Problem):
    n: int
    c_in: int
    c_out: int
    hw: int
    k: int = 4
    stride: int = 2
    padding: int = 1
    op = "conv_transpose2d"
    bound = "compute"
    differentiable = ("x", "w")

    @property
    def out_hw(self) -> int:
        return conv_transpose_output_hw((self.hw, self.hw), (self.k, self.k), *self._hyper()[:3], (0, 0))[0]

    @property
    def label(self) -> str:
        return (f"conv_transpose{self.k}x{self.k} s{self.stride} p{self.padding} N{self.n} "
                f"{self.c_in}->{self.c_out} {self.hw}->{self.out_hw}")

    def arrays(self, rng, dtype):
        return {
            "x": rng.standard_normal((self.n, self.c_in, self.hw, self.hw), dtype),
            "w": rng.standard_normal((self.c_in, self.c_out, self.k, self.k), dtype) * 0.1,
            "gy": rng.standard_normal((self.n, self.c_out, self.out_hw, self.out_hw), dtype),
        }

    def minicv(self, t):
        return F.conv_transpose2d(t["x"], t["w"], stride=self.stride, padding=self.padding)

    def torch(self, t):
        import torch.nn.functional as TF

        return TF.conv_transpose2d(t["x"], t["w"], stride=self.stride, padding=self.padding)

    def _hyper(self) -> tuple[Pair, Pair, Pair, int]:
        return (self.stride, self.stride), (self.padding, self.padding), ONE, 1

    def kernel_forward(self, k, a):
        return k.conv2d_backward_input(a["x"], a["w"], a["gy"].shape, *self._hyper())

    def kernel_backward(self, k, a, saved):
        # The duals: gx is the conv2d of gy; gy plays the conv's input for the weight gradient.
        return (k.conv2d_forward(a["gy"], a["w"], a["x"].shape[2:], *self._hyper()),
                k.conv2d_backward_weight(a["gy"], a["x"], a["w"].shape, *self._hyper()))

    def work(self, backward, itemsize):
        macs = self.n * self.c_in * self.hw**2 * self.c_out * self.k**2
        return 2 * macs * (3 if backward else 1)


@dataclass(frozen=True)
class MaxPool2dProblem(Problem):
    """max_pool2d with return_indices=True (kernel = stride, no padding)."""

    n: int
    c: int
    hw: int
    k: int = 2
    op = "max_pool2d"

    @property
    def label(self) -> str:
        return f"max_pool2d {self.k}x{self.k} N{self.n} C{self.c} {self.hw}x{self.hw}"

    @property
    def _shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.n, self.c, self.hw, self.hw), (self.n, self.c, self.hw // self.k, self.hw // self.k)

    def arrays(self, rng, dtype):
        x_shape, y_shape = self._shapes
        return {"x": rng.standard_normal(x_shape, dtype), "gy": rng.standard_normal(y_shape, dtype)}

    def minicv(self, t):
        return F.max_pool2d(t["x"], self.k, return_indices=True)[0]

    def torch(self, t):
        import torch.nn.functional as TF

        return TF.max_pool2d(t["x"], self.k, return_indices=True)[0]

    def _hyper(self) -> tuple[Pair, Pair, Pair, Pair]:
        return (self.k, self.k), (self.k, self.k), ZERO, ONE

    def kernel_forward(self, k, a):
        out_hw = self._shapes[1][2:]
        return k.max_pool2d_forward(a["x"], *self._hyper(), out_hw)

    def kernel_backward(self, k, a, saved):
        _, indices = saved
        return (k.unpool_scatter(a["gy"], indices, (self.hw, self.hw), self._hyper()),)

    def work(self, backward, itemsize):
        x_shape, y_shape = self._shapes
        forward = _nbytes(itemsize, x_shape, y_shape) + _nbytes(8, y_shape)  # x read; y, int64 indices written
        return forward + (_nbytes(itemsize, y_shape, x_shape) if backward else 0)  # gy read, gx written


@dataclass(frozen=True)
class MaxUnpool2dProblem(Problem):
    """max_unpool2d of a k x k max pool's values and indices back to hw x hw."""

    n: int
    c: int
    hw: int
    k: int = 2
    op = "max_unpool2d"

    @property
    def label(self) -> str:
        return f"max_unpool2d {self.k}x{self.k} N{self.n} C{self.c} {self.hw // self.k}->{self.hw}"

    @property
    def _shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.n, self.c, self.hw // self.k, self.hw // self.k), (self.n, self.c, self.hw, self.hw)

    def arrays(self, rng, dtype):
        pooled_shape, out_shape = self._shapes
        # Each window's maximum at a random tap (di, dj): flat offset (k*i + di) * hw + k*j + dj.
        rows = self.k * np.arange(pooled_shape[2])[:, None] + rng.integers(0, self.k, pooled_shape)
        cols = self.k * np.arange(pooled_shape[3]) + rng.integers(0, self.k, pooled_shape)
        return {
            "x": rng.standard_normal(pooled_shape, dtype),
            "indices": (rows * self.hw + cols).astype(np.int64),
            "gy": rng.standard_normal(out_shape, dtype),
        }

    def minicv(self, t):
        return F.max_unpool2d(t["x"], t["indices"], self.k, output_size=(self.hw, self.hw))

    def torch(self, t):
        import torch.nn.functional as TF

        return TF.max_unpool2d(t["x"], t["indices"], self.k, output_size=(self.hw, self.hw))

    def kernel_forward(self, k, a):
        return k.unpool_scatter(a["x"], a["indices"], (self.hw, self.hw))

    def kernel_backward(self, k, a, saved):
        return (k.unpool_gather(a["gy"], a["indices"]),)

    def work(self, backward, itemsize):
        pooled_shape, out_shape = self._shapes
        forward = _nbytes(itemsize, pooled_shape, out_shape) + _nbytes(8, pooled_shape)
        return forward + (_nbytes(itemsize, out_shape, pooled_shape) if backward else 0)


@dataclass(frozen=True)
class NearestProblem(Problem):
    """interpolate(mode='nearest', scale_factor=scale)."""

    n: int
    c: int
    hw: int
    scale: int = 2
    op = "interpolate"

    @property
    def label(self) -> str:
        return f"nearest x{self.scale} N{self.n} C{self.c} {self.hw}->{self.hw * self.scale}"

    @property
    def _shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        out = self.hw * self.scale
        return (self.n, self.c, self.hw, self.hw), (self.n, self.c, out, out)

    def arrays(self, rng, dtype):
        x_shape, y_shape = self._shapes
        src = np.arange(self.hw * self.scale, dtype=np.int64) // self.scale  # floor(dst * in / out)
        return {"x": rng.standard_normal(x_shape, dtype), "gy": rng.standard_normal(y_shape, dtype), "src": src}

    def minicv(self, t):
        return F.interpolate(t["x"], scale_factor=self.scale, mode="nearest")

    def torch(self, t):
        import torch.nn.functional as TF

        return TF.interpolate(t["x"], scale_factor=self.scale, mode="nearest")

    def kernel_forward(self, k, a):
        return k.upsample_nearest_forward(a["x"], a["src"], a["src"])

    def kernel_backward(self, k, a, saved):
        return (k.upsample_nearest_backward(a["gy"], a["src"], a["src"], (self.hw, self.hw)),)

    def work(self, backward, itemsize):
        x_shape, y_shape = self._shapes
        return _nbytes(itemsize, x_shape, y_shape) * (2 if backward else 1)  # backward: gy read, gx written


@dataclass(frozen=True)
class CrossEntropyProblem(Problem):
    """cross_entropy(x, target) per pixel, reduction='mean'."""

    n: int
    classes: int
    hw: int
    op = "cross_entropy"

    @property
    def label(self) -> str:
        return f"cross_entropy N{self.n} C{self.classes} {self.hw}x{self.hw}"

    def arrays(self, rng, dtype):
        pixels = self.n * self.hw * self.hw
        return {
            "x": rng.standard_normal((self.n, self.classes, self.hw, self.hw), dtype),
            "target": rng.integers(0, self.classes, (self.n, self.hw, self.hw)),
            "weight": np.ones(self.classes, dtype),
            "g": np.full((self.n, self.hw * self.hw), 1 / pixels, dtype),  # d mean / d loss[n, p]
        }

    def minicv(self, t):
        return F.cross_entropy(t["x"], t["target"])

    def torch(self, t):
        import torch.nn.functional as TF

        return TF.cross_entropy(t["x"], t["target"])

    def _flat(self, a: dict[str, Any]) -> tuple[Any, Any, Any, int, float]:
        pixels = self.hw * self.hw
        return a["x"].reshape(self.n, self.classes, pixels), a["target"].reshape(self.n, pixels), a["weight"], \
            IGNORE_INDEX, 0.0

    def kernel_forward(self, k, a):
        return k.softmax_cross_entropy_forward(*self._flat(a))

    def kernel_backward(self, k, a, saved):
        _, stats = saved
        return (k.softmax_cross_entropy_backward(*self._flat(a), stats, a["g"]).reshape(a["x"].shape),)

    def work(self, backward, itemsize):
        x_shape = (self.n, self.classes, self.hw, self.hw)
        forward = _nbytes(itemsize, x_shape) + _nbytes(8, x_shape[:1] + x_shape[2:])  # logits, int64 targets
        return forward + (_nbytes(itemsize, x_shape) if backward else 0)  # gx written


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


# ---------------------------------------------------------------------------------------------------
# The cases: the issue's sizes (and their targets), the GPU sizes, and the sweeps of the plot.

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


# ---------------------------------------------------------------------------------------------------
# Backends: where a problem runs (a minicv device, or PyTorch on the CPU or the GPU) and how it is timed.


@dataclass
class BenchBackend:
    """A minicv device (its array module, kernels, whether its ops load) or PyTorch on one device."""

    name: str  # numpy, numba, cudasim, cuda, torch-cpu, torch-cuda
    on_gpu: bool
    xp: Any = None  # numpy or cupy; None for PyTorch
    kernels: Any = None
    ops_load: bool = True  # False while a device's kernel table is incomplete: only its kernels are timed
    algorithms: tuple[str, ...] = ()  # conv algorithms the kernels offer (the numba device's setting)
    note: str = ""

    @property
    def is_torch(self) -> bool:
        return self.xp is None

    def timer(self) -> Callable[[Callable[[], Any]], float]:
        """Seconds one call of fn takes: CUDA events on a GPU, perf_counter on the CPU."""
        if not self.on_gpu:
            return _perf_counter_time
        if self.is_torch:
            import torch

            return lambda fn: _event_time(fn, lambda: torch.cuda.Event(enable_timing=True),
                                          lambda start, end: start.elapsed_time(end))
        cupy = self.xp
        return lambda fn: _event_time(fn, cupy.cuda.Event, cupy.cuda.get_elapsed_time)

    def algorithm(self, name: str) -> contextlib.AbstractContextManager:
        """A context in which the kernels use conv algorithm ``name`` ('' for the device's only one)."""
        return self.kernels.conv_algorithm(name) if name else contextlib.nullcontext()


def _perf_counter_time(fn: Callable[[], Any]) -> float:
    import time

    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def _event_time(fn: Callable[[], Any], event: Callable[[], Any], elapsed_ms: Callable[[Any, Any], float]) -> float:
    start, end = event(), event()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return elapsed_ms(start, end) / 1e3


def minicv_backend(name: str) -> BenchBackend | None:
    """The backend of a minicv device present here, None when it cannot run at all.

    A CPU device whose kernel table is still incomplete is kept with ``ops_load=False``: the kernels it
    has are timed, the missing ones are reported as errors.
    """
    try:
        device = get_device(name)
        if device.on_gpu:
            device.xp.cuda.runtime.getDeviceCount()
        kernels, xp, ops_load, note = device.kernels, device.xp, True, ""
    except Exception as err:
        if name == "cuda":
            return None
        try:
            kernels = importlib.import_module(f"minicv.kernels.{name}")
        except Exception:
            return None
        xp, ops_load, note = np, False, f"ops not loaded ({err}); kernels timed as far as they exist"
    return BenchBackend(name, name == "cuda", xp, kernels, ops_load, conv_algorithms(kernels), note)


def conv_algorithms(kernels: Any) -> tuple[str, ...]:
    """The conv algorithms a kernel table offers through ``conv_algorithm(name)``.

    The names are the ``ALGORITHMS`` of the table, or of the module that defines ``conv_algorithm``.
    """
    if not hasattr(kernels, "conv_algorithm"):
        return ()
    names = getattr(kernels, "ALGORITHMS", None)
    if names is None:
        names = getattr(importlib.import_module(kernels.conv_algorithm.__module__), "ALGORITHMS", ())
    return tuple(names)


def torch_backends() -> list[BenchBackend]:
    """PyTorch on the CPU, and on the GPU when one is present (TF32 off: float32 means float32)."""
    try:
        import torch
    except ImportError:
        return []
    backends = [BenchBackend("torch-cpu", on_gpu=False)]
    if torch.cuda.is_available():
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        backends.append(BenchBackend("torch-cuda", on_gpu=True))
    return backends


def baseline_of(backend: BenchBackend) -> str:
    return "torch-cuda" if backend.on_gpu else "torch-cpu"


# ---------------------------------------------------------------------------------------------------
# One run of a case on a backend, as a no-argument callable; the timing loop.


def _step_minicv(case: BenchCase, backend: BenchBackend, arrays: dict[str, np.ndarray]) -> Callable[[], Any]:
    problem, device = case.problem, backend.name
    t = {k: Tensor(v, device=device, requires_grad=case.backward and k in problem.differentiable)
         for k, v in arrays.items()}
    gy = t.get("gy")

    def forward():
        with minicv.no_grad():
            problem.minicv(t)

    def forward_backward():
        for name in problem.differentiable:
            t[name].grad = None
        out = problem.minicv(t)
        out.backward(gy if out.ndim else None)

    return forward_backward if case.backward else forward


def _step_kernels(case: BenchCase, backend: BenchBackend, arrays: dict[str, np.ndarray]) -> Callable[[], Any]:
    problem, kernels = case.problem, backend.kernels
    a = {k: backend.xp.ascontiguousarray(backend.xp.asarray(v)) for k, v in arrays.items()}

    def run():
        saved = problem.kernel_forward(kernels, a)
        if case.backward:
            problem.kernel_backward(kernels, a, saved)

    return run


def _step_torch(case: BenchCase, backend: BenchBackend, arrays: dict[str, np.ndarray]) -> Callable[[], Any]:
    import torch

    problem = case.problem
    where = "cuda" if backend.on_gpu else "cpu"
    # copies in PyTorch's own (64-byte aligned) memory: oneDNN's convolutions run up to 2x slower on
    # numpy's 16-byte-aligned buffers, and a PyTorch user's tensors are PyTorch's
    t = {k: torch.from_numpy(v).to(where, copy=True).requires_grad_(case.backward and k in problem.differentiable)
         for k, v in arrays.items()}
    gy = t.get("gy")

    def forward():
        with torch.no_grad():
            problem.torch(t)

    def forward_backward():
        for name in problem.differentiable:
            t[name].grad = None
        out = problem.torch(t)
        out.backward(gy if out.ndim else None)

    return forward_backward if case.backward else forward


STEPS = {"op": _step_minicv, "kernels": _step_kernels, "torch": _step_torch}


@dataclass(frozen=True)
class Plan:
    """How long to time: warm-up calls (the first one compiles), then repeats filling a time budget."""

    warmup: int = 3
    min_repeats: int = 5
    max_repeats: int = 30
    budget_s: float = 1.0
    warmup_s: float = 0.0  # and at least this long: PyTorch's CPU convs take ~40 calls to reach their pace

    def measure(self, step: Callable[[], Any], timer: Callable[[Callable[[], Any]], float]) -> list[float]:
        last, spent, i = 0.0, 0.0, 0
        while i < self.warmup or spent < self.warmup_s:
            last = timer(step)
            spent, i = spent + last, i + 1
            if i >= 2 and last > self.budget_s / 2:  # a slow case: the compile call and one more suffice
                break
        repeats = min(self.max_repeats, max(self.min_repeats, math.ceil(self.budget_s / max(last, 1e-9))))
        return [timer(step) for _ in range(repeats)]


FULL_PLAN = Plan(budget_s=0.6, warmup_s=0.6)
QUICK_PLAN = Plan(warmup=2, min_repeats=3, max_repeats=3, budget_s=0.0)


def summarize(times: list[float]) -> dict[str, float | int]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_s": float(median), "q1_s": float(q1), "q3_s": float(q3), "min_s": float(min(times)),
            "max_s": float(max(times)), "repeats": len(times)}


@dataclass(frozen=True)
class Job:
    """One row of the results: a case on a backend through one path (op, kernels, or torch)."""

    case: BenchCase
    backend: BenchBackend
    path: str  # "op", "kernels" or "torch"
    algorithm: str = ""  # the conv algorithm ("" where the device has one, or for memory-bound ops)

    def run(self, plan: Plan, arrays: dict[str, np.ndarray], isa: str = "native") -> dict:
        """Time the job on the problem's host ``arrays``; the row, with an error in place of times if it fails.

        ``isa`` names the instruction set this process's code runs (see minicv.bench_isa).
        """
        problem = self.case.problem
        row = {
            "group": self.case.group, "op": problem.op, "case": problem.label, "pass": self.case.passes,
            "device": self.backend.name, "path": self.path, "algorithm": self.algorithm or None,
            "bound": problem.bound, "work": problem.work(self.case.backward, 4), "isa": isa,
        }
        try:
            step = problem.step(self.path, self.case, self.backend, arrays)
            with self.backend.algorithm(self.algorithm):
                row.update(summarize(plan.measure(step, self.backend.timer())))
            row["gflops" if problem.bound == "compute" else "gbps"] = row["work"] / row["median_s"] / 1e9
        except Exception as err:  # a kernel still being written may fail in any way: report it, go on
            row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        return row


def plan_jobs(cases: list[BenchCase], backends: list[BenchBackend]) -> list[Job]:
    jobs = []
    for case in cases:
        for backend in backends:
            if case.gpu_only and not backend.on_gpu:
                continue
            runs_on = case.problem.devices
            if runs_on is not None and not backend.is_torch and backend.name not in runs_on:
                continue
            if backend.is_torch:
                jobs.append(Job(case, backend, "torch"))
                continue
            conv = case.problem.bound == "compute"
            if backend.ops_load:
                # what a user gets: the device's current (default) conv algorithm, named in the row
                default = backend.kernels.get_conv_algorithm() if conv and backend.algorithms else ""
                jobs.append(Job(case, backend, "op", default))
            if case.group.startswith("sweep") or not case.problem.kernel_path:
                continue  # the sweeps plot what a user sees: the ops
            algorithms = backend.algorithms if conv else ()
            jobs += [Job(case, backend, "kernels", a) for a in algorithms or ("",)]
    return jobs


# ---------------------------------------------------------------------------------------------------
# Copy bandwidth, the machine, ratios and targets.


def copy_bandwidth(backend: BenchBackend, plan: Plan, nbytes: int) -> float:
    """GB/s of one large copy on the backend's device (bytes read + bytes written per second)."""
    xp = backend.xp
    src = xp.ones(nbytes // 4, dtype=np.float32)
    dst = xp.empty_like(src)
    times = plan.measure(lambda: xp.copyto(dst, src), backend.timer())
    return 2 * nbytes / float(np.median(times)) / 1e9


def reuse_freed_memory() -> bool:
    """Have glibc keep freed memory for the next allocation instead of handing it back to the OS.

    By default glibc takes every block above a threshold (at most 32 MiB) fresh from the OS and returns it
    when freed, so a call that allocates a large output pays a page fault for each 4 KiB it writes: on
    max_pool2d 2x2 N16 C64 128x128 (32 MiB of int64 indices) that tripled the time of minicv's kernel
    and of PyTorch's alike. The harness times kernels, not the OS, so it raises both thresholds, for every
    backend of the process; PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for the same reason.
    True where it applied (glibc); ``--malloc system`` keeps the default.
    """
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(m_mmap_threshold, 2**31 - 1) and libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def machine_info(backends: list[BenchBackend]) -> dict:
    info = {
        "cpu": _cpu_model(),
        "cpu_arch": _cpu_arch(),
        "cores": os.cpu_count(),
        "gpu": None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "minicv": minicv.__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_average": os.getloadavg()[0],  # a shared machine's other work slows every timing
    }
    for module in ("numba", "torch", "cupy"):
        with contextlib.suppress(ImportError):
            info[module] = importlib.import_module(module).__version__
    with contextlib.suppress(ImportError):
        import numba

        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
        from minicv.kernels.numba import code_generation

        info["numba_code"] = code_generation()  # the ISA and vector width its kernels are compiled for
    with contextlib.suppress(ImportError):
        import torch

        info["torch_threads"] = torch.get_num_threads()
    for backend in backends:
        if backend.on_gpu and not backend.is_torch:
            info["gpu"] = backend.xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        elif backend.on_gpu and info["gpu"] is None:
            import torch

            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_arch() -> str:
    """The CPU's microarchitecture as LLVM names it (e.g. znver5): virtual machines often report only
    "AMD EPYC", and two generations of it differ twofold in vector width."""
    with contextlib.suppress(ImportError):
        import llvmlite.binding

        return llvmlite.binding.get_host_cpu_name()
    return ""


def numba_code(info: dict) -> str:
    """The numba kernels' code generation, in words: 'numba code avx512, 128-byte vectors (znver4)'."""
    code = info.get("numba_code")
    return f"numba code {code['isa']}, {code['vector_bytes']}-byte vectors ({code['cpu']})" if code else "numba code -"


def machine_slug(info: dict) -> str:
    """A file name for the machine: CPU model and microarchitecture, core count, and GPU name when present."""
    parts = [info["cpu"], info.get("cpu_arch", ""), f"{info['cores']}c"] + ([info["gpu"]] if info["gpu"] else [])
    return re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-")


def add_ratios(rows: list[dict], copy_gbps: dict[str, float]) -> None:
    """vs torch (torch time / minicv time, same case, same kind of device) and % of copy bandwidth."""
    torch_time = {(r["group"], r["case"], r["pass"], r["device"], r.get("isa")): r["median_s"]
                  for r in rows if r["path"] == "torch" and "median_s" in r}
    for r in rows:
        if "median_s" not in r:
            continue
        baseline = "torch-cuda" if r["device"] in ("cuda", "torch-cuda") else "torch-cpu"
        reference = torch_time.get((r["group"], r["case"], r["pass"], baseline, r.get("isa")))
        if reference is not None and r["path"] != "torch":
            r["vs_torch"] = reference / r["median_s"]
        copy = copy_gbps.get("gpu" if r["device"] in ("cuda", "torch-cuda") else "cpu")
        if "gbps" in r and copy:
            r["pct_copy"] = 100 * r["gbps"] / copy


def judge_targets(rows: list[dict], cases: list[BenchCase]) -> None:
    """Mark each CPU target on numba's op row (what a user calls), under every ISA: met or missed."""
    targets = {(c.group, c.problem.label, c.passes): c.target for c in cases if c.target}
    for r in rows:
        target = targets.get((r["group"], r["case"], r["pass"]))
        if r.get("op") == "cold_start":
            r["target"] = f"compile s <= {COLD_COMPILE_TARGET_S:g}"
            r["met"] = bool(r["compile_s"] <= COLD_COMPILE_TARGET_S)
        if target is None or (r["device"], r["path"]) != ("numba", "op"):
            continue
        metric, threshold = target
        value = r.get("vs_torch" if metric == "vs torch" else "gbps")
        r["target"] = f"{metric} >= {threshold:g}"
        r["met"] = None if value is None else bool(value >= threshold)


# ---------------------------------------------------------------------------------------------------
# Reports: markdown and a log-log plot.


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def markdown(results: dict) -> str:
    info, rows = results["machine"], results["results"]
    lines = [
        f"# minicv benchmark: {info['cpu']} ({info.get('cpu_arch') or '?'}), {info['cores']} cores"
        + (f", {info['gpu']}" if info["gpu"] else ""),
        "",
        f"{info['date']}; numpy {info['numpy']}, numba {info.get('numba', '-')}, torch {info.get('torch', '-')}"
        f" ({info.get('torch_threads', '-')} threads), numba threads {info.get('numba_threads', '-')}, "
        f"{numba_code(info)}, "
        f"load average {info['load_average']:.1f} at the end; host memory: "
        + ("freed blocks reused (`--malloc reuse`, no page fault per call)" if results.get("malloc") == "reuse"
           else "glibc's default (large blocks page-faulted afresh on every call)")
        + ("; **quick run: tiny sizes, targets not judged**" if results["quick"] else ""),
        "",
        "Copy bandwidth (one large copy, read + write): "
        + ", ".join(f"{k} {v:.1f} GB/s" for k, v in results["copy_bandwidth_gbps"].items()),
        "",
        "Times are medians over the repeats (IQR = interquartile range); `vs torch` = torch time / minicv "
        "time in this run (> 1: faster than PyTorch); `op` = minicv.functional, `kernels` = the device's "
        "kernel functions called directly. Convolution rates count the direct sum's 2 * MACs whatever the "
        "algorithm; `winograd` does 16/36 of the products on the 3x3 stride-1 layers and 9/16 on the 4x4 "
        "stride-2 transposed convs it serves, so its rate can pass the machine's FMA peak.",
    ]
    lines += [f"\nNote: {name}: {note}" for name, note in results["notes"].items()]
    lines += _isa_lines(results)
    header = ("| case | pass | device | path | algorithm | median ms | IQR ms | rate | % copy | vs torch | target |\n"
              "|---|---|---|---|---|---:|---:|---:|---:|---:|---|")
    isas = list(dict.fromkeys(r.get("isa", "native") for r in rows))
    for isa in isas:
        for group in dict.fromkeys(r["group"] for r in rows if r.get("isa", "native") == isa):
            lines += ["", f"## {group}" + (f" ({isa})" if len(isas) > 1 else ""), "", header]
            for r in (r for r in rows if r["group"] == group and r.get("isa", "native") == isa):
                lines.append(_markdown_row(r))
    return "\n".join(lines) + "\n"


def _isa_lines(results: dict) -> list[str]:
    """The evidence of each ISA's run, and the training steps' geometric means."""
    from minicv.bench_isa import describe
    from minicv.bench_train import geometric_means

    lines = []
    if results.get("isa"):
        lines += ["", f"ISAs in this run: {', '.join(results['isa'])} (each row's `isa`; AVX2 rows from a child "
                      "process, numba for haswell and PyTorch with ATEN_CPU_CAPABILITY=avx2):"]
        lines += [f"- {describe(evidence)}" for evidence in results["isa"].values()]
    means = geometric_means(results["results"])
    if means:
        lines += ["", "Training steps, numba vs PyTorch, geometric mean over the five models (target >= 1.2): "
                  + ", ".join(f"{key} {mean:.2f}" for key, mean in means.items())]
    return lines


def _markdown_row(r: dict) -> str:
    cells = [r["case"], r["pass"], r["device"], r["path"], r["algorithm"] or ""]
    if "error" in r:
        return "| " + " | ".join(cells + [f"error: {r['error']}".replace("|", "/")] + [""] * 5) + " |"
    if "compile_s" in r:  # the cold start: one wall time, its compile share, no rate
        rate = f"compile {r['compile_s']:.3g} s (warm {r['warm_s']:.3g} s)"
    else:
        rate = f"{r['gflops']:.3g} GFLOP/s" if "gflops" in r else f"{r['gbps']:.3g} GB/s"
    target = ""
    if "target" in r:
        target = f"{r['target']}: " + {True: "met", False: "**missed**", None: "no torch"}[r["met"]]
    cells += [
        _ms(r["median_s"]),
        f"{_ms(r['q1_s'])}-{_ms(r['q3_s'])}",
        rate,
        f"{r['pct_copy']:.0f}%" if "pct_copy" in r else "",
        f"{r['vs_torch']:.2f}" if "vs_torch" in r else "",
        target,
    ]
    return "| " + " | ".join(cells) + " |"


def plot(results: dict, path: Path) -> None:
    """Time against problem size (log-log), one panel per sweep, one line per device's op and PyTorch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["results"] if r["group"].startswith("sweep") and "median_s" in r]
    families = list(dict.fromkeys(r["group"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(families)), figsize=(6 * max(1, len(families)), 4.5), squeeze=False)
    for ax, family in zip(axes[0], families):
        mine = [r for r in rows if r["group"] == family]
        compute = mine[0]["bound"] == "compute"
        for device in dict.fromkeys(r["device"] for r in mine):
            line = sorted((r["work"], r["median_s"]) for r in mine if r["device"] == device)
            ax.loglog([w / (1e9 if compute else 1e6) for w, _ in line], [t * 1e3 for _, t in line], "o-",
                      label=device)
        ax.set(title=family.removeprefix("sweep "), xlabel="GFLOP" if compute else "MB moved", ylabel="time (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['machine']['cpu']}" + (f" + {results['machine']['gpu']}" if results["machine"]["gpu"]
                                                    else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------


OPS = ("conv2d", "conv_transpose2d", "max_pool2d", "max_unpool2d", "interpolate", "cross_entropy")
SELECTIONS = (*OPS, "train_step", "cold_start")  # what --op may pick: an op, the training steps, the cold start
COLD_COMPILE_TARGET_S = 30.0  # the issue's target for compiling what the demo uses
MALLOC_CHOICES = ("reuse", "system")
CUDASIM_NEEDS_QUICK = "cudasim runs CUDA threads as fibers on the CPU; use it with --quick"


def select_backends(device: str | Sequence[str] | None, quick: bool) -> tuple[list[BenchBackend], dict[str, str]]:
    """The minicv devices to time (those present, or those asked for) and notes on those left out."""
    notes: dict[str, str] = {}
    if device is not None:
        names = list(dict.fromkeys(canonical_name(d) for d in ([device] if isinstance(device, str) else device)))
        if "cudasim" in names and not quick:
            raise SystemExit(f"minicv bench: {CUDASIM_NEEDS_QUICK}")
    else:
        names = ["numpy", "numba", "cuda"] + (["cudasim"] if quick else [])
        if not quick:
            notes["cudasim"] = "left out (CUDA threads as CPU fibers: run with --quick)"
    backends = []
    for name in names:
        backend = minicv_backend(name)
        if backend is None:
            notes[name] = "not present on this machine"
            if device is not None:
                raise SystemExit(f"minicv bench: device {name!r} is not available here")
            continue
        if backend.note:
            notes[name] = backend.note
        backends.append(backend)
    return backends, notes


@dataclass
class Setup:
    """What one process times: its backends, the cases and their jobs, and how long to time each."""

    backends: list[BenchBackend]
    torches: list[BenchBackend]
    notes: dict[str, str]
    cases: list[BenchCase]
    jobs: list[Job]
    plan: Plan


def setup(device: str | Sequence[str] | None, op: str | None, quick: bool) -> Setup:
    """The backends, cases and jobs of a run (``op``: one of SELECTIONS, or None for all but the cold start
    of a quick run)."""
    from minicv.bench_train import TrainStepProblem, train_cases

    if op is not None and op not in SELECTIONS:
        raise SystemExit(f"minicv bench: unknown op {op!r}; expected one of {', '.join(SELECTIONS)}")
    backends, notes = select_backends(device, quick)
    torches = [t for t in torch_backends() if any(baseline_of(b) == t.name for b in backends)]
    if not torches:
        notes["torch"] = "PyTorch is not installed: no baseline, no ratios"
    gpu = any(b.on_gpu for b in backends)
    stepped = any(b.name in TrainStepProblem.devices for b in backends)  # a device that runs the training steps
    cases = issue_cases(quick) + (gpu_cases() if gpu and not quick else []) + sweep_cases(quick, gpu) \
        + (train_cases(quick) if stepped else [])
    cases = [c for c in cases if op is None or c.problem.op == op]
    return Setup(backends, torches, notes, cases, plan_jobs(cases, backends + torches),
                 QUICK_PLAN if quick else FULL_PLAN)


def time_jobs(jobs: list[Job], plan: Plan, seed: int, isa: str, rows: list[dict],
              on_row: Callable[[], None] = lambda: None) -> None:
    """Time each job in this process, appending its row to ``rows`` (then calling ``on_row``)."""
    from tqdm import tqdm

    arrays, arrays_of = {}, None
    with tqdm(jobs, desc=f"minicv bench ({isa})", unit="case") as progress:
        for job in progress:
            problem = job.case.problem
            progress.set_postfix_str(f"{problem.label} {job.case.passes} {job.backend.name} {job.path}",
                                     refresh=False)
            if problem != arrays_of:  # jobs come case by case: one problem's inputs are held at a time
                arrays, arrays_of = {}, problem  # (the previous ones freed before the next are made)
                arrays = problem.arrays(np.random.default_rng(seed), np.float32)
            rows.append(job.run(plan, arrays, isa))
            on_row()


def time_isa(isa: str, device: str | Sequence[str] | None, op: str | None, quick: bool, seed: int,
             malloc: str) -> list[dict]:
    """The rows of a run's jobs, timed in this process (a child running ``isa``'s code)."""
    if malloc == "reuse":
        reuse_freed_memory()
    run = setup(device, op, quick)
    rows: list[dict] = []
    time_jobs(run.jobs, run.plan, seed, isa, rows)
    return rows


def run_bench(out: Path, device: str | Sequence[str] | None = None, op: str | None = None, quick: bool = False,
              seed: int = 0, malloc: str = "reuse", isa: str | Sequence[str] = "native") -> dict:
    """Time the cases, write ``<out>/<machine>[-quick].json``, ``.md`` and ``.png``; return the results.

    ``malloc="reuse"`` makes the process keep freed memory (``reuse_freed_memory``) for the rest of its
    life; ``"system"`` leaves glibc's default. ``isa``: "native" (this process), "avx2" (a child process
    running AVX2 code, minicv.bench_isa), or both ("native,avx2"); every row names its ISA.
    """
    from minicv import bench_isa

    isas = bench_isa.parse_isas(isa)
    if malloc not in MALLOC_CHOICES:
        raise SystemExit(f"minicv bench: unknown malloc {malloc!r}; expected one of {', '.join(MALLOC_CHOICES)}")
    missing = [name for name in isas if not bench_isa.host_has(name)]
    if missing:
        raise SystemExit(f"minicv bench: --isa {','.join(missing)}: this CPU has no {', '.join(missing).upper()}")
    run = setup(device, op, quick)
    if malloc == "reuse" and not reuse_freed_memory():
        malloc = "system"
    cold = any(b.name == "numba" for b in run.backends) and (op == "cold_start" or (op is None and not quick))
    copy_gbps = {}
    for b in run.backends:
        copy_gbps.setdefault("gpu" if b.on_gpu else "cpu", copy_bandwidth(b, run.plan, 2**24 if quick else 2**28))
    evidence: dict[str, dict] = {}

    def results_of(info: dict, rows: list[dict]) -> dict:
        return {"machine": info, "quick": quick, "seed": seed, "malloc": malloc, "plan": run.plan.__dict__,
                "notes": run.notes, "copy_bandwidth_gbps": copy_gbps, "isa": evidence, "results": rows}

    info = machine_info(run.backends + run.torches)
    if any(b.name == "numba" for b in run.backends):
        print(f"minicv bench: {numba_code(info)}")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (machine_slug(info) + ("-quick" if quick else ""))
    # The rows so far, rewritten after each one: a run cut short (a time limit, Ctrl-C) keeps them.
    partial = stem.with_suffix(".partial.json")
    rows: list[dict] = []

    def save_partial() -> None:
        partial.write_text(json.dumps(results_of(info, rows), indent=1) + "\n")

    options = dict(device=device, op=op, quick=quick, seed=seed, malloc=malloc)
    for name in isas:
        if name == "native":
            if len(isas) > 1:  # the evidence beside the other ISA's (it compiles one kernel afresh)
                evidence[name] = bench_isa.isa_evidence(name)
            time_jobs(run.jobs, run.plan, seed, name, rows, save_partial)
        else:
            child = bench_isa.run_child(name, options)
            evidence[name] = child["evidence"]
            rows += child["rows"]
            save_partial()
    for name in isas if cold else ():
        print(f"minicv bench: cold start ({name}): a fresh process compiling every kernel the demo uses...")
        rows.append(bench_isa.cold_start(name))
        save_partial()
    add_ratios(rows, copy_gbps)
    if not quick:  # the targets are for the issue's sizes: a quick run's tiny ones would "miss" them
        judge_targets(rows, run.cases)

    results = results_of(machine_info(run.backends + run.torches), rows)  # the load average at the end
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    stem.with_suffix(".md").write_text(markdown(results))
    plot(results, stem.with_suffix(".png"))
    results["files"] = [str(stem.with_suffix(s)) for s in (".json", ".md", ".png")]
    print(f"minicv bench: wrote {', '.join(results['files'])}")
    return results


def add_options(parser: Any) -> None:
    """The options ``minicv bench`` and ``python -m benchmarks`` share beyond their first ones."""
    from minicv.models import TASKS

    parser.add_argument("--isa", default="native",
                        help="native (this process), avx2 (a child process running AVX2 code in numba and "
                             "PyTorch), or native,avx2 for both side by side (default: native)")
    parser.add_argument("--breakdown", default=None, choices=list(TASKS), metavar="MODEL",
                        help="instead of the benchmark, time one training step of MODEL (e.g. segnet) kernel by "
                             "kernel and op by op, on numba; print it and write <out>/<machine>-breakdown-MODEL.md")


def run_from_args(args: Any) -> dict:
    """What the parsed options of either command ask for: the benchmark, or a step's breakdown."""
    if args.breakdown is None:
        return run_bench(Path(args.out), device=args.device, op=args.op, quick=args.quick, seed=args.seed,
                         malloc=args.malloc, isa=args.isa)
    from minicv.bench_train import QUICK_TRAIN_SIZES, breakdown, breakdown_markdown

    n, hw = QUICK_TRAIN_SIZES[0] if args.quick else (8, 128)
    result = breakdown(args.breakdown, n=n, hw=hw, seed=args.seed)
    info = machine_info([])
    table = breakdown_markdown(result, info)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{machine_slug(info)}-breakdown-{args.breakdown}{'-quick' if args.quick else ''}.md"
    path.write_text(table)
    print(table + f"\nminicv bench: wrote {path}")
    return {**result, "files": [str(path)]}

