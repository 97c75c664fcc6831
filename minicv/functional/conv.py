"""2-D convolution and transposed convolution: the lecture's duality, on three kernels.

    conv2d            forward  = conv2d_forward
                      backward = conv2d_backward_input (input), conv2d_backward_weight (weight)
    conv_transpose2d  forward  = conv2d_backward_input (it *is* the input gradient of a conv2d)
                      backward = conv2d_forward (input), conv2d_backward_weight with x and gy swapped

The transposed convolution's weight (C_in, C_out/groups, kH, kW) is used as the weight of the conv2d it
is the transpose of: no flip, no copy. Bias adds run on the array module (``xp``).

Validation follows PyTorch's checks, order and wording (reference/torch_semantics.md, sections 1 and 5);
messages also name the argument. minicv computes in float32 and float64 only.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from minicv.autograd import Array, Function
from minicv.errors import ArgumentError, DtypeError
from minicv.functional._checks import FLOAT_DTYPES, contiguous, int_list, is_int, torch_dtype_name
from minicv.functional.basic import batched, pad
from minicv.tensor import Tensor

Pair = tuple[int, int]


# --------------------------------------------------------------------------- the Functions
def _bias_grad(gy: Any) -> Any:
    return gy.sum(axis=(0, 2, 3))


def _add_bias(y: Any, b: Any | None) -> Any:
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


class _ConvFunction(Function):
    """Hyper-parameters shared by both convolutions, and the one way both call a kernel."""

    def __init__(self, stride: Pair, padding: Pair, dilation: Pair, groups: int, out_hw: Pair):
        """out_hw: the op's output (H_out, W_out), worked out once by conv2d / conv_transpose2d."""
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.out_hw = out_hw

    def _run(self, kernel: Any, out_shape: tuple[int, ...], a: Any, b: Any, shape: Sequence[int]) -> Any:
        """kernel(a, b, shape, stride, padding, dilation, groups), a and b made C-contiguous (the contract).

        An empty result, or an empty operand (a sum over nothing), is zeros without a kernel launch: a
        CUDA grid of size zero is an error, and no kernel need handle empty tensors.
        """
        if math.prod(out_shape) == 0 or a.size == 0 or b.size == 0:
            return self.xp.zeros(out_shape, dtype=a.dtype)
        return kernel(contiguous(a), contiguous(b), tuple(shape), self.stride, self.padding, self.dilation,
                      self.groups)


class Conv2dFunction(_ConvFunction):
    """y = conv2d(x, w) + b with symmetric zero padding (asymmetric 'same' padding is done before). With a
    ``crop`` (padding past the kernel's reach, conv2d's ``window_crop``), the kernels get only the part of
    the input that windows read, with padding 0, and compute only those windows' outputs; the others are
    the bias alone, and x's gradient is zero where no window reads it."""

    def __init__(self, stride: Pair, padding: Pair, dilation: Pair, groups: int, out_hw: Pair,
                 crop: WindowCrop | None = None):
        super().__init__(stride, padding, dilation, groups, out_hw)
        self.crop = crop

    def forward(self, x: Array, w: Array, b: Array | None = None) -> Array:
        self.x_shape = x.shape
        if self.crop is not None:
            x = self.crop.kernel_input(self.xp, x)
        self.x, self.w = x, w
        kernel_out_hw = self.out_hw if self.crop is None else self.crop.kernel_out_hw
        y = self._run(self.kernels.conv2d_forward, (x.shape[0], w.shape[0], *kernel_out_hw), x, w, kernel_out_hw)
        if self.crop is not None:
            y = self.crop.placed(self.xp, y, (y.shape[0], y.shape[1], *self.out_hw))
        return _add_bias(y, b)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        (needs_x, needs_w, *needs_b), kernels, x, w = self.needs_input_grad, self.kernels, self.x, self.w
        gb = _bias_grad(gy) if any(needs_b) else None
        if self.crop is not None:
            gy = gy[self.crop.output_index]
        gx = self._run(kernels.conv2d_backward_input, x.shape, gy, w, x.shape) if needs_x else None
        if gx is not None and self.crop is not None:
            gx = self.crop.input_gradient(self.xp, gx, self.x_shape)
        gw = self._run(kernels.conv2d_backward_weight, w.shape, x, gy, w.shape) if needs_w else None
        return gx, gw, gb


