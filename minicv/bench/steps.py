"""One run of a case on a backend through a path (``op``, ``kernels`` or ``torch``), as a no-argument
callable."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

import minicv
from minicv.tensor import Tensor

if TYPE_CHECKING:
    from minicv.bench.backends import BenchBackend
    from minicv.bench.cases import BenchCase


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
