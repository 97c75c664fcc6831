"""The glue ops: arithmetic, shapes, reductions, linear, activations, softmax and batch norm.

These run on the device's array module (``xp``) directly; the seven ops of the lecture live in their
own files and run on the hand-written kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minicv import blas
from minicv.autograd import Array, Function
from minicv.devices import Device
from minicv.errors import ArgumentError, DtypeError, OutOfRangeError
from minicv.functional._checks import check_float_tensor, contiguous
from minicv.tensor import Tensor


def _unbroadcast(grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` over the axes along which an operand of ``shape`` was broadcast."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


_CATEGORIES = "biuf"  # bool < integers < floats, PyTorch's type categories


def _category(dtype: Any) -> int:
    kind = np.dtype(dtype).kind
    return 1 if kind == "u" else _CATEGORIES.index(kind)


def _promote(dtypes: list[Any]) -> np.dtype | None:
    """PyTorch's promotion within one priority group: the highest category wins, the widest type in it."""
    if not dtypes:
        return None
    top = max(_category(d) for d in dtypes)
    return np.result_type(*[d for d in dtypes if _category(d) == top])


def _result_dtype(a: Any, b: Any) -> np.dtype:
    """torch.result_type of a binary op: tensors with dimensions first, then 0-dim tensors, then Python
    numbers, a later group counting only when its category is higher (float32 + float64 0-dim tensor is
    float32; int32 + 2.5 is float32, the default float; int32 + float32 is float32, where NumPy gives float64)."""
    operands = (a, b)
    tensors = [t.dtype for t in operands if isinstance(t, Tensor) and t.ndim]
    zero_dim = [t.dtype for t in operands if isinstance(t, Tensor) and not t.ndim]
    numbers = [np.dtype(np.float32 if isinstance(v, float) else np.int64 if not isinstance(v, bool) else np.bool_)
               for v in operands if not isinstance(v, Tensor)]
    result = None
    for group in (tensors, zero_dim):
        dtype = _promote(group)
        if dtype is not None and (result is None or _category(dtype) > _category(result)):
            result = dtype
    assert result is not None, "_result_dtype: a or b is a Tensor"
    number = _promote(numbers)
    if number is not None and _category(number) > _category(result):
        result = number
    return result


def _operand(value: Any, like: Tensor, dtype: np.dtype) -> Any:
    """A Tensor or a number as an operand of ``dtype`` (differentiably for a Tensor of another dtype)."""
    if isinstance(value, Tensor):
        return value if value.dtype == dtype else to(value, value.device, dtype)
    return like.device.xp.asarray(value, dtype=dtype)


def _binary(fn: type[Function], a: Any, b: Any) -> Tensor:
    """fn on a and b cast to PyTorch's result dtype (an array operand is a Tensor with its dtype)."""
    like = a if isinstance(a, Tensor) else b
    a, b = (v if isinstance(v, Tensor) or np.ndim(v) == 0 else Tensor(v, device=like.device) for v in (a, b))
    dtype = _result_dtype(a, b)
    if fn is DivFunction and dtype.kind != "f":
        dtype = np.dtype(np.float32)  # true division of integers: the default float, as PyTorch
    return fn().apply(_operand(a, like, dtype), _operand(b, like, dtype))


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


