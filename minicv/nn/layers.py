"""The layers of the lecture's models, with PyTorch's constructor signatures, defaults and reprs.

Each layer holds its weights and settings and calls ``minicv.functional`` in forward; constructors
check their arguments once so that a bad layer fails where it is built, not at its first batch.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import minicv.functional as F
from minicv.devices import Device, get_device
from minicv.errors import ArgumentError
from minicv.functional.conv import conv_transpose2d_output_padding
from minicv.nn import init
from minicv.nn.module import Module, Parameter
from minicv.tensor import Tensor

IntOrPair = int | tuple[int, int]
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum``, as an (h, w) pair."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise TypeError(f"{name} must be an int or a pair of ints, but got {value!r}")
    if any(v < minimum for v in values):
        raise ArgumentError(f"{name} must be at least {minimum}, but got {value!r}")
    return int(values[0]), int(values[1])


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ArgumentError(f"{name} must be a positive integer, but got {value!r}")
    return int(value)


def _dtype(dtype: Any) -> np.dtype:
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"layers hold float32 or float64 parameters, but got dtype {dtype}")
    return dtype


def _empty_parameter(shape: tuple[int, ...], device: str | Device | None, dtype: Any) -> Parameter:
    return Parameter(Tensor(get_device(device).xp.zeros(shape, dtype=_dtype(dtype)), device=device))


def _add_weight_and_bias(layer: Module, weight_shape: tuple[int, ...], bias_size: int, bias: bool,
                         device: str | Device | None, dtype: Any) -> None:
    """A Linear or Conv layer's weight, and its bias (or a registered None), initialised by reset_parameters."""
    layer.weight = _empty_parameter(weight_shape, device, dtype)
    if bias:
        layer.bias = _empty_parameter((bias_size,), device, dtype)
    else:
        layer.register_parameter("bias", None)
    layer.reset_parameters()


def _reset_weight_and_bias(layer: Module) -> None:
    """PyTorch's default for Linear and Conv: kaiming_uniform_(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) biases."""
    init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        init.fan_in_uniform_(layer.bias, init.calculate_fan_in_and_fan_out(layer.weight)[0])


# --------------------------------------------------------------------------- convolutions
class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: channels, hyper-parameters, weights and their init."""

    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair,
                 padding: IntOrPair | str, dilation: IntOrPair, groups: int, bias: bool, padding_mode: str,
                 device: str | Device | None, dtype: Any, output_padding: IntOrPair = 0):
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups <= 0:
            raise ArgumentError("groups must be a positive integer")
        in_channels = _positive_int("in_channels", in_channels)
        out_channels = _positive_int("out_channels", out_channels)
        if in_channels % groups:
            raise ArgumentError("in_channels must be divisible by groups")
        if out_channels % groups:
            raise ArgumentError("out_channels must be divisible by groups")
        self.kernel_size, self.stride = _pair("kernel_size", kernel_size, 1), _pair("stride", stride, 1)
        self.dilation = _pair("dilation", dilation, 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ArgumentError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and self.stride != (1, 1):
                raise ArgumentError("padding='same' is not supported for strided convolutions")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = _pair("padding", padding, 0)
        if padding_mode not in PADDING_MODES:
            raise ArgumentError(
                f"padding_mode must be one of {{'zeros', 'reflect', 'replicate', 'circular'}}, "
                f"but got padding_mode={padding_mode!r}"
            )
        if padding_mode != "zeros":
            raise ArgumentError(f"padding_mode={padding_mode!r} is not supported by minicv: only 'zeros'")
        self.output_padding = _pair("output_padding", output_padding, 0)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, int(groups)
        self.padding_mode = padding_mode
        shape = ((in_channels, out_channels // groups) if self.transposed
                 else (out_channels, in_channels // groups)) + self.kernel_size
        _add_weight_and_bias(self, shape, out_channels, bias, device, dtype)

    def reset_parameters(self) -> None:
        _reset_weight_and_bias(self)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
    """2-D convolution: (N, C_in, H, W) -> (N, C_out, H_out, W_out); weight (C_out, C_in/groups, kH, kW)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: IntOrPair | str = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: str | Device | None = None, dtype: Any = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose2d(_ConvNd):
    """Transposed convolution (conv2d's input gradient as a layer); weight (C_in, C_out/groups, kH, kW).
    ``forward(x, output_size)`` picks the output_padding that gives that size, as PyTorch does."""

    transposed = True
    padding: tuple[int, int]  # never a string: __init__ refuses one

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: IntOrPair = 0, output_padding: IntOrPair = 0, groups: int = 1, bias: bool = True,
                 dilation: IntOrPair = 1, padding_mode: str = "zeros", device: str | Device | None = None,
                 dtype: Any = None):
        if padding_mode != "zeros":
            raise ArgumentError('Only "zeros" padding mode is supported for ConvTranspose2d')
        if isinstance(padding, str):
            raise TypeError(f"ConvTranspose2d: padding must be an int or a pair of ints, not {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype, output_padding)
        if any(o >= s and o >= d for o, s, d in zip(self.output_padding, self.stride, self.dilation, strict=True)):
            raise ArgumentError(
                f"output_padding {self.output_padding} must be smaller than either stride {self.stride} "
                f"or dilation {self.dilation}"
            )

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:  # noqa: A002
        output_padding = self.output_padding
        if output_size is not None:
            output_padding = conv_transpose2d_output_padding(
                input.shape, output_size, self.stride, self.padding, self.kernel_size, self.dilation
            )
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                  self.groups, self.dilation)


