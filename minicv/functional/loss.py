"""Losses: per-pixel softmax cross-entropy on the kernels; smooth L1, L1 and MSE on the array module.

cross_entropy with class-index targets runs the ``softmax_cross_entropy`` kernels on logits reshaped
to (N, C, P) (P = pixels, 1 for plain classification): the kernels give each pixel's loss, the
reduction is applied here, and its derivative is folded into the per-pixel upstream gradient g that
the backward kernel takes. Probability targets (input.shape == target.shape) are a composition of
differentiable xp ops (log_softmax, multiply, sum), not a kernel.

Shapes, checks, messages and the degenerate cases (every target ignored: NaN loss and zero gradient)
follow PyTorch 2.13 (ATen ``LossNLL.cpp``, ``torch.nn.functional``), in PyTorch's order.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from minicv.autograd import Array, Function
from minicv.errors import ArgumentError, DtypeError, OutOfRangeError
from minicv.functional import basic
from minicv.functional._checks import check_float_tensor, contiguous, torch_dtype_name
from minicv.functional.basic import _unbroadcast
from minicv.tensor import Tensor

REDUCTIONS = ("none", "mean", "sum")


def _legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """PyTorch's _Reduction.legacy_get_string: the deprecated size_average/reduce override ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
                  UserWarning, stacklevel=4)
    return reduction


def _checked_reduction(op: str, reduction: str) -> str:
    """PyTorch's _Reduction.get_enum: one of 'none', 'mean', 'sum' ('elementwise_mean' is a deprecated 'mean')."""
    if reduction == "elementwise_mean":
        warnings.warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
                      UserWarning, stacklevel=4)
        return "mean"
    if reduction not in REDUCTIONS:
        raise ArgumentError(f"{op}: {reduction} is not a valid value for reduction")
    return reduction


