"""Max pooling with argmax indices, and max unpooling, on the device's kernels.

The lecture's duality is the implementation: max_pool2d's backward sends each output gradient to the
input element that won its window, which is exactly max_unpool2d's forward (``unpool_scatter``);
max_unpool2d's backward reads the gradient back at the same places (``unpool_gather``).

Output sizes, argument checks and error messages follow PyTorch 2.13 (ATen ``Pool.h`` and
``torch.nn.functional._unpool_output_size``), in PyTorch's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np

from minicv.autograd import Array, Function
from minicv.errors import ArgumentError, DtypeError, OutOfRangeError
from minicv.functional._checks import check_float_tensor, contiguous, int_list, torch_dtype_name
from minicv.tensor import Tensor

Pair = tuple[int, int]
IntOrPair = int | Sequence[int]
INT32_MIN, INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)


# --------------------------------------------------------------------------- argument checks
def _pool_pair(name: str, value: Any, expected: str, empty: Pair | None = None) -> Pair:
    """(h, w) from one int or two; ``empty`` for an empty sequence where that is allowed (stride)."""
    items = int_list("max_pool2d", name, value)
    if empty is not None and not items:
        return empty
    if any(not INT32_MIN <= v <= INT32_MAX for v in items):  # PyTorch's int[2] arguments are 32-bit
        raise ArgumentError(
            f"max_pool2d: value cannot be converted to type int without overflow: {name}={value!r} is outside "
            f"[{INT32_MIN}, {INT32_MAX}]"
        )
    if len(items) not in (1, 2):
        raise ArgumentError(f"max_pool2d: {name} must {expected}, but got {name}={value!r}")
    return (items[0], items[-1])


def _c_div(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero), as PyTorch's checks compute it."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def pooled_size(size: int, kernel: int, pad: int, stride: int, dilation: int, ceil_mode: bool) -> int:
    """Pool.h ``pooling_output_shape``: the checks it makes, then the output size along one axis.

    With ceil_mode the last window must start inside the input or the left padding (issue #45357).
    """
    if stride == 0:
        raise ArgumentError("max_pool2d: stride should not be zero")
    if pad < 0:
        raise ArgumentError(f"max_pool2d: pad must be non-negative, but got pad: {pad}")
    if pad > _c_div((kernel - 1) * dilation + 1, 2):
        raise ArgumentError(
            f"max_pool2d: pad should be at most half of effective kernel size, but got pad={pad}, "
            f"kernel_size={kernel} and dilation={dilation}"
        )
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _check_pool2d_shape(shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair, dilation: Pair,
                        out_hw: Pair) -> None:
    """Pool.h ``pool2d_shape_check``, in its order (pad <= k // 2 uses the raw kernel, not the dilated one)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    if kh <= 0 or kw <= 0:
        raise ArgumentError(f"max_pool2d: kernel size should be greater than zero, but got kH: {kh} kW: {kw}")
    if sh <= 0 or sw <= 0:
        raise ArgumentError(f"max_pool2d: stride should be greater than zero, but got dH: {sh} dW: {sw}")
    if dh <= 0 or dw <= 0:
        raise ArgumentError(
            f"max_pool2d: dilation should be greater than zero, but got dilationH: {dh} dilationW: {dw}"
        )
    if 0 in shape[-3:]:
        raise ArgumentError(
            "max_pool2d: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
            f"but got:{list(shape)}"
        )
    if kw // 2 < pw or kh // 2 < ph:
        raise ArgumentError(
            "max_pool2d: pad should be smaller than or equal to half of kernel size, but got "
            f"padW = {pw}, padH = {ph}, kW = {kw}, kH = {kh}"
        )
    if out_hw[0] < 1 or out_hw[1] < 1:
        c, h, w = shape[-3:]
        raise ArgumentError(
            f"max_pool2d: Given input size: ({c}x{h}x{w}). Calculated output size: ({c}x{out_hw[0]}x{out_hw[1]}). "
            "Output size is too small"
        )


# --------------------------------------------------------------------------- max_pool2d
def _padding_only_windows(in_hw: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
                          out_hw: Pair) -> np.ndarray | None:
    """The (H_out, W_out) mask of windows whose taps all fall in the padding, or None if there are none.

    Dilation makes them possible (taps jump over the input). Their output is the constant -inf and
    their index, as PyTorch reports it, may lie outside the plane or on an unrelated element.
    """
    def covers_input(size: int, k: int, s: int, p: int, d: int, out: int) -> np.ndarray:
        taps = np.arange(out)[:, None] * s - p + np.arange(k) * d
        return np.asarray(((taps >= 0) & (taps < size)).any(axis=1))

    rows, cols = (covers_input(*args) for args in zip(in_hw, kernel, stride, padding, dilation, out_hw, strict=True))
    empty = ~(rows[:, None] & cols[None, :])
    return empty if empty.any() else None


class MaxPool2dFunction(Function):
    """y, indices = max over each window; backward scatters gy to the winners (summing overlaps).

    A window of padding only is a constant (-inf): it sends no gradient anywhere (PyTorch sends it to
    the element its index happens to name).
    """

    def __init__(self, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair, out_hw: Pair):
        self.pool = (kernel_size, stride, padding, dilation)
        self.out_hw = out_hw

    def forward(self, x: Array) -> tuple[Array, ...]:
        self.unbatched = x.ndim == 3
        x = contiguous(x[None] if self.unbatched else x)
        n, c, h, w = x.shape
        self.in_hw = (h, w)
        if x.size == 0:  # empty batch: nothing to launch
            y = self.xp.zeros((n, c, *self.out_hw), dtype=x.dtype)
            self.indices = self.xp.zeros(y.shape, dtype=np.int64)
        else:
            y, self.indices = self.kernels.max_pool2d_forward(x, *self.pool, self.out_hw)
        empty = _padding_only_windows(self.in_hw, *self.pool, self.out_hw)
        self.padding_only = None if empty is None else self.xp.asarray(empty)
        if self.unbatched:
            return y[0], self.indices[0]
        return y, self.indices

    def backward(self, gy: Array, g_indices: Array) -> Array:
        gy = contiguous(gy[None] if self.unbatched else gy)
        indices = self.indices
        if self.padding_only is not None:
            gy = self.xp.where(self.padding_only, 0, gy)
            indices = self.xp.where(self.padding_only, 0, indices)  # any in-plane index: it carries 0
        if gy.size == 0:
            gx = self.xp.zeros((*gy.shape[:2], *self.in_hw), dtype=gy.dtype)
        else:
            gx = self.kernels.unpool_scatter(gy, indices, self.in_hw, pool=self.pool)
        return gx[0] if self.unbatched else gx


# what max_pool2d returns follows return_indices: a Tensor, or (values, indices)
@overload
def max_pool2d(input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None,  # noqa: A002
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: Literal[False] = False) -> Tensor: ...
@overload
def max_pool2d(input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None,  # noqa: A002
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False, *,
               return_indices: Literal[True]) -> tuple[Tensor, Tensor]: ...
@overload
def max_pool2d(input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None,  # noqa: A002
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]: ...
def max_pool2d(
    input: Tensor,  # noqa: A002 (PyTorch's name)
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """2-D max pooling over (N, C, H, W) or (C, H, W) input, as ``torch.nn.functional.max_pool2d``.

    Padding reads -inf; ties go to the first maximum in row-major window order; NaN propagates. With
    ``return_indices`` also returns the int64 flat offsets h*W + w of the maxima in each input plane
    (what max_unpool2d takes). stride defaults to kernel_size.
    """
    check_float_tensor("max_pool2d", "input", input)
    kernel = _pool_pair("kernel_size", kernel_size, "either be a single int, or a tuple of two ints")
    strides = _pool_pair("stride", [] if stride is None else stride,
                         "either be omitted, a single int, or a tuple of two ints", empty=kernel)
    pad = _pool_pair("padding", padding, "either be a single int, or a tuple of two ints")
    dil = _pool_pair("dilation", dilation, "be either a single int, or a tuple of two ints")
    if input.ndim not in (3, 4):
        raise ArgumentError(
            f"max_pool2d: non-empty 3D or 4D (batch mode) tensor expected for input, but got input of shape "
            f"{input.shape}"
        )
    h, w = input.shape[-2:]
    out_hw = (pooled_size(h, kernel[0], pad[0], strides[0], dil[0], ceil_mode),
              pooled_size(w, kernel[1], pad[1], strides[1], dil[1], ceil_mode))
    _check_pool2d_shape(input.shape, kernel, strides, pad, dil, out_hw)
    y, indices = MaxPool2dFunction(kernel, strides, pad, dil, out_hw).apply(input)
    return (y, indices) if return_indices else y


# --------------------------------------------------------------------------- max_unpool2d
class MaxUnpool2dFunction(Function):
    """out = zeros with out.flat[indices] = x (per plane); backward gathers g at the same indices."""

    def __init__(self, indices: Any, out_hw: Pair):
        self.indices, self.out_hw = indices, out_hw

    def forward(self, x: Array) -> Array:
        self.unbatched = x.ndim == 3
        x = contiguous(x[None] if self.unbatched else x)
        indices = contiguous(self.indices[None] if self.unbatched else self.indices)
        self.batched_indices = indices
        n, c = x.shape[:2]
        if x.size == 0 or self.out_hw[0] * self.out_hw[1] == 0:  # PyTorch checks no index then either
            out = self.xp.zeros((n, c, *self.out_hw), dtype=x.dtype)
        else:
            try:  # every kernel checks every index as it goes: no second pass over them here
                out = self.kernels.unpool_scatter(x, indices, self.out_hw, pool=None)
            except IndexError as err:
                raise OutOfRangeError(f"max_unpool2d: {err}") from err
        return out[0] if self.unbatched else out

    def backward(self, g: Array) -> Array:
        g = contiguous(g[None] if self.unbatched else g)
        if self.batched_indices.size == 0 or g.size == 0:  # nothing to read, or nothing to read from
            gx = self.xp.zeros(self.batched_indices.shape, dtype=g.dtype)
        else:
            gx = self.kernels.unpool_gather(g, self.batched_indices)
        return gx[0] if self.unbatched else gx


def _unpool_pair(name: str, value: Any) -> Pair:
    items = int_list("max_unpool2d", name, value)
    if len(items) not in (1, 2):
        raise ArgumentError(f"max_unpool2d: {name} must be a single int or a tuple of two ints, but got {value!r}")
    return (items[0], items[-1])


def unpool_output_size(input_hw: Sequence[int], kernel: Pair, stride: Pair, padding: Pair,
                       output_size: Sequence[int] | None) -> Pair:
    """``torch.nn.functional._unpool_output_size``: the pool's input size, or a checked ``output_size``.

    The default is (in - 1) * stride + kernel - 2 * padding (no dilation, no ceil_mode); an explicit
    size has 2 entries (or 4, the last two used) each strictly within stride of the default.
    """
    default = [(input_hw[d] - 1) * stride[d] + kernel[d] - 2 * padding[d] for d in range(2)]
    if output_size is None:
        size = default
    else:
        size = int_list("max_unpool2d", "output_size", output_size)
        if len(size) == 4:
            size = size[2:]
        if len(size) != 2:
            raise ArgumentError(
                "max_unpool2d: output_size should be a sequence containing 2 or 4 elements, but it has a "
                f"length of '{len(size)}'"
            )
        for d in range(2):
            low, high = default[d] - stride[d], default[d] + stride[d]
            if not low < size[d] < high:
                raise ArgumentError(
                    f'max_unpool2d: invalid output_size "{tuple(output_size)}" (dim {d} must be between '
                    f"{low} and {high})"
                )
    for d in range(2):
        if size[d] < 0:
            raise ArgumentError(
                "max_unpooling: output_size must contain non-negative spatial dimensions, but got "
                f"output_size[{d}]={size[d]}"
            )
    return (size[0], size[1])


def max_unpool2d(
    input: Tensor,  # noqa: A002
    indices: Tensor,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    output_size: Sequence[int] | None = None,
) -> Tensor:
    """The partial inverse of max_pool2d, as ``torch.nn.functional.max_unpool2d``.

    Places input[n, c, i, j] at out[n, c].flat[indices[n, c, i, j]], zeros elsewhere. The output size
    is the pool's input size worked out from kernel_size/stride/padding, or ``output_size`` (pass it
    when the pool used ceil_mode or dilation). Duplicate indices keep the last value in row-major order.
    """
    check_float_tensor("max_unpool2d", "input", input)
    if not isinstance(indices, Tensor):
        raise TypeError(f"max_unpool2d(): argument 'indices' must be a Tensor, but got {type(indices).__name__}")
    kernel = _unpool_pair("kernel_size", kernel_size)
    strides = kernel if stride is None else _unpool_pair("stride", stride)
    pad = _unpool_pair("padding", padding)
    if input.ndim not in (3, 4):
        raise ArgumentError(
            "max_unpool2d: Input to max_unpooling2d should be a 3d or 4d Tensor, but got a tensor with "
            f"{input.ndim} dimensions."
        )
    out_hw = unpool_output_size(input.shape[-2:], kernel, strides, pad, output_size)
    if indices.dtype != np.int64:
        raise DtypeError(f"max_unpool2d: elements in indices should be type int64 but got: "
                         f"{torch_dtype_name(indices.dtype)} (argument 'indices' is {indices.dtype})")
    if indices.shape != input.shape:
        raise ArgumentError(
            "max_unpool2d: Expected shape of indices to be same as that of the input tensor "
            f"({list(input.shape)}) but got indices tensor with shape: {list(indices.shape)}"
        )
    for dim in range(input.ndim - 3, input.ndim):
        if input.shape[dim] == 0:
            raise ArgumentError(
                "max_unpool2d: max_unpooling2d_forward_out_cpu(): Expected input to have non-zero size for "
                f"non-batch dimensions, but got {list(input.shape)} with dimension {dim} being empty."
            )
    if indices.device.name != input.device.name:
        raise ArgumentError(
            f"max_unpool2d: expected input and indices on the same device, but got {input.device.name} "
            f"and {indices.device.name}"
        )
    return MaxUnpool2dFunction(indices.data, out_hw).apply(input)