# --------------------------------------------------------------------------- pooling and resizing
class MaxPool2d(Module):
    """Max pooling; with ``return_indices`` forward also returns the argmax offsets MaxUnpool2d takes."""

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
                 dilation: IntOrPair = 1, return_indices: bool = False, ceil_mode: bool = False):
        super().__init__()
        _pair("kernel_size", kernel_size, 1)
        _pair("padding", padding, 0)
        _pair("dilation", dilation, 1)
        if stride is not None:
            _pair("stride", stride, 1)
        self.kernel_size, self.stride = kernel_size, kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = bool(return_indices), bool(ceil_mode)

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:  # noqa: A002
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxUnpool2d(Module):
    """The partial inverse of MaxPool2d: ``forward(x, indices, output_size=None)``."""

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0):
        super().__init__()
        self.kernel_size = _pair("kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _pair("stride", stride, 1)
        self.padding = _pair("padding", padding, 0)

    def forward(self, input: Tensor, indices: Tensor, output_size: Sequence[int] | None = None) -> Tensor:  # noqa: A002
        return F.max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Upsample(Module):
    """Resize by ``size`` or ``scale_factor`` (modes 'nearest' and 'nearest-exact')."""

    def __init__(self, size: int | tuple[int, ...] | None = None, scale_factor: float | tuple[float, ...] | None = None,
                 mode: str = "nearest", align_corners: bool | None = None,
                 recompute_scale_factor: bool | None = None):
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ArgumentError(
                "either size or scale_factor should be defined" if size is None
                else "only one of size or scale_factor should be defined"
            )
        self.size = size
        if isinstance(scale_factor, (tuple, list)):
            self.scale_factor: Any = tuple(float(s) for s in scale_factor)
        else:
            self.scale_factor = None if scale_factor is None else float(scale_factor)
        self.mode, self.align_corners, self.recompute_scale_factor = mode, align_corners, recompute_scale_factor

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self) -> str:
        what = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{what}, mode={self.mode!r}"


# --------------------------------------------------------------------------- the rest
class ReLU(Module):
    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace  # accepted for PyTorch's signature; minicv never modifies in place

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.relu(input)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel. Training normalises by the batch's statistics
    and updates the running ones (momentum=None: a cumulative average); eval uses the running ones."""

    _functional = staticmethod(F.batch_norm)  # what forward normalises with: BatchNormReLU2d's differs

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: str | Device | None = None, dtype: Any = None, *,
                 bias: bool = True):
        super().__init__()
        self.num_features = _positive_int("num_features", num_features)
        self.eps, self.momentum, self.affine = eps, momentum, affine
        self.track_running_stats = track_running_stats
        self.has_bias = affine and bias
        if affine:
            self.weight = init.ones_(_empty_parameter((num_features,), device, dtype))
        else:
            self.register_parameter("weight", None)
        if self.has_bias:
            self.bias = init.zeros_(_empty_parameter((num_features,), device, dtype))
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            dev, float_dtype = get_device(device), _dtype(dtype)
            self.register_buffer("running_mean", Tensor(dev.xp.zeros(num_features, float_dtype), device=dev))
            self.register_buffer("running_var", Tensor(dev.xp.ones(num_features, float_dtype), device=dev))
            self.register_buffer("num_batches_tracked", Tensor(dev.xp.zeros((), np.int64), device=dev))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        if input.ndim != 4:
            raise ArgumentError(f"expected 4D input (got {input.ndim}D input)")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data = self.num_batches_tracked.data + 1
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or not self.track_running_stats
        return self._functional(input, self.running_mean, self.running_var, self.weight, self.bias,
                                use_batch_stats, momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.has_bias}, track_running_stats={self.track_running_stats}")


class BatchNormReLU2d(BatchNorm2d):
    """BatchNorm2d then ReLU in one layer (F.batch_norm_relu): the ReLU is folded into the batch-norm
    kernels, which write y and read gy anyway, instead of a pass over the activations of its own each way
    (a ReLU apart took 14% of a segmenter's training step on numba). The same arguments, parameters and
    buffers as BatchNorm2d, so the same state-dict keys: a checkpoint of BatchNorm2d then ReLU loads."""

    _functional = staticmethod(F.batch_norm_relu)


class Linear(Module):
    """y = x W^T + b with W (out_features, in_features), PyTorch's init."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: str | Device | None = None,
                 dtype: Any = None):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        _add_weight_and_bias(self, (out_features, in_features), out_features, bias, device, dtype)

    def reset_parameters(self) -> None:
        _reset_weight_and_bias(self)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Sequential(Module):
    """Modules applied in order: ``Sequential(a, b)`` or ``Sequential(OrderedDict(name=module, ...))``."""

    def __init__(self, *modules: Module | OrderedDict[str, Module]):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, layer in enumerate(modules):
                self.add_module(str(i), layer)  # type: ignore[arg-type]  # an OrderedDict among others: a TypeError

    def forward(self, input: Any) -> Any:  # noqa: A002
        for module in self:
            input = module(input)  # noqa: A001
        return input

    def __getitem__(self, index: int | slice) -> Module:
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        if not -len(items) <= index < len(items):
            raise IndexError(f"index {index} is out of range")
        return items[index][1]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self