def _divide(a: Any, b: Any) -> Any:
    """a / b where 0 / 0 is meant to give NaN (PyTorch's mean over nothing), without NumPy's warning."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


# --------------------------------------------------------------------------- cross entropy (class indices)
class SoftmaxCrossEntropyFunction(Function):
    """loss = reduce(per-pixel softmax cross-entropy of logits (N, C, P) against targets (N, P)).

    'mean' divides by the summed weight of the non-ignored targets (NaN when there are none, with a
    zero gradient, as PyTorch). target, weight and the output shape are fixed in __init__.
    """

    def __init__(self, target: Any, weight: Any, ignore_index: int, label_smoothing: float, reduction: str,
                 out_shape: tuple[int, ...], uniform_weight: bool):
        self.target, self.weight, self.uniform_weight = target, weight, uniform_weight
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.reduction, self.out_shape = reduction, out_shape

    def forward(self, x: Array) -> Array:
        xp, t = self.xp, self.target
        self.x_shape = x.shape
        n, c = x.shape[0], x.shape[1]
        self.x = x.reshape(n, c, t.shape[1])
        self.x = contiguous(self.x)
        # Nothing to launch for an empty batch or image, or no classes (every target then is ignored).
        self.empty = self.x.size == 0
        if self.empty:
            _check_target_range(t, self.ignore_index, c)  # no kernel runs to check them
            loss = xp.zeros(t.shape, dtype=x.dtype)
        else:
            try:  # every kernel checks every target as it goes: no second pass over them here
                loss, self.stats = self.kernels.softmax_cross_entropy_forward(
                    self.x, t, self.weight, self.ignore_index, self.label_smoothing)
            except IndexError as err:
                raise OutOfRangeError(f"cross_entropy: {err}") from err
        if self.reduction == "none":
            return loss.reshape(self.out_shape)
        if self.reduction == "sum":
            return loss.sum()
        # The summed weight of the non-ignored targets (with no class, every target is ignored).
        valid = t != self.ignore_index
        if c == 0:
            self.total_weight = xp.zeros((), dtype=x.dtype)
        elif self.uniform_weight:
            self.total_weight = xp.count_nonzero(valid).astype(x.dtype)
        else:
            self.total_weight = (self.weight[xp.where(valid, t, 0)] * valid).sum()
        return _divide(loss.sum(), self.total_weight).astype(x.dtype)  # 0 / 0: NaN, as PyTorch

    def backward(self, gy: Array) -> Array:
        xp = self.xp
        if self.empty:
            return xp.zeros(self.x_shape, dtype=gy.dtype)
        if self.reduction == "none":
            g = gy.reshape(self.target.shape)
        elif self.reduction == "sum":
            g = xp.broadcast_to(gy, self.target.shape)
        else:
            g = xp.broadcast_to(_divide(gy, self.total_weight), self.target.shape)
        # Every kernel gives an ignored pixel exactly zero whatever g holds there (the inf of an
        # all-ignored mean included), so g goes as it is.
        g = xp.ascontiguousarray(g, dtype=self.x.dtype)
        gx = self.kernels.softmax_cross_entropy_backward(
            self.x, self.target, self.weight, self.ignore_index, self.label_smoothing, self.stats, g)
        return gx.reshape(self.x_shape)


def _check_weight(weight: Tensor | None, input: Tensor, classes: int, message: str,  # noqa: A002
                  need_1d: bool) -> None:
    if weight is None:
        return
    if not isinstance(weight, Tensor):
        raise TypeError(f"cross_entropy(): argument 'weight' must be a Tensor, but got {type(weight).__name__}")
    if weight.size != classes or (need_1d and weight.ndim != 1):
        raise ArgumentError(f"cross_entropy: {message.format(classes=classes, shape=list(weight.shape))}")


def _check_weight_dtype(weight: Tensor | None, input: Tensor) -> None:  # noqa: A002
    if weight is not None and weight.dtype != input.dtype:
        raise DtypeError(
            f"cross_entropy: expected weight of dtype {input.dtype} like input, but got {weight.dtype} "
            f"(expected scalar type {torch_dtype_name(input.dtype)} but found {torch_dtype_name(weight.dtype)})"
        )


def _check_class_target(input: Tensor, target: Tensor, weight: Tensor | None) -> None:  # noqa: A002
    """nll_loss_nd's checks for class-index targets, in PyTorch's order for each input rank."""
    classes = input.shape[0] if input.ndim == 1 else input.shape[1]
    target_batch = target.shape[0] if target.ndim else 0
    if input.ndim != 1 and input.shape[0] != target_batch:
        raise ArgumentError(
            f"cross_entropy: Expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({target_batch})."
        )
    small_ok = target.dtype in (np.int64, np.uint8)  # nll_loss (1-D/2-D input) also takes uint8
    if input.ndim <= 2:
        if target.ndim > 1:
            raise ArgumentError("cross_entropy: 0D or 1D target tensor expected, multi-target not supported")
        if input.ndim == 1 and target.ndim == 1 and target.size != 1:
            raise ArgumentError(
                f"cross_entropy: For 1D input, 1D target must have size 1, but got target size: {target.size}"
            )
        _check_target_dtype(target, small_ok)
        _check_weight(weight, input, classes, "weight tensor should be defined either for all {classes} classes "
                      "or no classes but got weight tensor of shape: {shape}", need_1d=True)
    else:
        if input.ndim == 4 and target.ndim != 3:
            raise ArgumentError(
                "cross_entropy: only batches of spatial targets supported (3D tensors) but got targets of "
                f"dimension: {target.ndim}"
            )
        if input.ndim != 4 and target.shape[1:] != input.shape[2:]:
            raise ArgumentError(
                f"cross_entropy: Expected target size {[input.shape[0], *input.shape[2:]]}, got {list(target.shape)}"
            )
        _check_target_dtype(target, small_ok)
        _check_weight(weight, input, classes, "weight tensor should be defined either for all or no classes",
                      need_1d=False)
        if target.shape[1:] != input.shape[2:]:
            raise ArgumentError(f"cross_entropy: size mismatch (got input: {list(input.shape)} , target: "
                                f"{list(target.shape)}")
        if target.dtype != np.int64:  # the spatial kernel takes int64 only
            raise DtypeError(f"cross_entropy: expected scalar type Long but found {torch_dtype_name(target.dtype)}")
    _check_weight_dtype(weight, input)


def _check_target_dtype(target: Tensor, ok: bool) -> None:
    if not ok:
        raise DtypeError(
            f"cross_entropy: expected target dtype to be Long or Byte, but got {torch_dtype_name(target.dtype)}"
        )


def _check_target_range(target: Any, ignore_index: int, classes: int) -> None:
    """Every target but ignore_index must be a class: raise naming the first (row-major) that is not."""
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bool(bad.any()):
        raise OutOfRangeError(f"cross_entropy: Target {int(target[bad][0])} is out of bounds.")


def _class_index_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None,  # noqa: A002
                               ignore_index: int, reduction: str, label_smoothing: float) -> Tensor:
    xp = input.device.xp
    classes = input.shape[0] if input.ndim == 1 else input.shape[1]
    t = target.data.astype(np.int64, copy=False)
    out_shape: tuple[int, ...]
    if input.ndim == 1:  # unbatched (C,): one sample of one pixel
        x, t, out_shape = basic.reshape(input, 1, classes, 1), t.reshape(1, 1), ()
    else:
        x, out_shape = input, (input.shape[0], *input.shape[2:])
        t = t.reshape(input.shape[0], int(np.prod(input.shape[2:])))
    w = xp.ones(classes, dtype=input.dtype) if weight is None else weight.data.reshape(classes)
    eps = max(float(label_smoothing), 0.0)  # PyTorch ignores a negative label_smoothing
    return SoftmaxCrossEntropyFunction(t, w, int(ignore_index), eps, reduction, out_shape, weight is None).apply(x)


# --------------------------------------------------------------------------- cross entropy (probabilities)
def _probability_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None,  # noqa: A002
                               reduction: str, label_smoothing: float) -> Tensor:
    """-sum_c w[c] * log_softmax(x)[c] * target'[c], target' = target * (1 - eps) + eps / C.

    Composed of differentiable xp ops (not a kernel); 'mean' divides by the number of samples/pixels
    (numel / C), not by a weight sum. Gradients reach both input and target. Input, target and weight
    may mix float32 and float64: the loss is then float64, as PyTorch promotes.
    """
    class_dim = 0 if input.ndim == 1 else 1
    classes = input.shape[class_dim]
    _check_weight(weight, input, classes, "weight tensor should be defined either for all {classes} classes or "
                  "no classes but got weight tensor of shape: {shape}", need_1d=True)
    if weight is not None:
        check_float_tensor("cross_entropy", "weight", weight)  # float32 with float64 promotes, as in PyTorch
    if label_smoothing > 1.0:
        raise ArgumentError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    log_p = basic.log_softmax(input, class_dim)
    if label_smoothing > 0.0:
        target = target * (1 - label_smoothing) + label_smoothing / classes
    terms = log_p * target
    if weight is not None:
        terms = terms * basic.reshape(weight, [classes if d == class_dim else 1 for d in range(input.ndim)])
    if reduction == "none":
        return -basic.sum(terms, class_dim)
    total = -basic.sum(terms)
    if reduction == "sum":
        return total
    if input.size == 0:
        return total * float("nan")
    return total / (input.size // classes)


def cross_entropy(
    input: Tensor,  # noqa: A002 (PyTorch's name)
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy between logits and targets, as ``torch.nn.functional.cross_entropy``.

    input: (C,), (N, C), (N, C, H, W) or (N, C, d1, ..., dk) logits; target: class indices of the
    input's shape without C (int64), or class probabilities of the input's shape. ``weight`` (C,)
    rescales each class; targets equal to ``ignore_index`` contribute nothing; 'mean' divides by the
    summed weight of the non-ignored targets. ``label_smoothing`` eps mixes in the uniform
    distribution: (1 - eps) * nll + eps / C * sum_c w[c] * -log p[c] (a negative eps is ignored).
    """
    check_float_tensor("cross_entropy", "input", input)
    if not isinstance(target, Tensor):
        raise TypeError(f"cross_entropy(): argument 'target' must be a Tensor, but got {type(target).__name__}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"cross_entropy(): argument 'ignore_index' must be int, not {type(ignore_index).__name__}")
    reduction = _checked_reduction("cross_entropy", _legacy_reduction(size_average, reduce, reduction))
    if target.device.name != input.device.name or (weight is not None and weight.device.name != input.device.name):
        raise ArgumentError("cross_entropy: expected input, target and weight on the same device")
    if input.ndim == 0:
        raise ArgumentError("cross_entropy: Expected 1 or more dimensions (got 0)")
    if input.shape == target.shape:
        if target.dtype.kind != "f":
            raise DtypeError(
                "cross_entropy: Expected floating point type for target with class probabilities, got "
                f"{torch_dtype_name(target.dtype)}"
            )
        if ignore_index >= 0:
            raise ArgumentError("cross_entropy: ignore_index is not supported for floating point target")
        return _probability_cross_entropy(input, target, weight, reduction, float(label_smoothing))
    if label_smoothing > 1.0:
        raise ArgumentError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    _check_class_target(input, target, weight)
    return _class_index_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)


