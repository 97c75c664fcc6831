"""Nearest-neighbour resizing (``interpolate`` with mode 'nearest' or 'nearest-exact') on the kernels.

The kernels only copy along two index arrays, one per axis: output row i reads input row src_h[i],
output column j reads input column src_w[j]. Working those arrays out is the whole difference between
the modes, and it is done here, in NumPy, exactly as PyTorch 2.13 does it on the CPU:

    scale = 1 / scale_factor   when a scale factor reaches the kernel (recompute_scale_factor not True)
          = in / out           otherwise
    'nearest':       src = min(floor(dst * scale), in - 1)
    'nearest-exact': src = min(floor((dst + 0.5) * scale), in - 1)

in float32 (float64 on the generic path for float64 input), and with the short-cuts out == in
(identity) and out == 2 * in (dst // 2) of 'nearest' on the small-output 2-D path. 3-D (volumetric)
input runs the 2-D kernels twice, as nearest resizing is separable. Rounding at exact
integer boundaries differs between those choices, so each is reproduced.

The backward is the exact adjoint of this forward (PyTorch's CPU backward always uses the short-cut
indices and so is not, in the rare cases where the forward took the generic path).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from minicv.autograd import Array, Function
from minicv.errors import ArgumentError, UnsupportedError
from minicv.functional import basic
from minicv.functional._checks import check_float_tensor, contiguous
from minicv.tensor import Tensor

SUPPORTED_MODES = ("nearest", "nearest-exact")
_PYTORCH_MODES = "nearest | linear | bilinear | bicubic | trilinear | lanczos | area | nearest-exact"
# PyTorch's CPU kernel takes its short-cut path for 2-D outputs with H_out + W_out at most this.
_SMALL_OUTPUT = 128


def source_indices(in_size: int, out_size: int, scale_factor: float | None, exact: bool,
                   float64: bool, shortcut_path: bool) -> np.ndarray:
    """The input index (int64) each output index along one axis copies from, as PyTorch's CPU kernels.

    scale_factor: the factor the kernel receives (None when the size was given or recomputed).
    float64: the input is float64 (the generic kernel then computes in double).
    shortcut_path: PyTorch's ``nearest_idx`` / ``nearest_exact_idx`` path (2-D, small output).
    """
    dst = np.arange(out_size, dtype=np.int64)
    if shortcut_path and not exact and out_size == in_size:
        return dst
    if shortcut_path and not exact and out_size == 2 * in_size:
        return dst >> 1
    # UpSample.h compute_scales_value: 1/scale in double cast to opmath, else in/out in opmath.
    opmath = np.float64 if float64 and not shortcut_path else np.float32
    if scale_factor is not None and scale_factor > 0:
        scale = opmath(1.0 / scale_factor)
    else:
        scale = opmath(in_size) / opmath(out_size)
    if shortcut_path:
        # floorf(dst * scale) in float; floorf((dst + 0.5) * scale) in double, rounded to float.
        real = (dst + 0.5) * np.float64(scale) if exact else dst.astype(np.float32) * scale
    elif exact:
        # area_pixel_compute_source_index: max(scale * (dst + 0.5) - 0.5, 0) in opmath; then + 0.5 in double.
        real = np.maximum(scale * (dst.astype(opmath) + opmath(0.5)) - opmath(0.5), opmath(0))
        real = real.astype(np.float64) + 0.5
    else:
        real = scale * dst.astype(opmath)
    src = np.floor(real.astype(np.float32)).astype(np.int64)  # floorf: the value is rounded to float first
    return np.minimum(src, in_size - 1)


class UpsampleNearestFunction(Function):
    """y[n, c, i, j] = x[n, c, src_h[i], src_w[j]]; the backward sums gy back onto the sources."""

    def __init__(self, src_h: np.ndarray, src_w: np.ndarray):
        self.src = (src_h, src_w)

    def forward(self, x: Array) -> Array:
        self.one_d = x.ndim == 3  # (N, C, L) runs as (N, C, 1, L)
        x = x[:, :, None] if self.one_d else x
        self.in_hw = x.shape[2:]
        src_h, src_w = (self.xp.asarray(s) for s in self.src)
        self.device_src = src_h, src_w
        if x.size == 0:  # empty batch: nothing to launch
            y = self.xp.zeros((*x.shape[:2], src_h.size, src_w.size), dtype=x.dtype)
        else:
            y = self.kernels.upsample_nearest_forward(contiguous(x), src_h, src_w)
        return y[:, :, 0] if self.one_d else y

    def backward(self, gy: Array) -> Array:
        gy = gy[:, :, None] if self.one_d else gy
        if gy.size == 0:
            gx = self.xp.zeros((*gy.shape[:2], *self.in_hw), dtype=gy.dtype)
        else:
            gx = self.kernels.upsample_nearest_backward(contiguous(gy), *self.device_src, self.in_hw)
        return gx[:, :, 0] if self.one_d else gx


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer))


def _output_size_and_scales(input_shape: tuple[int, ...], size: Any, scale_factor: Any,
                            recompute_scale_factor: bool | None) -> tuple[list[int], list[float] | None]:
    """PyTorch's interpolate argument handling: (output size, the scale factors the kernel receives)."""
    dim = len(input_shape) - 2
    spatial = list(input_shape[2:])
    if size is not None and scale_factor is not None:
        raise ArgumentError("interpolate: only one of size or scale_factor should be defined")
    if size is not None:
        if isinstance(size, (list, tuple)):
            if len(size) != dim:
                raise ArgumentError(
                    "interpolate: Input and output must have the same number of spatial dimensions, but got "
                    f"input with spatial dimensions of {spatial} and output size of {size}. Please provide "
                    "input tensor in (N, C, d1, d2, ...,dK) format and output size in (o1, o2, ...,oK) format."
                )
            sizes = list(size)
        else:
            sizes = [size] * dim
        if not all(_is_integer(s) for s in sizes):
            raise TypeError(
                "interpolate: expected size to be one of int or Tuple[int] or Tuple[int, int] or "
                f"Tuple[int, int, int], but got size with types {[type(s) for s in sizes]}"
            )
        if recompute_scale_factor:
            raise ArgumentError("interpolate: recompute_scale_factor is not meaningful with an explicit size.")
        return [int(s) for s in sizes], None
    if scale_factor is None:
        raise ArgumentError("interpolate: either size or scale_factor should be defined")
    if isinstance(scale_factor, (list, tuple)):
        if len(scale_factor) != dim:
            raise ArgumentError(
                "interpolate: Input and scale_factor must have the same number of spatial dimensions, but got "
                f"input with spatial dimensions of {spatial} and scale_factor of shape {scale_factor}. Please "
                "provide input tensor in (N, C, d1, d2, ...,dK) format and scale_factor in (s1, s2, ...,sK) "
                "format."
            )
        scales = [float(s) for s in scale_factor]
    else:
        scales = [float(scale_factor)] * dim
    for s in scales:
        if not math.isfinite(s):
            raise ArgumentError(f"interpolate: scale_factor must be finite, but got {scale_factor}")
    # floor(in * scale) in double, truncated toward zero as C++ and int() do
    sizes = [int(n * s) for n, s in zip(spatial, scales, strict=True)]
    return sizes, (None if recompute_scale_factor else scales)


