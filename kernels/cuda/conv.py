"""2-D convolution on the kernels of conv.cu: forward, input gradient and weight gradient as implicit GEMMs.

Each function takes the backend (its array module ``xp`` and its ``kernel(file, name)`` launcher) first,
then the arguments of the kernel table (kernels/__init__.py). For one group of channels:

    forward          y  (C_out/G) x (N*H_out*W_out)     = w (C_out/G) x (C_in/G*kH*kW)  @ im2col(x)
    backward-input   gx (C_in/G)  x (N*H*W)             = w^T                           @ gather(gy)
    backward-weight  gw (C_out/G) x (C_in/G*kH*kW)      = gy (C_out/G) x (N*H_out*W_out) @ im2col(x)^T

The GEMM operands are never built: the kernels read x, w and gy through index arithmetic (see
docs/kernels/conv.md). The checks here are the ones that keep the kernels inside their buffers.
"""

import math
from typing import Any

import numpy as np

from .launch import Backend, ctype, launch_elements

Array = Any  # numpy.ndarray or cupy.ndarray
Pair = tuple[int, int]
Shape4 = tuple[int, int, int, int]

# The launch geometry of conv.cu (TILE_M, TILE_N, BLOCK_X x BLOCK_Y there).
TILE_M = 64
TILE_N = 64
TILE_K = 16
BLOCK = (16, 16, 1)
# backward-weight splits its reduction over (n, oh, ow) until about this many blocks run ...
TARGET_BLOCKS = 264  # two per SM of an H100
# ... but gives each split at least this many pixels of the reduction, and stays within grid.z.
MIN_SPLIT_DEPTH = 256
MAX_GRID_Z = 65535