# --------------------------------------------------------------------------- elementwise regression losses
class _ElementwiseLossFunction(Function):
    """loss = reduce(f(input - target)) with broadcasting; subclasses give f(z) and df/dz."""

    def __init__(self, reduction: str):
        self.reduction = reduction

    def f(self, z: Any) -> Any:
        raise NotImplementedError

    def df(self, z: Any) -> Any:
        raise NotImplementedError

    def forward(self, input: Array, target: Array) -> Array:  # noqa: A002
        self.shapes = input.shape, target.shape
        self.z = input - target
        loss = self.f(self.z)
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return _divide(loss.sum(), loss.size).astype(loss.dtype)

    def backward(self, gy: Array) -> tuple[Array, ...]:
        scale = gy if self.reduction != "mean" else _divide(gy, self.z.size).astype(gy.dtype)
        g = self.df(self.z) * scale
        return _unbroadcast(g, self.shapes[0]), _unbroadcast(-g, self.shapes[1])


class SmoothL1LossFunction(_ElementwiseLossFunction):
    """0.5 z^2 / beta for |z| < beta, |z| - 0.5 beta beyond (beta > 0)."""

    def __init__(self, reduction: str, beta: float):
        super().__init__(reduction)
        self.beta = beta

    def f(self, z: Array) -> Array:
        a = self.xp.abs(z)
        return self.xp.where(a < self.beta, 0.5 * z * z / self.beta, a - 0.5 * self.beta)

    def df(self, z: Array) -> Array:
        return self.xp.clip(z / self.beta, -1, 1)  # z / beta inside, sign(z) outside


