"""The cases a learner's kernels are graded on, written as calls of the functional ops.

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
from minicv.kernels import KERNEL_TABLE
from minicv.tensor import Tensor

Inputs = tuple[list[np.ndarray], dict[str, np.ndarray]]  # (differentiable inputs, fixed inputs)


@dataclass(frozen=True)
class OpCase:
    """A functional op on inputs: ``op(F, *inputs, **fixed)`` works for minicv and for PyTorch alike."""

    label: str
    make: Callable[[np.random.Generator], Inputs]
    op: Callable[..., Any]
    dtype: str = "float32"
    smooth: bool = True  # differentiable at its inputs (no ties, no repeated unpool index): gradcheck applies
    timing: bool = False  # the larger case the kernels are timed on, graded on nothing else


@dataclass
class KernelCall:
    """One call of a kernel by the engine, its arguments kept (copied) for replaying."""

    kernel: str
    case: OpCase | None  # None when recorded outside the grading cases (a model's forward, say)
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def graded(self) -> OpCase:
        """The grading case of a call that ``record`` recorded (every call the grader replays)."""
        if self.case is None:
            raise ValueError(f"a call of {self.kernel} recorded outside the grading cases")
        return self.case

    def copied(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return copy.deepcopy(self.args), copy.deepcopy(self.kwargs)


def _distinct(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Values without ties (a shuffled ramp): max pooling is differentiable at them."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) / size - 0.5) * 4


def _ties(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Small integers: many windows hold their maximum twice (the first in scan order must win)."""
    return rng.integers(0, 3, shape).astype(np.float64)


def _normal(*shapes: tuple[int, ...]) -> Callable[[np.random.Generator], Inputs]:
    return lambda rng: ([rng.standard_normal(s) for s in shapes], {})


def _labels(rng: np.random.Generator, n: int, classes: int, *pixels: int, ignore: int = -100) -> np.ndarray:
    target = rng.integers(0, classes, (n, *pixels))
    target.reshape(n, -1)[0, :2] = ignore  # the first two pixels carry no label
    return target


def _logits(scale: float, shape: tuple[int, ...], ignore: int = -100, weighted: bool = False):
    def make(rng: np.random.Generator) -> Inputs:
        fixed = {"target": _labels(rng, shape[0], shape[1], *shape[2:], ignore=ignore)}
        if weighted:
            fixed["weight"] = rng.uniform(0.5, 2.0, shape[1])
        return [rng.standard_normal(shape) * scale], fixed

    return make


def _pool_unpool(f: ModuleType, x: Any) -> Any:
    """SegNet's pair: pool 2x2 on a 7x7 plane (the last row is dropped), unpool back to 7x7."""
    y, indices = f.max_pool2d(x, 2, return_indices=True)
    return f.max_unpool2d(y * 1.5, indices, 2, output_size=(7, 7))


def _drawn_conv(rng: np.random.Generator) -> Inputs:
    return [rng.standard_normal((2, 4, 6, 7)), rng.standard_normal((6, 2, 2, 3))], {}


def _batch_norm_inputs(shape: tuple[int, ...], running: bool = False):
    """x (offset and scaled, as activations are), weight and bias; running statistics as fixed inputs."""
    def make(rng: np.random.Generator) -> Inputs:
        c = shape[1]
        fixed = {"running_mean": rng.standard_normal(c), "running_var": rng.uniform(0.5, 2.0, c)} if running else {}
        return [rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c), rng.standard_normal(c)], fixed

    return make