def _check_sizes(input_shape: tuple[int, ...], out_sizes: list[int]) -> None:
    """upsample_{1,2}d_common_check: positive input and output sizes, then a non-empty C/H/W."""
    names = ("D", "H", "W")[-len(out_sizes):]
    in_sizes = input_shape[2:]
    if min(*in_sizes, *out_sizes) <= 0:
        shown_in = ", ".join(f"{k}: {v}" for k, v in zip(names, in_sizes, strict=True))
        shown_out = ", ".join(f"{k}: {v}" for k, v in zip(names, out_sizes, strict=True))
        joiner = " and output" if len(out_sizes) == 1 else " output"
        raise ArgumentError(
            f"interpolate: Input and output sizes should be greater than 0, but got input ({shown_in}){joiner} "
            f"({shown_out})"
        )
    if 0 in input_shape[1:]:
        raise ArgumentError(
            f"interpolate: Non-empty {len(input_shape)}D data tensor expected but got a tensor with sizes "
            f"{list(input_shape)}"
        )


def interpolate(
    input: Tensor,  # noqa: A002 (PyTorch's name)
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resize (N, C, L), (N, C, H, W) or (N, C, D, H, W) input to ``size`` or by ``scale_factor``, as
    ``torch.nn.functional.interpolate``, for the modes 'nearest' and 'nearest-exact'.

    'nearest' copies from floor(dst * in / out) (OpenCV's INTER_NEAREST, PyTorch's default);
    'nearest-exact' from floor((dst + 0.5) * in / out) (pixel centres, as PIL and scikit-image).
    Other modes raise UnsupportedError (an ArgumentError and a NotImplementedError).
    """
    check_float_tensor("interpolate", "input", input)
    if mode not in SUPPORTED_MODES:
        raise UnsupportedError(
            f"interpolate: mode={mode!r} is not supported by minicv; supported modes: "
            f"{', '.join(repr(m) for m in SUPPORTED_MODES)}"
        )
    if align_corners is not None:
        raise ArgumentError(
            "interpolate: align_corners option can only be set with the interpolating modes: "
            "linear | bilinear | bicubic | trilinear"
        )
    out_sizes, scales = _output_size_and_scales(input.shape, size, scale_factor, recompute_scale_factor)
    if antialias:
        raise ArgumentError(
            "interpolate: Anti-alias option is restricted to bilinear, bicubic, and lanczos modes and requires "
            "a 4-D tensor as input"
        )
    if input.ndim not in (3, 4, 5):
        raise UnsupportedError(
            f"interpolate: Input Error: Only 3D, 4D and 5D input Tensors supported (got {input.ndim}D) for the modes: "
            f"{_PYTORCH_MODES} (got {mode})"
        )
    _check_sizes(input.shape, out_sizes)
    exact, float64 = mode == "nearest-exact", input.dtype == np.float64
    axis_scales: list[float | None] = [None] * len(out_sizes) if scales is None else list(scales)
    # PyTorch's 1-D and 3-D kernels are always the generic ones; 2-D takes short-cuts for small outputs.
    shortcut = input.ndim == 4 and sum(out_sizes) <= _SMALL_OUTPUT
    src = [source_indices(n, out, s, exact, float64, shortcut)
           for n, out, s in zip(input.shape[2:], out_sizes, axis_scales, strict=True)]
    if input.ndim == 3:
        return UpsampleNearestFunction(np.zeros(1, dtype=np.int64), src[0]).apply(input)
    if input.ndim == 4:
        return UpsampleNearestFunction(*src).apply(input)
    return _upsample_volume(input, *src)


def _upsample_volume(x: Tensor, src_d: np.ndarray, src_h: np.ndarray, src_w: np.ndarray) -> Tensor:
    """(N, C, D, H, W) by the 2-D kernel twice (nearest is separable): every depth slice in (H, W), then
    the depth axis, with each resized (H, W) plane flattened into one row."""
    n, c, d, h, w = x.shape
    planes = UpsampleNearestFunction(src_h, src_w).apply(basic.reshape(x, n, c * d, h, w))
    plane_size = src_h.size * src_w.size
    rows = basic.reshape(planes, n, c, d, plane_size)
    volume = UpsampleNearestFunction(src_d, np.arange(plane_size, dtype=np.int64)).apply(rows)
    return basic.reshape(volume, n, c, src_d.size, src_h.size, src_w.size)