class L1LossFunction(_ElementwiseLossFunction):
    def f(self, z: Array) -> Array:
        return self.xp.abs(z)

    def df(self, z: Array) -> Array:
        return self.xp.sign(z)


class MSELossFunction(_ElementwiseLossFunction):
    def f(self, z: Array) -> Array:
        return z * z

    def df(self, z: Array) -> Array:
        return 2 * z


def _broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy/PyTorch broadcasting, with PyTorch's message when the shapes do not broadcast."""
    ndim = max(len(a), len(b))
    a, b = (1,) * (ndim - len(a)) + a, (1,) * (ndim - len(b)) + b
    for dim, (m, n) in enumerate(zip(a, b, strict=True)):
        if m != n and 1 not in (m, n):
            raise ArgumentError(
                f"The size of tensor a ({m}) must match the size of tensor b ({n}) at non-singleton dimension {dim}"
            )
    return tuple(max(m, n) if 1 not in (m, n) else m * n for m, n in zip(a, b, strict=True))


def _check_pair(op: str, input: Tensor, target: Tensor) -> None:  # noqa: A002
    """Float tensors on one device (float32 with float64 computes in float64, as PyTorch promotes); warn, as
    PyTorch does, when their shapes differ."""
    check_float_tensor(op, "input", input)
    check_float_tensor(op, "target", target)
    if target.device.name != input.device.name:
        raise ArgumentError(f"{op}: expected input and target on the same device, but got {input.device.name} "
                            f"and {target.device.name}")
    if target.shape != input.shape:
        warnings.warn(
            f"Using a target size ({target.shape}) that is different to the input size ({input.shape}). This will "
            "likely lead to incorrect results due to broadcasting. Please ensure they have the same size.",
            UserWarning, stacklevel=4,
        )