CASES: tuple[OpCase, ...] = (
    # cross-entropy
    OpCase("cross_entropy (2, 4, 3, 3) with ignored pixels", _logits(1.0, (2, 4, 3, 3)),
           lambda f, x, target: f.cross_entropy(x, target)),
    OpCase("cross_entropy with class weights and ignore_index=2", _logits(1.0, (2, 3, 5), ignore=2, weighted=True),
           lambda f, x, target, weight: f.cross_entropy(x, target, weight=weight, ignore_index=2), dtype="float64"),
    OpCase("cross_entropy with label_smoothing=0.2", _logits(2.0, (3, 5), weighted=True),
           lambda f, x, target, weight: f.cross_entropy(x, target, weight=weight, label_smoothing=0.2)),
    OpCase("cross_entropy of large logits (scale 1000)", _logits(1000.0, (2, 3, 4)),
           lambda f, x, target: f.cross_entropy(x, target)),
    # max pooling and unpooling
    OpCase("max_pool2d 2x2 stride 2", lambda rng: ([_distinct(rng, 1, 2, 4, 4)], {}),
           lambda f, x: f.max_pool2d(x, 2)),
    OpCase("max_pool2d 3x3 stride 2 padding 1 ceil_mode", lambda rng: ([_distinct(rng, 2, 2, 8, 6)], {}),
           lambda f, x: f.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)),
    OpCase("max_pool2d 3x3 stride 1 (overlapping windows)", lambda rng: ([_distinct(rng, 1, 2, 5, 5)], {}),
           lambda f, x: f.max_pool2d(x, 3, stride=1)),
    OpCase("max_pool2d 2x3 stride (1, 2) dilation 2 padding 1", lambda rng: ([_distinct(rng, 1, 3, 7, 8)], {}),
           lambda f, x: f.max_pool2d(x, (2, 3), stride=(1, 2), padding=1, dilation=2)),
    OpCase("max_pool2d 2x2 stride 1 with ties", lambda rng: ([_ties(rng, 2, 2, 5, 5)], {}),
           lambda f, x: f.max_pool2d(x, 2, stride=1), smooth=False),
    OpCase("max_pool2d 2x2, max_unpool2d with output_size 7x7", lambda rng: ([_distinct(rng, 2, 2, 7, 7)], {}),
           _pool_unpool),
    OpCase("max_unpool2d with repeated indices (of a 3x3 stride-1 pool)",
           lambda rng: ([_distinct(rng, 1, 2, 5, 5)], {}),
           lambda f, x: f.max_unpool2d(*f.max_pool2d(x, 3, stride=1, return_indices=True), 3, stride=1,
                                       output_size=(5, 5)), smooth=False),
    # nearest upsampling
    OpCase("interpolate nearest 3x4 -> 7x9", _normal((2, 2, 3, 4)),
           lambda f, x: f.interpolate(x, size=(7, 9), mode="nearest")),
    OpCase("interpolate nearest-exact scale 2", _normal((1, 3, 2, 3)),
           lambda f, x: f.interpolate(x, scale_factor=2, mode="nearest-exact")),
    OpCase("interpolate nearest 6x5 -> 4x3 (downsampling)", _normal((2, 1, 6, 5)),
           lambda f, x: f.interpolate(x, size=(4, 3), mode="nearest"), dtype="float64"),
    # convolution
    OpCase("conv2d 3x3 padding 1", _normal((2, 3, 5, 4), (4, 3, 3, 3)),
           lambda f, x, w: f.conv2d(x, w, padding=1)),
    OpCase("conv2d 1x1", _normal((1, 5, 3, 3), (2, 5, 1, 1)), lambda f, x, w: f.conv2d(x, w), dtype="float64"),
    OpCase("conv2d drawn: stride (2, 1) padding (1, 2) dilation (1, 2) groups 2", _drawn_conv,
           lambda f, x, w: f.conv2d(x, w, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    OpCase("conv_transpose2d 2x2 -> 4x4 (kernel 4, stride 2, padding 1)", _normal((1, 2, 2, 2), (2, 3, 4, 4)),
           lambda f, x, w: f.conv_transpose2d(x, w, stride=2, padding=1)),
    OpCase("conv_transpose2d 3x3 stride 2 output_padding 1", _normal((2, 2, 3, 3), (2, 2, 3, 3)),
           lambda f, x, w: f.conv_transpose2d(x, w, stride=2, output_padding=1)),
    # batch norm
    OpCase("batch_norm training (2, 3, 4, 4)", _batch_norm_inputs((2, 3, 4, 4)),
           lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True)),
    OpCase("batch_norm training (5, 2), one value per channel and image", _batch_norm_inputs((5, 2)),
           lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True, eps=0.1), dtype="float64"),
    OpCase("batch_norm eval with running statistics", _batch_norm_inputs((2, 3, 3, 5), running=True),
           lambda f, x, w, b, running_mean, running_var: f.batch_norm(x, running_mean, running_var, w, b)),
    # timing only
    OpCase("timing: cross_entropy (8, 10, 32, 32)", _logits(1.0, (8, 10, 32, 32)),
           lambda f, x, target: f.cross_entropy(x, target), timing=True),
    OpCase("timing: max_pool2d 2x2 then max_unpool2d, (8, 16, 32, 32)",
           lambda rng: ([_distinct(rng, 8, 16, 32, 32)], {}),
           lambda f, x: f.max_unpool2d(*f.max_pool2d(x, 2, return_indices=True), 2), timing=True),
    OpCase("timing: interpolate nearest x2, (8, 16, 16, 16)", _normal((8, 16, 16, 16)),
           lambda f, x: f.interpolate(x, scale_factor=2), timing=True),
    OpCase("timing: conv2d 3x3, (4, 16, 32, 32)", _normal((4, 16, 32, 32), (16, 16, 3, 3)),
           lambda f, x, w: f.conv2d(x, w, padding=1), timing=True),
    OpCase("timing: batch_norm training, (8, 16, 32, 32)", _batch_norm_inputs((8, 16, 32, 32)),
           lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True), timing=True),
)