class AddFunction(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.shapes = _shape_of(a), _shape_of(b)
        return a + b

    def backward(self, gy: Array) -> tuple[Array, ...]:
        return _unbroadcast(gy, self.shapes[0]), _unbroadcast(gy, self.shapes[1])


class SubFunction(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.shapes = _shape_of(a), _shape_of(b)
        return a - b

    def backward(self, gy: Array) -> tuple[Array, ...]:
        return _unbroadcast(gy, self.shapes[0]), _unbroadcast(-gy, self.shapes[1])


class MulFunction(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return a * b

    def backward(self, gy: Array) -> tuple[Array, ...]:
        return _unbroadcast(gy * self.b, _shape_of(self.a)), _unbroadcast(gy * self.a, _shape_of(self.b))


class DivFunction(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return a / b

    def backward(self, gy: Array) -> tuple[Array, ...]:
        ga = gy / self.b
        return _unbroadcast(ga, _shape_of(self.a)), _unbroadcast(-ga * self.a / self.b, _shape_of(self.b))


def add(a: Any, b: Any) -> Tensor:
    return _binary(AddFunction, a, b)


def sub(a: Any, b: Any) -> Tensor:
    return _binary(SubFunction, a, b)


def mul(a: Any, b: Any) -> Tensor:
    return _binary(MulFunction, a, b)


def div(a: Any, b: Any) -> Tensor:
    return _binary(DivFunction, a, b)


class _UnaryFunction(Function):
    """y = f(x) elementwise; subclasses give f and dy/dx in terms of x and y."""

    def f(self, x: Any) -> Any:
        raise NotImplementedError

    def df(self, x: Any, y: Any) -> Any:
        raise NotImplementedError

    def forward(self, x: Array) -> Array:
        self.x = x
        self.y = self.f(x)
        return self.y

    def backward(self, gy: Array) -> Array:
        return gy * self.df(self.x, self.y)


class NegFunction(_UnaryFunction):
    def f(self, x: Array) -> Array:
        return -x

    def df(self, x: Array, y: Array) -> Array:
        return -1


class ExpFunction(_UnaryFunction):
    def f(self, x: Array) -> Array:
        return self.xp.exp(x)

    def df(self, x: Array, y: Array) -> Array:
        return y


class LogFunction(_UnaryFunction):
    def f(self, x: Array) -> Array:
        return self.xp.log(x)

    def df(self, x: Array, y: Array) -> Array:
        return 1 / x


class AbsFunction(_UnaryFunction):
    def f(self, x: Array) -> Array:
        return self.xp.abs(x)

    def df(self, x: Array, y: Array) -> Array:
        return self.xp.sign(x)


class SqrtFunction(_UnaryFunction):
    def f(self, x: Array) -> Array:
        return self.xp.sqrt(x)

    def df(self, x: Array, y: Array) -> Array:
        return 0.5 / y


class ReLUFunction(_UnaryFunction):
    def f(self, x: Array) -> Array:
        return self.xp.maximum(x, 0)

    def df(self, x: Array, y: Array) -> Array:
        return x > 0


class SigmoidFunction(_UnaryFunction):
    def f(self, x: Array) -> Array:
        return 0.5 * self.xp.tanh(0.5 * x) + 0.5  # = 1 / (1 + exp(-x)), without exp's overflow

    def df(self, x: Array, y: Array) -> Array:
        return y * (1 - y)


class PowFunction(_UnaryFunction):
    def __init__(self, exponent: float):
        self.exponent = exponent

    def f(self, x: Array) -> Array:
        return x**self.exponent

    def df(self, x: Array, y: Array) -> Array:
        return self.exponent * x ** (self.exponent - 1)


def neg(x: Tensor) -> Tensor:
    return NegFunction().apply(x)


def exp(x: Tensor) -> Tensor:
    return ExpFunction().apply(x)


def log(x: Tensor) -> Tensor:
    return LogFunction().apply(x)


def abs(x: Tensor) -> Tensor:  # noqa: A001 (PyTorch's name)
    return AbsFunction().apply(x)


def sqrt(x: Tensor) -> Tensor:
    return SqrtFunction().apply(x)


def relu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    check_float_tensor("relu", "input", input)
    return ReLUFunction().apply(input)


def sigmoid(input: Tensor) -> Tensor:  # noqa: A002
    return SigmoidFunction().apply(input)


def pow(x: Tensor, exponent: float) -> Tensor:  # noqa: A001
    if isinstance(exponent, Tensor):
        raise TypeError("pow: exponent must be a number, not a Tensor")
    return PowFunction(exponent).apply(x)


# --------------------------------------------------------------------------- reductions
def _axes(dim: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """The axes ``dim`` names, sorted and non-negative; None and () name every axis, as in PyTorch."""
    dims = () if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
    if not dims:
        return tuple(range(ndim))
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            low, high = -max(ndim, 1), max(ndim, 1) - 1
            raise OutOfRangeError(f"Dimension out of range (expected to be in range of [{low}, {high}], but got {d})")
    return tuple(sorted(d % ndim for d in dims)) if ndim else ()  # a scalar's dim 0 or -1 is itself


class SumFunction(Function):
    def __init__(self, axes: tuple[int, ...], keepdim: bool):
        self.axes, self.keepdim = axes, keepdim

    def forward(self, x: Array) -> Array:
        self.shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdim)

    def backward(self, gy: Array) -> Array:
        if not self.keepdim:
            gy = gy.reshape([1 if i in self.axes else n for i, n in enumerate(self.shape)])
        return self.xp.broadcast_to(gy, self.shape).copy()


def sum(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return SumFunction(_axes(dim, x.ndim), keepdim).apply(x)


def mean(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
    check_float_tensor("mean", "input", x)  # PyTorch: "could not infer output dtype" for integers
    axes = _axes(dim, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes])) if x.ndim else 1
    return sum(x, dim, keepdim) / count


class AmaxFunction(Function):
    def forward(self, x: Array) -> Array:
        self.x, self.y = x, x.max()
        return self.y

    def backward(self, gy: Array) -> Array:
        hit = self.x == self.y
        return gy * hit / hit.sum()


def amax(x: Tensor) -> Tensor:
    return AmaxFunction().apply(x)


# --------------------------------------------------------------------------- shapes
class ReshapeFunction(Function):
    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def forward(self, x: Array) -> Array:
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy: Array) -> Array:
        return gy.reshape(self.in_shape)


def reshape(x: Tensor, *shape: Any) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return ReshapeFunction(tuple(int(s) for s in shape)).apply(x)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if x.ndim == 0:
        return reshape(x, 1)
    start, end = start_dim % x.ndim, end_dim % x.ndim
    shape = x.shape[:start] + (int(np.prod(x.shape[start : end + 1])),) + x.shape[end + 1 :]
    return reshape(x, shape)


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    dim = dim % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def squeeze(x: Tensor, dim: int | None = None) -> Tensor:
    if dim is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    dim = dim % max(x.ndim, 1)
    return reshape(x, x.shape[:dim] + x.shape[dim + 1 :]) if x.shape[dim] == 1 else x


def batched(op: Callable[..., Any], input: Tensor, *others: Tensor) -> Any:  # noqa: A002 (PyTorch's name)
    """``op(input, *others)``, an unbatched (C, H, W) input run as a batch of one: it and ``others`` (shaped
    like it: max_unpool2d's indices) are unsqueezed, and every output squeezed, as graph nodes.

    The one way every op takes unbatched input, so that no Function and no kernel sees an unbatched array.
    """
    if input.ndim != 3:
        return op(input, *others)
    outputs = op(*(unsqueeze(t, 0) for t in (input, *others)))
    return tuple(squeeze(y, 0) for y in outputs) if isinstance(outputs, tuple) else squeeze(outputs, 0)


class PermuteFunction(Function):
    def __init__(self, dims: tuple[int, ...]):
        self.dims = dims

    def forward(self, x: Array) -> Array:
        return x.transpose(self.dims)

    def backward(self, gy: Array) -> Array:
        return gy.transpose(np.argsort(self.dims))


def permute(x: Tensor, *dims: Any) -> Tensor:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return PermuteFunction(tuple(d % x.ndim for d in dims)).apply(x)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


class GetItemFunction(Function):
    def __init__(self, index: Any):
        self.index = index

    def forward(self, x: Array) -> Array:
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy: Array) -> Array:
        gx = self.xp.zeros(self.x_shape, dtype=self.x_dtype)
        self.xp.add.at(gx, self.index, gy)
        return gx


def getitem(x: Tensor, index: Any) -> Tensor:
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItemFunction(index).apply(x)


class PadFunction(Function):
    """Constant padding by (before, after) per axis; negative widths crop, as in PyTorch."""

    def __init__(self, widths: tuple[tuple[int, int], ...], value: float):
        self.widths, self.value = widths, value

    def forward(self, x: Array) -> Array:
        self.x_shape = x.shape
        kept = x[_interior(x.shape, [(max(-lo, 0), max(-hi, 0)) for lo, hi in self.widths])]
        return self.xp.pad(kept, [(max(lo, 0), max(hi, 0)) for lo, hi in self.widths], constant_values=self.value)

    def backward(self, gy: Array) -> Array:
        kept = gy[_interior(gy.shape, [(max(lo, 0), max(hi, 0)) for lo, hi in self.widths])]
        return self.xp.pad(kept, [(max(-lo, 0), max(-hi, 0)) for lo, hi in self.widths])


def _interior(shape: tuple[int, ...], margins: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
    return tuple(slice(lo, n - hi) for n, (lo, hi) in zip(shape, margins, strict=True))


def pad(input: Tensor, pad: Sequence[Any], mode: str = "constant", value: float | None = None) -> Tensor:  # noqa: A002
    """PyTorch's F.pad (constant mode): ``pad`` = (last-axis before, after, second-last before, after, ...);
    negative widths crop. Also accepts per-axis pairs ((before, after), ...) covering every axis."""
    check_float_tensor("pad", "input", input)
    if mode != "constant":
        raise ArgumentError(f"pad: only mode='constant' is supported, but got mode={mode!r}")
    if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pad) and len(pad) == input.ndim:
        widths = tuple((int(lo), int(hi)) for lo, hi in pad)
    else:
        if len(pad) % 2 or len(pad) // 2 > input.ndim:
            raise ArgumentError(
                f"pad: Padding length must be divisible by 2 and at most twice the number of dimensions of the "
                f"input ({input.ndim}), but got pad={tuple(pad)}"
            )
        pairs = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(len(pad) // 2)]
        widths = ((0, 0),) * (input.ndim - len(pairs)) + tuple(reversed(pairs))
    for axis, ((lo, hi), n) in enumerate(zip(widths, input.shape, strict=True)):
        if n + lo + hi < 0:
            raise ArgumentError(f"pad: padding {(lo, hi)} of dimension {axis} (size {n}) gives a negative size")
    return PadFunction(widths, 0.0 if value is None else value).apply(input)


class ConcatFunction(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs: Array) -> Array:
        self.sizes = [x.shape[self.axis] for x in xs]
        return self.xp.concatenate(xs, axis=self.axis)

    def backward(self, gy: Array) -> tuple[Array, ...]:
        bounds = np.cumsum(self.sizes)[:-1]
        return tuple(self.xp.split(gy, bounds, axis=self.axis))


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along ``dim``; as in PyTorch, 1-D empty tensors are skipped (a legacy rule)."""
    if not tensors:
        raise ArgumentError("cat(): expected a non-empty list of Tensors")
    for t in tensors:
        check_float_tensor("cat", "tensors", t)
    kept = [t for t in tensors if t.shape != (0,)] or list(tensors[:1])
    axis = _axes(dim, kept[0].ndim)[0]
    for i, t in enumerate(kept):
        if t.ndim != kept[0].ndim or any(a != b for k, (a, b) in enumerate(zip(t.shape, kept[0].shape)) if k != axis):
            raise ArgumentError(
                f"cat(): Sizes of tensors must match except in dimension {axis}: expected shape like "
                f"{kept[0].shape}, but got {t.shape} for tensor number {i}"
            )
    return ConcatFunction(axis).apply(*kept)


class ToFunction(Function):
    def __init__(self, target: Device, dtype: Any):
        self.target, self.dtype = target, dtype

    def forward(self, x: Array) -> Array:
        self.source, self.source_dtype = self.device, x.dtype
        y = self.target.asarray(x, dtype=self.dtype)
        return y.copy() if y is x else y  # a copy, so the two tensors never share memory

    def backward(self, gy: Array) -> Array:
        return self.source.asarray(gy, dtype=self.source_dtype)


def to(x: Tensor, device: Device, dtype: Any = None) -> Tensor:
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    if device.name == x.device.name and dtype == x.dtype:
        return x
    y = ToFunction(device, dtype).apply(x)
    y.device = device  # the output lives on the target device, not on the input's
    return y


# --------------------------------------------------------------------------- linear algebra
class MatMulFunction(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        with blas.threads_for(self.device):
            return a @ b

    def backward(self, gy: Array) -> tuple[Array, ...]:
        # A 1-D operand is a row (left) or a column (right) whose extra axis matmul dropped from gy:
        # put that axis back, use the matrix rule, then drop it again.
        xp, a, b = self.xp, self.a, self.b
        a2, b2 = (a[None, :] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)
        g = gy[..., None] if b.ndim == 1 else gy
        g = g[..., None, :] if a.ndim == 1 else g
        with blas.threads_for(self.device):
            ga, gb = g @ xp.swapaxes(b2, -1, -2), xp.swapaxes(a2, -1, -2) @ g
        ga = ga.squeeze(-2) if a.ndim == 1 else ga
        gb = gb.squeeze(-1) if b.ndim == 1 else gb
        return _unbroadcast(ga, a.shape), _unbroadcast(gb, b.shape)


def _check_same_dtype(op: str, name: str, t: Tensor, other_name: str, other: Tensor) -> None:
    """PyTorch's matmul and batch_norm do not promote: an operand of another dtype raises."""
    if t.dtype != other.dtype:
        raise DtypeError(f"{op}: expected {name} of dtype {other.dtype} like {other_name}, but got {t.dtype} "
                         f"(PyTorch does not promote here)")


def matmul(a: Tensor, b: Tensor) -> Tensor:
    _check_same_dtype("matmul", "other", b, "input", a)
    return MatMulFunction().apply(a, b)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """y = x W^T + b, with W of shape (out_features, in_features)."""
    check_float_tensor("linear", "input", input)
    if weight.ndim != 2 or input.shape[-1] != weight.shape[1]:
        raise ArgumentError(
            f"linear: expected weight of shape (out_features, {input.shape[-1]}) to match input of shape "
            f"{input.shape}, but got weight of shape {weight.shape}"
        )
    _check_same_dtype("linear", "weight", weight, "input", input)
    y = matmul(input, transpose(weight, 0, 1))
    if bias is not None:
        if bias.shape != (weight.shape[0],):
            raise ArgumentError(f"linear: expected bias of shape ({weight.shape[0]},), but got {bias.shape}")
        _check_same_dtype("linear", "bias", bias, "input", input)
        y = y + bias
    return y


# --------------------------------------------------------------------------- softmax
def _shift_by_max(x: Any, axis: int) -> Any:
    """x minus its maximum along axis, so exp cannot overflow (an empty x has no maximum to subtract)."""
    return x - x.max(axis=axis, keepdims=True) if x.size else x


class LogSoftmaxFunction(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x: Array) -> Array:
        shifted = _shift_by_max(x, self.axis)
        self.y = shifted - self.xp.log(self.xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, gy: Array) -> Array:
        return gy - self.xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


class SoftmaxFunction(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x: Array) -> Array:
        e = self.xp.exp(_shift_by_max(x, self.axis))
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy: Array) -> Array:
        return self.y * (gy - (gy * self.y).sum(axis=self.axis, keepdims=True))


def _softmax_dim(name: str, x: Tensor, dim: int | None) -> int:
    if dim is None:  # PyTorch's legacy implicit choice
        dim = 0 if x.ndim in (0, 1, 3) else 1
    return _axes(dim, x.ndim)[0] if x.ndim else 0


def softmax(input: Tensor, dim: int | None = None) -> Tensor:  # noqa: A002
    check_float_tensor("softmax", "input", input)
    return SoftmaxFunction(_softmax_dim("softmax", input, dim)).apply(input)


def log_softmax(input: Tensor, dim: int | None = None) -> Tensor:  # noqa: A002
    check_float_tensor("log_softmax", "input", input)
    return LogSoftmaxFunction(_softmax_dim("log_softmax", input, dim)).apply(input)


# --------------------------------------------------------------------------- batch norm
class BatchNormFunction(Function):
    """Normalise over every axis but the channel axis 1, with given statistics or the batch's own: the
    device's batch_norm kernels on x viewed as (N, C, P). With relu, then a ReLU in the same kernels: the
    output is kept, as the backward's ReLU mask."""

    def __init__(self, eps: float, use_batch_stats: bool, relu: bool = False):
        self.eps, self.use_batch_stats, self.relu = eps, use_batch_stats, relu

    def forward(self, x: Array, mean: Array | None, var: Array | None, weight: Array | None,
                bias: Array | None) -> Array:
        xp = self.xp
        self.shape = x.shape
        self.x = contiguous(x).reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
        channels = x.shape[1]
        self.weight = xp.ones(channels, x.dtype) if weight is None else contiguous(weight)
        bias = xp.zeros(channels, x.dtype) if bias is None else contiguous(bias)
        if not self.use_batch_stats:
            mean, var = contiguous(mean), contiguous(var)
        y, self.batch_mean, self.batch_var = self.kernels.batch_norm_forward(
            self.x, mean, var, self.weight, bias, self.eps, self.use_batch_stats, self.relu)
        self.y = y if self.relu else None
        return y.reshape(self.shape)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        gy = contiguous(gy).reshape(self.x.shape)
        g_x, g_weight, g_bias = self.kernels.batch_norm_backward(
            gy, self.x, self.batch_mean, self.batch_var, self.weight, self.eps, self.use_batch_stats, self.y)
        return g_x.reshape(self.shape), None, None, g_weight, g_bias


def batch_norm(
    input: Tensor,  # noqa: A002
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """PyTorch's batch_norm: in training, normalise by the batch statistics and update the running ones
    in place (unbiased variance); otherwise normalise by the running statistics."""
    return _batch_norm("batch_norm", input, running_mean, running_var, weight, bias, training, momentum, eps,
                       relu=False)


def batch_norm_relu(
    input: Tensor,  # noqa: A002
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """relu(batch_norm(...)) with the same arguments, in the batch-norm kernels' own passes over memory
    (minicv's, not PyTorch's: a ReLU follows every batch norm of the segmenters, and apart it is a pass
    of its own each way). The backward masks the gradient by the saved output, as relu's does."""
    return _batch_norm("batch_norm_relu", input, running_mean, running_var, weight, bias, training, momentum, eps,
                       relu=True)


def _batch_norm(op: str, input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,  # noqa: A002
                weight: Tensor | None, bias: Tensor | None, training: bool, momentum: float, eps: float,
                relu: bool) -> Tensor:
    """batch_norm, or batch_norm_relu with relu: the checks (errors named by ``op``), the kernels, and the
    running statistics' update."""
    check_float_tensor(op, "input", input)
    if input.ndim < 2:
        raise ArgumentError(f"{op}: expected input with at least 2 dimensions, but got shape {input.shape}")
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (channels,):
            raise ArgumentError(f"{op}: expected {name} of shape ({channels},), but got {t.shape}")
        if t is not None:
            _check_same_dtype(op, name, t, "input", input)
    if (running_mean is None) != (running_var is None):  # as PyTorch: the two are one choice
        raise ArgumentError(f"{op}: running_mean and running_var must either both be None or neither be None")
    if not training and (running_mean is None or running_var is None):
        raise ArgumentError(f"{op}: running_mean and running_var are required when training=False")
    count = input.size // channels
    if training and count <= 1:
        raise ArgumentError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
    fn = BatchNormFunction(eps, use_batch_stats=training, relu=relu)
    y = fn.apply(input, running_mean, running_var, weight, bias)
    if training and running_mean is not None and running_var is not None:
        unbiased = fn.batch_var * (count / (count - 1))
        running_mean.data = (1 - momentum) * running_mean.data + momentum * fn.batch_mean
        running_var.data = (1 - momentum) * running_var.data + momentum * unbiased
    return y