_INT32_MAX = np.iinfo(np.int32).max


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def conv2d_output_hw(in_hw: Pair, kernel_hw: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Pair:
    """(H_out, W_out) = (H + 2p - d(k - 1) - 1) // s + 1 per dimension."""
    h, w = (
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(in_hw, kernel_hw, stride, padding, dilation, strict=True)
    )
    return h, w


def _conv_args(x_shape: Shape4, w_shape: Shape4, y_shape: Shape4, stride: Pair, padding: Pair,
               dilation: Pair, groups: int) -> tuple:
    """The CONV_PARAMS of conv.cu as np.int32, after the checks that keep the kernels in bounds."""
    n, c_in, h, w = x_shape
    c_out, c_in_group, kh, kw = w_shape
    if groups < 1 or c_out % groups or c_in_group * groups != c_in:
        raise ValueError(f"conv kernels: w of shape {tuple(w_shape)} and groups={groups} do not fit x of "
                         f"shape {tuple(x_shape)}")
    if tuple(y_shape[:2]) != (n, c_out):
        raise ValueError(f"conv kernels: gradient of shape {tuple(y_shape)} does not fit x of shape "
                         f"{tuple(x_shape)} and w of shape {tuple(w_shape)}")
    if min(*stride, *dilation) < 1:
        raise ValueError(f"conv kernels: stride {stride} and dilation {dilation} must be positive")
    # Every GEMM index (a pixel of the batch, a tap of a filter) is an int in conv.cu, and so are the
    # ends of the weight gradient's splits, which reach up to k_splits * TILE_K past the last pixel.
    largest = max(n * h * w, math.prod(y_shape[:1] + y_shape[2:]), c_in * kh * kw, c_out * kh * kw)
    if largest > _INT32_MAX - MAX_GRID_Z * TILE_K:
        raise ValueError(f"conv kernels: x {tuple(x_shape)}, w {tuple(w_shape)}, y {tuple(y_shape)} exceed "
                         "the int32 indexing of conv.cu")
    return tuple(np.int32(v) for v in (n, c_in, h, w, c_out, *y_shape[2:], kh, kw, *stride, *padding,
                                       *dilation, groups))


def _operands(backend: Backend, a: Array, b: Array) -> tuple[Array, Array, str]:
    """a and b C-contiguous, and the C name of their (common, float) dtype."""
    if a.dtype != b.dtype:
        raise TypeError(f"conv kernels: operands of one dtype expected, got {a.dtype} and {b.dtype}")
    return backend.xp.ascontiguousarray(a), backend.xp.ascontiguousarray(b), ctype(a.dtype)


def _gemm_grid(rows: int, columns: int, depth: int) -> tuple[int, int, int]:
    """Blocks of TILE_M x TILE_N along (columns, rows), `depth` (groups, splits) along z."""
    grid = (_ceil_div(columns, TILE_N), _ceil_div(rows, TILE_M), depth)
    if grid[0] > _INT32_MAX or max(grid[1:]) > MAX_GRID_Z:
        raise ValueError(f"conv kernels: a grid of {grid} blocks exceeds CUDA's limits")
    return grid


def conv2d_forward(backend: Backend, x: Array, w: Array, stride: Pair, padding: Pair, dilation: Pair,
                   groups: int) -> Array:
    """y = conv2d(x, w): cross-correlation with zero padding, no bias."""
    x, w, t = _operands(backend, x, w)
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    y_shape = (n, c_out, *conv2d_output_hw((h, wd), (kh, kw), stride, padding, dilation))
    args = _conv_args(x.shape, w.shape, y_shape, stride, padding, dilation, groups)
    y = backend.xp.empty(y_shape, dtype=x.dtype)
    if y.size:
        kernel = backend.kernel("conv.cu", f"conv2d_forward_kernel<{t}>")
        kernel(_gemm_grid(c_out // groups, n * y.shape[2] * y.shape[3], groups), BLOCK, (x, w, y, *args))
    return y


def conv2d_backward_input(backend: Backend, gy: Array, w: Array, x_shape: Shape4, stride: Pair,
                          padding: Pair, dilation: Pair, groups: int) -> Array:
    """gx = d(sum(gy * conv2d(x, w))) / dx, of shape x_shape: for every pixel of x, a gather over the
    (co, kh, kw) that saw it. Also the forward of conv_transpose2d (x_shape carries output_padding)."""
    gy, w, t = _operands(backend, gy, w)
    n, c_in, h, wd = x_shape
    args = _conv_args(x_shape, w.shape, gy.shape, stride, padding, dilation, groups)
    gx = backend.xp.empty(tuple(x_shape), dtype=gy.dtype)
    if gx.size:
        kernel = backend.kernel("conv.cu", f"conv2d_backward_input_kernel<{t}>")
        kernel(_gemm_grid(c_in // groups, n * h * wd, groups), BLOCK, (gy, w, gx, *args))
    return gx


def conv2d_backward_weight(backend: Backend, x: Array, gy: Array, w_shape: Shape4, stride: Pair,
                           padding: Pair, dilation: Pair, groups: int, k_splits: int | None = None) -> Array:
    """gw = d(sum(gy * conv2d(x, w))) / dw, of shape w_shape.

    The reduction over the N*H_out*W_out output pixels is split over k_splits blocks per tile of gw
    (chosen to fill the GPU when None); the partial sums go to a workspace and are added in split order,
    so the result is deterministic.
    """
    x, gy, t = _operands(backend, x, gy)
    xp = backend.xp
    c_out, c_in_group, kh, kw = w_shape
    args = _conv_args(x.shape, w_shape, gy.shape, stride, padding, dilation, groups)
    gw = xp.empty(tuple(w_shape), dtype=x.dtype)
    if not gw.size:
        return gw
    taps, pixels = c_in_group * kh * kw, gy.shape[0] * gy.shape[2] * gy.shape[3]
    grid = _gemm_grid(c_out // groups, taps, groups)
    if k_splits is None:
        k_splits = min(_ceil_div(TARGET_BLOCKS, math.prod(grid)), _ceil_div(pixels, MIN_SPLIT_DEPTH))
    k_splits = max(1, min(k_splits, MAX_GRID_Z // groups))
    partial = gw if k_splits == 1 else xp.empty((k_splits, *gw.shape), dtype=gw.dtype)
    kernel = backend.kernel("conv.cu", f"conv2d_backward_weight_kernel<{t}>")
    kernel(grid[:2] + (groups * k_splits,), BLOCK, (x, gy, partial, *args, np.int32(k_splits)))
    if k_splits > 1:
        launch_elements(backend, "conv.cu", f"sum_k_splits_kernel<{t}>", gw.size,
                        (partial, gw, np.int64(gw.size), np.int32(k_splits)))
    return gw