def inputs(case: OpCase, seed: int = 0) -> Inputs:
    """The case's arrays, the floating ones in its dtype (every case draws from its own seed)."""
    arrays, fixed = case.make(np.random.default_rng(seed))
    fixed = {k: v.astype(case.dtype) if v.dtype.kind == "f" else v for k, v in fixed.items()}
    return [a.astype(case.dtype) for a in arrays], fixed


def run_op(case: OpCase, device: Device | str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The op forward and backward (with fixed random output weights) on ``device``: (output, grads)."""
    arrays, fixed = inputs(case)
    tensors = [Tensor(a, requires_grad=True, device=device) for a in arrays]
    out = case.op(_functional(), *tensors, **{k: Tensor(v, device=device) for k, v in fixed.items()})
    weights = np.random.default_rng(1).standard_normal(out.shape).astype(case.dtype)
    (out * Tensor(weights, device=device)).sum().backward()
    grads = [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(tensors, arrays)]
    return out.detach().numpy(), grads  # None: the input did not reach the output, a zero gradient


def run_torch(case: OpCase) -> tuple[np.ndarray, list[np.ndarray]]:
    """The same in PyTorch, in float64 (the grader's oracle)."""
    import torch
    import torch.nn.functional as TF

    arrays, fixed = inputs(case)
    tensors = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    fixed_tensors = {k: torch.tensor(v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in fixed.items()}
    out = case.op(TF, *tensors, **fixed_tensors)
    weights = np.random.default_rng(1).standard_normal(tuple(out.shape)).astype(case.dtype)
    (out * torch.tensor(weights.astype(np.float64))).sum().backward()
    grads = [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(tensors, arrays)]
    return out.detach().numpy(), grads  # None: the input did not reach the output, a zero gradient


def _functional() -> ModuleType:
    import minicv.functional as F

    return F


class Recorder:
    """A kernel table that runs the spec and keeps a copy of every call's arguments."""

    def __init__(self, spec: Any, case: OpCase | None, calls: list[KernelCall]):
        for name in KERNEL_TABLE:
            setattr(self, name, self._recording(name, getattr(spec, name), case, calls))

    @staticmethod
    def _recording(name: str, kernel: Callable[..., Any], case: OpCase | None, calls: list[KernelCall]):
        def recorded(*args: Any, **kwargs: Any) -> Any:
            calls.append(KernelCall(name, case, copy.deepcopy(args), copy.deepcopy(kwargs)))
            return kernel(*args, **kwargs)

        return recorded


def record(spec: Any, cases: tuple[OpCase, ...] = CASES) -> list[KernelCall]:
    """Every kernel call the engine makes running ``cases`` forward and backward on the spec."""
    calls: list[KernelCall] = []
    for case in cases:
        run_op(case, Device("spec", np, Recorder(spec, case, calls)))
    return calls
