"""The registry of ops: the one list that the devices, ``minicv check``, ``minicv bench`` and the exercises read.

An op is one entry of ``OPS``: its name (the function of ``minicv.functional``, and of
``torch.nn.functional`` where PyTorch has it), the kernels of the kernel table it runs on, the case
``minicv check`` runs, and the exercises' cases (graded on the small ones, timed on the one marked
``timing``; the benchmark times an op that has no hand-written problem on that one too). A case is a
call written once for both libraries: ``call(f, *inputs, **fixed)`` with ``f`` either module (a case
with ``torch=False`` is never handed PyTorch's).

The kernel table is the union of the ops' kernels (``kernel_table()``): every device must supply each
one (``minicv.devices`` refuses a device that lacks one), and each is documented in
``minicv.kernels``. Adding an op is its entry here, its kernels (one per device), its Function and its
layer: docs/adding_an_op.md walks through one. Kernels never import this module (they never import the
engine); the engine checks them against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

Inputs = tuple[list[np.ndarray], dict[str, np.ndarray]]  # (differentiable inputs, fixed inputs)


@dataclass(frozen=True)
class Case:
    """An op on small inputs: ``call(f, *inputs, **fixed)`` works for minicv.functional and PyTorch alike."""

    label: str
    make: Callable[[np.random.Generator], Inputs]
    call: Callable[..., Any]
    dtype: str = "float32"  # the exercises' dtype (``minicv check`` runs every case in float32 and float64)
    smooth: bool = True  # differentiable at its inputs (no ties, no repeated unpool index): gradcheck applies
    timing: bool = False  # the larger case the kernels are timed on, graded on nothing else
    torch: bool = True  # torch.nn.functional has the same call: check and the grader compare with PyTorch


@dataclass(frozen=True)
class Op:
    """One op: what it is called, which kernels it runs on, and the cases every tool derives from it."""

    name: str
    kernels: tuple[str, ...]  # its kernel-table entries, forward and backward
    check: Case  # ``minicv check``'s case: smooth, checked in both dtypes and gradient-checked
    cases: tuple[Case, ...] = ()  # the exercises' cases; one with ``timing`` is what the op is timed on

    def timing_case(self) -> Case | None:
        return next((c for c in self.cases if c.timing), None)


OPS: dict[str, Op] = {}


def register_op(op: Op) -> Op:
    """Add ``op`` to the registry (a name already there is an error: one entry per op)."""
    if op.name in OPS:
        raise ValueError(f"register_op: an op named {op.name!r} is already registered")
    if not op.kernels:
        raise ValueError(f"register_op: op {op.name!r} names no kernels")
    OPS[op.name] = op
    return op


def kernel_table() -> tuple[str, ...]:
    """Every kernel a device must supply: the registered ops' kernels, each once, in the registry's order."""
    return tuple(dict.fromkeys(k for op in OPS.values() for k in op.kernels))


# ---- inputs of the cases --------------------------------------------------------------------------------

def _distinct(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Values without ties (a shuffled ramp): max pooling is differentiable at them."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) / size - 0.5) * 4


def _ties(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Small integers: many windows hold their maximum twice (the first in scan order must win)."""
    return rng.integers(0, 3, shape).astype(np.float64)


def _normal(*shapes: tuple[int, ...]) -> Callable[[np.random.Generator], Inputs]:
    return lambda rng: ([rng.standard_normal(s) for s in shapes], {})


def _distinct_input(*shape: int) -> Callable[[np.random.Generator], Inputs]:
    return lambda rng: ([_distinct(rng, *shape)], {})


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
    """SegNet's pair: pool 2x2, unpool (the values scaled, so the gradient is not the pool's) to x's size."""
    y, indices = f.max_pool2d(x, 2, return_indices=True)
    return f.max_unpool2d(y * 1.5, indices, 2, output_size=tuple(x.shape[-2:]))


def _drawn_conv(rng: np.random.Generator) -> Inputs:
    return [rng.standard_normal((2, 4, 6, 7)), rng.standard_normal((6, 2, 2, 3))], {}


def _batch_norm_inputs(shape: tuple[int, ...], running: bool = False):
    """x (offset and scaled, as activations are), weight and bias; running statistics as fixed inputs."""
    def make(rng: np.random.Generator) -> Inputs:
        c = shape[1]
        fixed = {"running_mean": rng.standard_normal(c), "running_var": rng.uniform(0.5, 2.0, c)} if running else {}
        return [rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c), rng.standard_normal(c)], fixed

    return make