class ConvTranspose2dFunction(_ConvFunction):
    """y = conv_transpose2d(x, w) + b: the input gradient of conv2d(., w), of spatial size out_hw."""

    def forward(self, x: Array, w: Array, b: Array | None = None) -> Array:
        self.x, self.w = x, w
        y_shape = (x.shape[0], self.groups * w.shape[1], *self.out_hw)
        return _add_bias(self._run(self.kernels.conv2d_backward_input, y_shape, x, w, y_shape), b)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        needs_x, needs_w, *needs_b = self.needs_input_grad
        gx = gw = gb = None
        if needs_x:
            # x's own size, handed as the conv2d's output size: when output_padding >= stride (allowed while
            # it is below dilation) the conv2d of gy has more rows/cols, which x never fed.
            gx = self._run(self.kernels.conv2d_forward, self.x.shape, gy, self.w, self.x.shape[2:])
        if needs_w:  # conv2d(gy, w) = x-shaped: gy plays the conv's input, x its output gradient
            gw = self._run(self.kernels.conv2d_backward_weight, self.w.shape, gy, self.x, self.w.shape)
        if any(needs_b):
            gb = _bias_grad(gy)
        return gx, gw, gb


# --------------------------------------------------------------------------- shape arithmetic
def kernel_stride(in_hw: Sequence[int], kernel_hw: Sequence[int], stride: Pair, padding: Pair,
                  dilation: Pair) -> Pair:
    """The stride the kernels get for a conv2d of input size ``in_hw``: per axis min(s, size + 2p - d(k-1)).

    A stride past that leaves one output along the axis, which reads the same taps whatever the stride;
    the smallest stride that also leaves one output is size + 2p - d(k-1). The kernels size buffers by the
    stride (numba's phase split holds s_h * s_w phases) and pass it as a 32-bit int (the CUDA kernels):
    clamped, neither grows past the padded input.
    """
    h, w = (
        min(s, size + 2 * p - d * (k - 1))
        for size, k, s, p, d in zip(in_hw, kernel_hw, stride, padding, dilation, strict=True)
    )
    return h, w


@dataclass(frozen=True)
class WindowCrop:
    """The part of a conv2d's input that its windows read, when some windows lie wholly in the padding.

    Those windows read zeros only, but the kernels would size buffers by the whole padded input (numpy
    pads a copy, numba splits it into its stride's phases): PyTorch takes milliseconds for a 4x4 input at
    padding 10^4 and stride 10^5, where those ran out of memory. The kernels get instead, per axis, the
    input rows ``source`` that windows ``outputs`` read, with ``before`` and ``after`` zero rows for the
    parts of those windows past the input: a conv2d of padding 0 whose output is exactly those windows'.
    """

    outputs: tuple[slice, slice]
    source: tuple[slice, slice]
    before: Pair
    after: Pair

    @property
    def kernel_out_hw(self) -> Pair:
        h, w = (window.stop - window.start for window in self.outputs)
        return h, w

    @property
    def output_index(self) -> tuple[Any, ...]:
        """The index of the kernels' outputs in the whole output (or its gradient)."""
        return (Ellipsis, *self.outputs)

    @property
    def kernel_in_hw(self) -> Pair:
        h, w = (part.stop - part.start + b + a for part, b, a in zip(self.source, self.before, self.after, strict=True))
        return h, w

    def kernel_input(self, xp: Any, x: Array) -> Array:
        """The kernels' input: x's rows and columns the windows read, between their zero rows/columns."""
        source = (Ellipsis, *self.source)
        part = x[source]
        widths = ((0, 0), (0, 0), *zip(self.before, self.after, strict=True))
        return xp.pad(part, widths) if any(self.before + self.after) else part

    def placed(self, xp: Any, y: Array, shape: tuple[int, ...]) -> Array:
        """The whole output: the kernels' outputs where their windows are, zeros elsewhere."""
        whole = xp.zeros(shape, dtype=y.dtype)
        whole[self.output_index] = y
        return whole

    def input_gradient(self, xp: Any, g: Array, shape: tuple[int, ...]) -> Array:
        """x's gradient from the kernels' input's: zero on the rows and columns no window reads."""
        whole = xp.zeros(shape, dtype=g.dtype)
        inner = tuple(slice(b, b + part.stop - part.start) for b, part in zip(self.before, self.source, strict=True))
        source, read = (Ellipsis, *self.source), (Ellipsis, *inner)
        whole[source] = g[read]
        return whole


