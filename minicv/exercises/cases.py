"""The cases a learner's kernels are graded on: every op's ``cases`` in the registry (minicv/ops.py).

Each case is a functional op on small inputs, the same call for minicv (``F``) and PyTorch
(``torch.nn.functional``). Running the cases once on the specification through a recording kernel
table gives every kernel's arguments exactly as the engine passes them (ceil_mode's out_hw, upsample's
source rows, cross-entropy's stats and upstream gradient), so a kernel is graded on what it will meet
inside a model. The same cases then run through the engine with one learner kernel swapped in, against
PyTorch and under gradcheck.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from minicv.devices import Device
from minicv.ops import OPS, Case, Inputs, kernel_table
from minicv.tensor import Tensor


@dataclass
class KernelCall:
    """One call of a kernel by the engine, its arguments kept (copied) for replaying."""

    kernel: str
    case: Case | None  # None when recorded outside the grading cases (a model's forward, say)
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def graded(self) -> Case:
        """The grading case of a call that ``record`` recorded (every call the grader replays)."""
        if self.case is None:
            raise ValueError(f"a call of {self.kernel} recorded outside the grading cases")
        return self.case

    def copied(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return copy.deepcopy(self.args), copy.deepcopy(self.kwargs)


def grading_cases() -> tuple[Case, ...]:
    """The registry's cases, op by op: graded on the small ones, timed on those marked ``timing``."""
    return tuple(case for op in OPS.values() for case in op.cases)


def inputs(case: Case, seed: int = 0) -> Inputs:
    """The case's arrays, the floating ones in its dtype (every case draws from its own seed)."""
    arrays, fixed = case.make(np.random.default_rng(seed))
    fixed = {k: v.astype(case.dtype) if v.dtype.kind == "f" else v for k, v in fixed.items()}
    return [a.astype(case.dtype) for a in arrays], fixed


def run_op(case: Case, device: Device | str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The op forward and backward (with fixed random output weights) on ``device``: (output, grads)."""
    arrays, fixed = inputs(case)
    tensors = [Tensor(a, requires_grad=True, device=device) for a in arrays]
    out = case.call(_functional(), *tensors, **{k: Tensor(v, device=device) for k, v in fixed.items()})
    weights = np.random.default_rng(1).standard_normal(out.shape).astype(case.dtype)
    (out * Tensor(weights, device=device)).sum().backward()
    grads = [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(tensors, arrays)]
    return out.detach().numpy(), grads  # None: the input did not reach the output, a zero gradient


def run_torch(case: Case) -> tuple[np.ndarray, list[np.ndarray]]:
    """The same in PyTorch, in float64 (the grader's oracle)."""
    import torch
    import torch.nn.functional as TF

    arrays, fixed = inputs(case)
    tensors = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    fixed_tensors = {k: torch.tensor(v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in fixed.items()}
    out = case.call(TF, *tensors, **fixed_tensors)
    weights = np.random.default_rng(1).standard_normal(tuple(out.shape)).astype(case.dtype)
    (out * torch.tensor(weights.astype(np.float64))).sum().backward()
    grads = [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(tensors, arrays)]
    return out.detach().numpy(), grads  # None: the input did not reach the output, a zero gradient


def _functional() -> ModuleType:
    import minicv.functional as F

    return F


class Recorder:
    """A kernel table that runs the spec and keeps a copy of every call's arguments."""

    def __init__(self, spec: Any, case: Case | None, calls: list[KernelCall]):
        for name in kernel_table():
            setattr(self, name, self._recording(name, getattr(spec, name), case, calls))

    @staticmethod
    def _recording(name: str, kernel: Callable[..., Any], case: Case | None, calls: list[KernelCall]):
        def recorded(*args: Any, **kwargs: Any) -> Any:
            calls.append(KernelCall(name, case, copy.deepcopy(args), copy.deepcopy(kwargs)))
            return kernel(*args, **kwargs)

        return recorded


def record(spec: Any, cases: tuple[Case, ...] | None = None) -> list[KernelCall]:
    """Every kernel call the engine makes running ``cases`` (every grading case) forward and backward on the spec."""
    calls: list[KernelCall] = []
    for case in grading_cases() if cases is None else cases:
        run_op(case, Device("spec", np, Recorder(spec, case, calls)))
    return calls