# ---- the ops, in the kernel table's order ---------------------------------------------------------------

CONV_KERNELS = ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight")

register_op(Op(
    "conv2d", CONV_KERNELS,
    check=Case("conv2d stride (2, 1) padding 1 dilation (1, 2) groups 2", _normal((2, 4, 7, 6), (6, 2, 3, 3)),
               lambda f, x, w: f.conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)),
    cases=(
        Case("conv2d 3x3 padding 1", _normal((2, 3, 5, 4), (4, 3, 3, 3)), lambda f, x, w: f.conv2d(x, w, padding=1)),
        Case("conv2d 1x1", _normal((1, 5, 3, 3), (2, 5, 1, 1)), lambda f, x, w: f.conv2d(x, w), dtype="float64"),
        Case("conv2d drawn: stride (2, 1) padding (1, 2) dilation (1, 2) groups 2", _drawn_conv,
             lambda f, x, w: f.conv2d(x, w, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
        Case("timing: conv2d 3x3, (4, 16, 32, 32)", _normal((4, 16, 32, 32), (16, 16, 3, 3)),
             lambda f, x, w: f.conv2d(x, w, padding=1), timing=True),
    ),
))
register_op(Op(
    "conv_transpose2d", CONV_KERNELS,  # its forward is conv2d's backward-input, and the other way round
    check=Case("conv_transpose2d stride 2 padding 1 output_padding 1", _normal((2, 4, 4, 5), (4, 3, 4, 4)),
               lambda f, x, w: f.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)),
    cases=(
        Case("conv_transpose2d 2x2 -> 4x4 (kernel 4, stride 2, padding 1)", _normal((1, 2, 2, 2), (2, 3, 4, 4)),
             lambda f, x, w: f.conv_transpose2d(x, w, stride=2, padding=1)),
        Case("conv_transpose2d 3x3 stride 2 output_padding 1", _normal((2, 2, 3, 3), (2, 2, 3, 3)),
             lambda f, x, w: f.conv_transpose2d(x, w, stride=2, output_padding=1)),
    ),
))
register_op(Op(
    "max_pool2d", ("max_pool2d_forward", "unpool_scatter"),  # the backward scatters the gradient back
    check=Case("max_pool2d 3x3 stride 2 padding 1 ceil_mode", _distinct_input(2, 3, 9, 8),
               lambda f, x: f.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)),
    cases=(
        Case("max_pool2d 2x2 stride 2", _distinct_input(1, 2, 4, 4), lambda f, x: f.max_pool2d(x, 2)),
        Case("max_pool2d 3x3 stride 2 padding 1 ceil_mode", _distinct_input(2, 2, 8, 6),
             lambda f, x: f.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)),
        Case("max_pool2d 3x3 stride 1 (overlapping windows)", _distinct_input(1, 2, 5, 5),
             lambda f, x: f.max_pool2d(x, 3, stride=1)),
        Case("max_pool2d 2x3 stride (1, 2) dilation 2 padding 1", _distinct_input(1, 3, 7, 8),
             lambda f, x: f.max_pool2d(x, (2, 3), stride=(1, 2), padding=1, dilation=2)),
        Case("max_pool2d 2x2 stride 1 with ties", lambda rng: ([_ties(rng, 2, 2, 5, 5)], {}),
             lambda f, x: f.max_pool2d(x, 2, stride=1), smooth=False),
    ),
))
register_op(Op(
    "max_unpool2d", ("unpool_scatter", "unpool_gather"),
    check=Case("max_pool2d 2x2, then max_unpool2d to the input's size", _distinct_input(2, 3, 8, 6), _pool_unpool),
    cases=(
        Case("max_pool2d 2x2, max_unpool2d with output_size 7x7", _distinct_input(2, 2, 7, 7), _pool_unpool),
        Case("max_unpool2d with repeated indices (of a 3x3 stride-1 pool)", _distinct_input(1, 2, 5, 5),
             lambda f, x: f.max_unpool2d(*f.max_pool2d(x, 3, stride=1, return_indices=True), 3, stride=1,
                                         output_size=(5, 5)), smooth=False),
        Case("timing: max_pool2d 2x2 then max_unpool2d, (8, 16, 32, 32)", _distinct_input(8, 16, 32, 32),
             lambda f, x: f.max_unpool2d(*f.max_pool2d(x, 2, return_indices=True), 2), timing=True),
    ),
))
register_op(Op(
    "interpolate", ("upsample_nearest_forward", "upsample_nearest_backward"),
    check=Case("interpolate nearest 5x4 -> 11x8", _normal((2, 3, 5, 4)),
               lambda f, x: f.interpolate(x, size=(11, 8), mode="nearest")),
    cases=(
        Case("interpolate nearest 3x4 -> 7x9", _normal((2, 2, 3, 4)),
             lambda f, x: f.interpolate(x, size=(7, 9), mode="nearest")),
        Case("interpolate nearest-exact scale 2", _normal((1, 3, 2, 3)),
             lambda f, x: f.interpolate(x, scale_factor=2, mode="nearest-exact")),
        Case("interpolate nearest 6x5 -> 4x3 (downsampling)", _normal((2, 1, 6, 5)),
             lambda f, x: f.interpolate(x, size=(4, 3), mode="nearest"), dtype="float64"),
        Case("timing: interpolate nearest x2, (8, 16, 16, 16)", _normal((8, 16, 16, 16)),
             lambda f, x: f.interpolate(x, scale_factor=2), timing=True),
    ),
))
register_op(Op(
    "cross_entropy", ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"),
    check=Case("cross_entropy (2, 5, 5, 6) with ignored pixels, label_smoothing 0.1", _logits(1.0, (2, 5, 5, 6)),
               lambda f, x, target: f.cross_entropy(x, target, label_smoothing=0.1)),
    cases=(
        Case("cross_entropy (2, 4, 3, 3) with ignored pixels", _logits(1.0, (2, 4, 3, 3)),
             lambda f, x, target: f.cross_entropy(x, target)),
        Case("cross_entropy with class weights and ignore_index=2", _logits(1.0, (2, 3, 5), ignore=2, weighted=True),
             lambda f, x, target, weight: f.cross_entropy(x, target, weight=weight, ignore_index=2), dtype="float64"),
        Case("cross_entropy with label_smoothing=0.2", _logits(2.0, (3, 5), weighted=True),
             lambda f, x, target, weight: f.cross_entropy(x, target, weight=weight, label_smoothing=0.2)),
        Case("cross_entropy of large logits (scale 1000)", _logits(1000.0, (2, 3, 4)),
             lambda f, x, target: f.cross_entropy(x, target)),
        Case("timing: cross_entropy (8, 10, 32, 32)", _logits(1.0, (8, 10, 32, 32)),
             lambda f, x, target: f.cross_entropy(x, target), timing=True),
    ),
))
register_op(Op(
    "batch_norm", ("batch_norm_forward", "batch_norm_backward"),
    check=Case("batch_norm training (3, 4, 5, 6)", _batch_norm_inputs((3, 4, 5, 6)),
               lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True)),
    cases=(
        Case("batch_norm training (2, 3, 4, 4)", _batch_norm_inputs((2, 3, 4, 4)),
             lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True)),
        Case("batch_norm training (5, 2), one value per channel and image", _batch_norm_inputs((5, 2)),
             lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True, eps=0.1), dtype="float64"),
        Case("batch_norm eval with running statistics", _batch_norm_inputs((2, 3, 3, 5), running=True),
             lambda f, x, w, b, running_mean, running_var: f.batch_norm(x, running_mean, running_var, w, b)),
        Case("timing: batch_norm training, (8, 16, 32, 32)", _batch_norm_inputs((8, 16, 32, 32)),
             lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True), timing=True),
    ),
))
register_op(Op(
    "batch_norm_relu", ("batch_norm_forward", "batch_norm_backward"),  # batch norm's kernels, relu set
    check=Case("batch_norm_relu training (3, 4, 5, 6)", _batch_norm_inputs((3, 4, 5, 6)),
               lambda f, x, w, b: f.batch_norm_relu(x, None, None, w, b, training=True), torch=False),
    cases=(
        Case("batch_norm_relu training (2, 3, 4, 4)", _batch_norm_inputs((2, 3, 4, 4)),
             lambda f, x, w, b: f.batch_norm_relu(x, None, None, w, b, training=True), torch=False),
        Case("batch_norm_relu eval with running statistics", _batch_norm_inputs((2, 3, 3, 5), running=True),
             lambda f, x, w, b, running_mean, running_var: f.batch_norm_relu(x, running_mean, running_var, w, b),
             torch=False),
        Case("timing: batch_norm_relu training, (8, 16, 32, 32)", _batch_norm_inputs((8, 16, 32, 32)),
             lambda f, x, w, b: f.batch_norm_relu(x, None, None, w, b, training=True), timing=True, torch=False),
    ),
))