def window_crop(in_hw: Sequence[int], kernel_hw: Sequence[int], stride: Pair, padding: Pair, dilation: Pair,
                out_hw: Pair) -> WindowCrop | None:
    """The WindowCrop of a conv2d whose padding holds whole windows, else None. Window o of an axis reads
    input rows o*s - p ... o*s - p + d(k-1); a padding up to the reach d(k-1) leaves every window touching
    the input (the models' layers: None), a wider one may not."""
    if all(p <= d * (k - 1) for k, p, d in zip(kernel_hw, padding, dilation, strict=True)):
        return None
    axes = []
    for size, k, s, p, d, out in zip(in_hw, kernel_hw, stride, padding, dilation, out_hw, strict=True):
        reach = d * (k - 1)
        first = max(0, -((reach - p) // s))  # the first window whose last tap is in the input: ceil((p - reach) / s)
        last = min(out, (size - 1 + p) // s + 1)  # past the last window whose first tap is in the input
        if first >= last:  # no window reads the input, every output is the bias: the kernels get one window
            axes.append((False, slice(0, 0), slice(0, 0), reach + 1, 0))  # of zeros and no output, so never run
            continue
        start, end = first * s - p, (last - 1) * s - p + reach + 1  # the rows those windows span
        axes.append((first == 0 and last == out, slice(first, last), slice(max(start, 0), min(end, size)),
                     max(-start, 0), max(end - size, 0)))
    if all(whole for whole, *_ in axes):
        return None
    (_, out_h, rows, top, bottom), (_, out_w, columns, left, right) = axes
    return WindowCrop((out_h, out_w), (rows, columns), (top, left), (bottom, right))


def conv_output_hw(in_hw: Sequence[int], kernel_hw: Sequence[int], stride: Pair, padding: Pair,
                   dilation: Pair) -> Pair:
    """conv2d's output (H_out, W_out): per axis (size + 2p - d(k-1) - 1) // s + 1."""
    h, w = (
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(in_hw, kernel_hw, stride, padding, dilation, strict=True)
    )
    return h, w


def conv_transpose_output_hw(in_hw: Sequence[int], kernel_hw: Sequence[int], stride: Pair, padding: Pair,
                             dilation: Pair, output_padding: Pair) -> Pair:
    """conv_transpose2d's output (H_out, W_out): per axis (size-1)s - 2p + d(k-1) + op + 1."""
    h, w = (
        (size - 1) * s - 2 * p + d * (k - 1) + op + 1
        for size, k, s, p, d, op in zip(in_hw, kernel_hw, stride, padding, dilation, output_padding, strict=True)
    )
    return h, w


def conv_transpose2d_output_padding(
    input_shape: Sequence[int],
    output_size: Sequence[int],
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
) -> Pair:
    """The output_padding that makes conv_transpose2d of an input of ``input_shape`` (C, H, W) or
    (N, C, H, W) produce ``output_size`` (2 entries, or all 3/4 of the output's shape): PyTorch's
    ``ConvTranspose2d.forward(input, output_size)`` rule. Raises ArgumentError when no output_padding
    below the stride gives that size.
    """
    op = "conv_transpose2d"
    stride, padding = _pair(op, "stride", stride), _pair(op, "padding", padding)
    kernel_size, dilation = _pair(op, "kernel_size", kernel_size), _pair(op, "dilation", dilation)
    leading = len(input_shape) - 2  # the non-spatial dims: 2 batched, 1 unbatched
    output_size = list(output_size)
    if len(output_size) == leading + 2:
        output_size = output_size[leading:]
    if len(output_size) != 2:
        raise ArgumentError(
            f"ConvTranspose2D: for {len(input_shape)}D input, output_size must have 2 or {leading + 2} "
            f"elements (got {len(output_size)})"
        )
    in_hw = tuple(input_shape[-2:])
    min_sizes = list(conv_transpose_output_hw(in_hw, kernel_size, stride, padding, dilation, (0, 0)))
    max_sizes = [low + s - 1 for low, s in zip(min_sizes, stride, strict=True)]
    if any(not low <= size <= high for size, low, high in zip(output_size, min_sizes, max_sizes, strict=True)):
        raise ArgumentError(
            f"requested an output size of {output_size}, but valid sizes range from {min_sizes} to {max_sizes} "
            f"(for an input of size {list(in_hw)}): argument 'output_size'"
        )
    return output_size[0] - min_sizes[0], output_size[1] - min_sizes[1]


# --------------------------------------------------------------------------- argument parsing and checks
def _pair(op: str, name: str, value: Any) -> Pair:
    """An int, or a list/tuple of 1 (broadcast) or 2 ints, as an (h, w) pair."""
    values = int_list(op, name, value)
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise ArgumentError(
            f"expected {name} to be a single integer value or a list of 2 values to match the convolution "
            f"dimensions, but got {name}={values}"
        )
    return values[0], values[1]


def _check_operands(op: str, input: Any, weight: Any, bias: Any) -> None:  # noqa: A002
    """Tensors (bias optional), the input 3-D or 4-D: PyTorch's first checks (Function.apply checks that
    they share a device)."""
    for position, (name, t) in enumerate((("input", input), ("weight", weight), ("bias", bias)), start=1):
        if not isinstance(t, Tensor) and not (name == "bias" and t is None):
            raise TypeError(f"{op}(): argument '{name}' (position {position}) must be Tensor, not {type(t).__name__}")
    if input.ndim not in (3, 4):
        raise ArgumentError(
            f"Expected 3D (unbatched) or 4D (batched) input to {op}, but got input of size: {list(input.shape)}"
        )


def _check_bias_dtype(op: str, input: Tensor, bias: Tensor | None) -> None:  # noqa: A002
    if bias is not None and bias.dtype != input.dtype:
        raise DtypeError(
            f"{op}: Input type ({torch_dtype_name(input.dtype, cpp=True)}) and bias type "
            f"({torch_dtype_name(bias.dtype, cpp=True)}) should be the same: bias is {bias.dtype}, "
            f"input is {input.dtype}"
        )


def _check_groups(op: str, groups: Any) -> int:
    if not is_int(groups):
        raise TypeError(f"{op}(): argument 'groups' must be int, but got {groups!r}")
    if operator.index(groups) <= 0:
        raise ArgumentError(f"non-positive groups is not supported: groups={groups}")
    return operator.index(groups)


def _check_signs(op: str, stride: Pair, padding: Pair, dilation: Pair, output_padding: Pair = (0, 0)) -> None:
    if min(padding) < 0:
        raise ArgumentError(f"negative padding is not supported: padding={list(padding)}")
    if min(output_padding) < 0:
        raise ArgumentError(f"negative output_padding is not supported: output_padding={list(output_padding)}")
    if min(stride) <= 0:
        raise ArgumentError(f"non-positive stride is not supported: stride={list(stride)}")
    if min(dilation) <= 0:
        got = (
            f"dilation_height: {dilation[0]}, dilation_width: {dilation[1]}"
            if op == "conv_transpose2d" else f"{list(dilation)}"
        )
        raise ArgumentError(f"dilation should be greater than zero, but got {got}: argument 'dilation'")


def _check_weight(op: str, x_shape: tuple[int, ...], weight: Tensor, groups: int, string_padding: bool) -> None:
    """The weight's rank, and its first dimension against groups (PyTorch's check_shape_forward)."""
    w_shape = list(weight.shape)
    if weight.ndim < 3:
        raise ArgumentError(f"weight should have at least three dimensions, but got weight of size {w_shape}")
    if weight.ndim != 4:
        # PyTorch reads a weight of another rank as another convolution, then trips on its arguments.
        if string_padding:
            raise ArgumentError(
                f"Expected {weight.ndim}-dimensional input for {weight.ndim}-dimensional weight{w_shape}, but "
                f"got 4-dimensional input of size {list(x_shape)} instead: {op} expects a 4-D weight"
            )
        raise ArgumentError(
            f"expected stride to be a single integer value or a list of {weight.ndim - 2} values to match the "
            f"convolution dimensions, but got stride=[1, 1]: {op} expects a 4-D weight, but got weight of size "
            f"{w_shape}"
        )
    if w_shape[0] < groups:
        raise ArgumentError(
            f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, but got weight of "
            f"size {w_shape} instead"
        )
    if w_shape[0] % groups:
        raise ArgumentError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, but got weight "
            f"of size [{w_shape}] instead"
        )


def _check_bias_shape(bias: Tensor | None, channels: int, prefix: str) -> None:
    if bias is not None and bias.shape != (channels,):
        raise ArgumentError(
            f"{prefix}, expected bias to be 1-dimensional with {channels} elements, but got bias of size "
            f"{list(bias.shape)} instead"
        )


def _check_nonempty_planes(x_shape: tuple[int, ...]) -> None:
    n, c, h, w = x_shape
    if n and c and not (h and w):
        raise ArgumentError(
            f"Only zero batch or zero channel inputs are supported, but got input shape: {list(x_shape)}"
        )


def _check_float(op: str, input: Tensor, weight: Tensor) -> None:  # noqa: A002
    """After the shape checks, as in PyTorch: the weight's dtype, then minicv's float-only rule."""
    if weight.dtype != input.dtype:
        raise DtypeError(
            f"{op}: expected scalar type {torch_dtype_name(input.dtype)} but found {torch_dtype_name(weight.dtype)}: "
            f"weight is {weight.dtype}, input is {input.dtype}"
        )
    if input.dtype not in FLOAT_DTYPES:
        raise DtypeError(f"{op}: minicv computes in float32 and float64 only, but input and weight are {input.dtype}")


def _apply_batched(fn: Function, input: Tensor, weight: Tensor, bias: Tensor | None,  # noqa: A002
                   pad_end: Pair = (0, 0)) -> Tensor:
    """fn on a batch (a (C, H, W) input runs as a batch of one: ``batched``), after ``pad_end`` zero
    rows/columns at its bottom/right (PyTorch too pads a copy explicitly there for 'same' padding)."""
    def run(x: Tensor) -> Tensor:
        if pad_end != (0, 0):
            x = pad(x, ((0, 0), (0, 0), (0, pad_end[0]), (0, pad_end[1])))
        return fn.apply(x, weight, *([] if bias is None else [bias]))

    return batched(run, input)


# --------------------------------------------------------------------------- conv2d
def _same_padding(kernel_hw: Pair, dilation: Pair) -> tuple[Pair, Pair]:
    """'same' padding as (symmetric padding, extra rows/cols at the bottom/right): per axis the total
    d(k-1) splits as total//2 before and the rest after, so an odd total puts one more at the end."""
    totals = [d * (k - 1) for k, d in zip(kernel_hw, dilation, strict=True)]
    before = (totals[0] // 2, totals[1] // 2)
    return before, (totals[0] - 2 * before[0], totals[1] - 2 * before[1])


def conv2d(
    input: Tensor,  # noqa: A002 (PyTorch's name)
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation: input (N, C_in, H, W) or (C_in, H, W), weight (C_out, C_in/groups, kH, kW),
    bias (C_out,). ``padding`` is an int, a pair, 'valid' or 'same' (stride 1 only; an odd total padding
    d(k-1) puts its extra row/column at the bottom/right, as PyTorch does).
    """
    op = "conv2d"
    _check_operands(op, input, weight, bias)
    x_shape = (1, *input.shape) if input.ndim == 3 else tuple(input.shape)
    stride, dilation = _pair(op, "stride", stride), _pair(op, "dilation", dilation)
    string_padding = isinstance(padding, str)
    if string_padding:
        if padding not in ("valid", "same"):
            raise ArgumentError(f"Invalid padding string: '{padding}': argument 'padding' must be 'valid' or 'same'")
        if padding == "same" and stride != (1, 1):
            raise ArgumentError(f"padding='same' is not supported for strided convolutions: stride={list(stride)}")
    _check_bias_dtype(op, input, bias)
    groups = _check_groups(op, groups)
    padding_mode = padding
    padding = (0, 0) if string_padding else _pair(op, "padding", padding)
    _check_signs(op, stride, padding, dilation)
    _check_weight(op, x_shape, weight, groups, string_padding)
    c_out, c_in_group, kh, kw = weight.shape
    if x_shape[1] != c_in_group * groups:
        raise ArgumentError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{list(x_shape)} to have "
            f"{c_in_group * groups} channels, but got {x_shape[1]} channels instead"
        )
    _check_bias_shape(bias, c_out, f"Given weight of size {list(weight.shape)}")
    extra = (0, 0)
    if padding_mode == "same":
        padding, extra = _same_padding((kh, kw), dilation)
    padded = [size + e + 2 * p for size, e, p in zip(x_shape[2:], extra, padding, strict=True)]
    spans = [d * (k - 1) + 1 for k, d in zip((kh, kw), dilation, strict=True)]
    if any(size < span for size, span in zip(padded, spans, strict=True)):
        raise ArgumentError(
            f"Calculated padded input size per channel: ({padded[0]} x {padded[1]}). Kernel size: ({spans[0]} x "
            f"{spans[1]}). Kernel size can't be greater than actual input size"
        )
    _check_nonempty_planes(x_shape)
    _check_float(op, input, weight)

    out_hw = conv_output_hw(padded, (kh, kw), stride, (0, 0), dilation)  # padded: p and extra are in it
    in_hw = [size + e for size, e in zip(x_shape[2:], extra, strict=True)]  # the input the Function gets
    crop = window_crop(in_hw, (kh, kw), stride, padding, dilation, out_hw)
    if crop is not None:  # the kernels' input: the rows and columns windows read, with padding 0
        padding, padded = (0, 0), list(crop.kernel_in_hw)
    stride = kernel_stride(padded, (kh, kw), stride, (0, 0), dilation)
    return _apply_batched(Conv2dFunction(stride, padding, dilation, groups, out_hw, crop), input, weight, bias,
                          pad_end=extra)


# --------------------------------------------------------------------------- conv_transpose2d
def conv_transpose2d(
    input: Tensor,  # noqa: A002 (PyTorch's name)
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
) -> Tensor:
    """Transposed convolution (the input gradient of conv2d): input (N, C_in, H, W) or (C_in, H, W),
    weight (C_in, C_out/groups, kH, kW), bias (C_out,). Output size per axis
    (H-1)s - 2p + d(k-1) + output_padding + 1; output_padding must be below the stride or the dilation.
    Note PyTorch's positional order: ``groups`` comes before ``dilation``.
    """
    op = "conv_transpose2d"
    _check_operands(op, input, weight, bias)
    x_shape = (1, *input.shape) if input.ndim == 3 else tuple(input.shape)
    if isinstance(padding, str):
        raise TypeError(f"conv_transpose2d(): argument 'padding' must be tuple of ints, not str ({padding!r})")
    stride, padding = _pair(op, "stride", stride), _pair(op, "padding", padding)
    output_padding, dilation = _pair(op, "output_padding", output_padding), _pair(op, "dilation", dilation)
    _check_bias_dtype(op, input, bias)
    groups = _check_groups(op, groups)
    _check_signs(op, stride, padding, dilation, output_padding)
    _check_weight(op, x_shape, weight, groups, string_padding=False)
    c_in, c_out_group, kh, kw = weight.shape
    if x_shape[1] != c_in:
        raise ArgumentError(
            f"Given transposed=1, weight of size {list(weight.shape)}, expected input{list(x_shape)} to have "
            f"{c_in} channels, but got {x_shape[1]} channels instead"
        )
    _check_bias_shape(bias, c_out_group * groups, f"Given transposed=1, weight of size {list(weight.shape)}")
    if c_out_group == 0:
        raise ArgumentError(f"non-empty 2D or 4D weight tensor expected, but got: {list(weight.shape)}")
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation, strict=True)):
        raise ArgumentError(
            "output padding must be smaller than either stride or dilation, but got "
            f"output_padding_height: {output_padding[0]} output_padding_width: {output_padding[1]} "
            f"stride_height: {stride[0]} stride_width: {stride[1]} "
            f"dilation_height: {dilation[0]} dilation_width: {dilation[1]}"
        )
    out_hw = conv_transpose_output_hw(x_shape[2:], (kh, kw), stride, padding, dilation, output_padding)
    if min(out_hw) < 1:
        raise ArgumentError(
            f"Given input size per channel: ({x_shape[2]} x {x_shape[3]}). Calculated output size per channel: "
            f"({out_hw[0]} x {out_hw[1]}). Output size is too small"
        )
    _check_nonempty_planes(x_shape)
    _check_float(op, input, weight)

    stride = kernel_stride(out_hw, (kh, kw), stride, padding, dilation)  # out_hw: the input of its conv2d
    return _apply_batched(ConvTranspose2dFunction(stride, padding, dilation, groups, out_hw), input, weight, bias)
