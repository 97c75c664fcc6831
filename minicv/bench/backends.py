"""Backends: where a problem runs (a minicv device, or PyTorch on the CPU or the GPU) and how it is timed."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from minicv.bench.timing import event_time, perf_counter_time
from minicv.devices import get_device


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
            return perf_counter_time
        if self.is_torch:
            import torch

            return lambda fn: event_time(fn, lambda: torch.cuda.Event(enable_timing=True),
                                          lambda start, end: start.elapsed_time(end))
        cupy = self.xp
        return lambda fn: event_time(fn, cupy.cuda.Event, cupy.cuda.get_elapsed_time)

    def algorithm(self, name: str) -> contextlib.AbstractContextManager:
        """A context in which the kernels use conv algorithm ``name`` ('' for the device's only one)."""
        return self.kernels.conv_algorithm(name) if name else contextlib.nullcontext()


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
    names: Any = getattr(kernels, "ALGORITHMS", None)
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