def _weighted(op: str, errors: Tensor, input: Tensor, weight: Tensor, reduction: str) -> Tensor:  # noqa: A002
    """PyTorch's optional per-element weight: 'mean' is sum(w * loss) / sum(w) (composed of xp ops)."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"{op}(): argument 'weight' must be a Tensor, but got {type(weight).__name__}")
    if weight.shape != input.shape:
        raise ArgumentError(f"{op}: Weights and input must have the same size.")
    weighted = errors * weight
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return basic.sum(weighted)
    if reduction == "mean":
        return basic.sum(weighted) / basic.sum(weight)
    raise ArgumentError(f"{op}: Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'.")


def _elementwise_loss(op: str, make: Any, input: Tensor, target: Tensor,  # noqa: A002
                      size_average: bool | None, reduce: bool | None, reduction: str,
                      weight: Tensor | None = None, error: Any = None) -> Tensor:
    """The Python side PyTorch's l1/mse/smooth_l1 share: checks, broadcast, optional weight, then
    ``make(reduction)``, the Function (which may still reject its own arguments)."""
    _check_pair(op, input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _broadcast_shape(input.shape, target.shape)
    if weight is not None:
        return _weighted(op, error(input - target), input, weight, reduction)
    return make(_checked_reduction(op, reduction)).apply(input, target)


def l1_loss(
    input: Tensor,  # noqa: A002
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    """Mean (or sum, or none) of |input - target|, as ``torch.nn.functional.l1_loss``; with ``weight``
    (input's shape) 'mean' is sum(w * |z|) / sum(w)."""
    return _elementwise_loss("l1_loss", L1LossFunction, input, target, size_average, reduce, reduction, weight,
                             basic.abs)


def mse_loss(
    input: Tensor,  # noqa: A002
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    """Mean (or sum, or none) of (input - target)^2, as ``torch.nn.functional.mse_loss``; with ``weight``
    (input's shape) 'mean' is sum(w * z^2) / sum(w)."""
    return _elementwise_loss("mse_loss", MSELossFunction, input, target, size_average, reduce, reduction, weight,
                             lambda z: z * z)


def smooth_l1_loss(
    input: Tensor,  # noqa: A002
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    """Smooth L1 loss, as ``torch.nn.functional.smooth_l1_loss``: 0.5 z^2 / beta where |z| < beta,
    |z| - 0.5 beta elsewhere. beta = 0 is l1_loss (no 0 / 0); a negative beta is an error."""

    def make(reduction: str) -> Function:
        if beta == 0.0:
            return L1LossFunction(reduction)
        if beta < 0:
            raise ArgumentError(f"smooth_l1_loss does not support negative values for beta, but got beta={beta}.")
        return SmoothL1LossFunction(reduction, float(beta))

    return _elementwise_loss("smooth_l1_loss", make, input, target, size_average, reduce, reduction)
