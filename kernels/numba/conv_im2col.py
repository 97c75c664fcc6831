"""im2col + BLAS: unfold a chunk of output rows into columns ``cols[(ci, kh, kw), pixel]`` (Numba,
parallel over column rows), then one BLAS GEMM per chunk and group: ``y = W @ cols``, ``gW += gy @
cols.T``, ``cols = W.T @ gy`` followed by a col2im scatter-add (parallel over channels, so no races).
Chunks are whole images when they fit in ``CHUNK_BYTES``, else bands of rows, so memory stays bounded.
"""

from collections.abc import Iterator

import numpy as np
from numba import njit

from ._common import Pair, valid_outputs
from .tasks import run_tasks

CHUNK_BYTES = 16 * 2**20  # im2col columns per chunk; well under the 64 MiB bound, and cache-friendlier


@njit(inline="always", cache=True)
def _source_index(o, k, s, p, d, size):
    """Input coordinate ``o*s - p + k*d`` read by output coordinate ``o`` through tap ``k``, or -1 if it
    is padding."""
    i = o * s - p + k * d
    return i if 0 <= i < size else -1


@njit(cache=True)
def _im2col_row(x, k, r0, rows, c0, kernel, stride, padding, dilation, out_hw, cols):
    """cols[k, r*W_out + o_w] = x[b, c0 + ci, i_h, i_w] (0 in the padding), k = (ci, kh, kw), for the
    output rows r0 + r (flat b*H_out + o_h)."""
    _, _, h, w = x.shape
    out_h, out_w = out_hw
    ci, tap = divmod(k, kernel[0] * kernel[1])
    kh, kw = divmod(tap, kernel[1])
    lo, hi = valid_outputs(kw, stride[1], padding[1], dilation[1], w, out_w)
    offset_w = kw * dilation[1] - padding[1]
    for r in range(rows):
        b, o_h = divmod(r0 + r, out_h)
        i_h = _source_index(o_h, kh, stride[0], padding[0], dilation[0], h)
        row = cols[k, r * out_w:(r + 1) * out_w]
        if i_h < 0:
            row[:] = 0
            continue
        row[:lo] = 0
        inside, source = row[lo:hi], x[b, c0 + ci, i_h, lo * stride[1] + offset_w:]
        for q in range(inside.size):  # views from 0: no index wrap-around, so LLVM vectorises
            inside[q] = source[q * stride[1]]
        row[hi:] = 0


@njit(cache=True, error_model="numpy")
def _im2col(first_row, last_row, x, r0, rows, c0, kernel, stride, padding, dilation, out_hw, cols):
    """The rows first_row .. last_row - 1 of cols (_im2col_row)."""
    for k in range(first_row, last_row):
        _im2col_row(x, k, r0, rows, c0, kernel, stride, padding, dilation, out_hw, cols)


@njit(cache=True, error_model="numpy")
def _col2im(first_channel, last_channel, cols, r0, rows, c0, kernel, stride, padding, dilation, out_hw, gx):
    """gx[b, c0 + ci, i_h, i_w] += cols[(ci, kh, kw), r*W_out + o_w], ci in first_channel .. last_channel - 1:
    the adjoint of _im2col_row.

    Parallel over channels: every thread owns whole planes of gx, so the sums never race.
    """
    _, _, h, w = gx.shape
    out_h, out_w = out_hw
    taps = kernel[0] * kernel[1]
    for ci in range(first_channel, last_channel):
        for kh in range(kernel[0]):
            for kw in range(kernel[1]):
                k = ci * taps + kh * kernel[1] + kw
                lo, hi = valid_outputs(kw, stride[1], padding[1], dilation[1], w, out_w)
                offset_w = kw * dilation[1] - padding[1]
                for r in range(rows):
                    b, o_h = divmod(r0 + r, out_h)
                    i_h = _source_index(o_h, kh, stride[0], padding[0], dilation[0], h)
                    if i_h < 0:
                        continue
                    target = gx[b, c0 + ci, i_h, lo * stride[1] + offset_w:]
                    source = cols[k, r * out_w + lo:r * out_w + hi]
                    for q in range(source.size):
                        target[q * stride[1]] += source[q]


@njit(cache=True, error_model="numpy")
def _planes_to_rows(first_channel, last_channel, src, r0, rows, c0, out):
    """out[c, r*W + j] = src[b, c0 + c, o_h, j] for the flat rows r0 + r = b*H + o_h, c in first_channel ..
    last_channel - 1."""
    out_h, out_w = src.shape[2], src.shape[3]
    for c in range(first_channel, last_channel):
        for r in range(rows):
            b, o_h = divmod(r0 + r, out_h)
            out[c, r * out_w:(r + 1) * out_w] = src[b, c0 + c, o_h, :]


@njit(cache=True, error_model="numpy")
def _rows_to_planes(first_channel, last_channel, rows_array, r0, rows, c0, out):
    """The inverse copy of _planes_to_rows."""
    out_h, out_w = out.shape[2], out.shape[3]
    for c in range(first_channel, last_channel):
        for r in range(rows):
            b, o_h = divmod(r0 + r, out_h)
            out[b, c0 + c, o_h, :] = rows_array[c, r * out_w:(r + 1) * out_w]


def _chunks(n: int, out_hw: Pair, depth: int, itemsize: int) -> Iterator[tuple[int, int]]:
    """(first flat output row, row count) of each im2col chunk: whole images if one fits in
    CHUNK_BYTES, else bands of one image."""
    out_h, out_w = out_hw
    rows = max(1, CHUNK_BYTES // max(1, depth * out_w * itemsize))
    if rows >= out_h:
        rows = rows // out_h * out_h
    total = n * out_h
    for r0 in range(0, total, rows):
        yield r0, min(rows, total - r0)


def _rows_view(planes: np.ndarray, r0: int, rows: int, c0: int, count: int) -> np.ndarray | None:
    """planes[b, c0:c0+count] as a (count, H*W) matrix when the chunk is exactly image b, else None."""
    out_h = planes.shape[2]
    if rows != out_h or r0 % out_h:
        return None
    return planes[r0 // out_h, c0:c0 + count].reshape(count, -1)


def _gather_rows(planes: np.ndarray, r0: int, rows: int, c0: int, count: int) -> np.ndarray:
    view = _rows_view(planes, r0, rows, c0, count)
    if view is not None:
        return view
    out = np.empty((count, rows * planes.shape[3]), planes.dtype)
    run_tasks(_planes_to_rows, count, planes, r0, rows, c0, out)
    return out



def _conv_im2col(x: np.ndarray, w: np.ndarray, y: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                 groups: int) -> None:
    """y = conv2d(x, w), every element written."""
    n, (c_out, cg, k_h, k_w), out_hw = x.shape[0], w.shape, y.shape[2:]
    kernel = (k_h, k_w)
    c_out_g = c_out // groups
    depth = cg * k_h * k_w
    weight = w.reshape(groups, c_out_g, depth)
    for r0, rows in _chunks(n, out_hw, depth, x.itemsize):
        cols = np.empty((depth, rows * out_hw[1]), x.dtype)
        for g in range(groups):
            run_tasks(_im2col, depth, x, r0, rows, g * cg, kernel, stride, padding, dilation, out_hw, cols)
            view = _rows_view(y, r0, rows, g * c_out_g, c_out_g)
            if view is not None:
                np.matmul(weight[g], cols, out=view)
            else:
                run_tasks(_rows_to_planes, c_out_g, weight[g] @ cols, r0, rows, g * c_out_g, y)


def _transposed_im2col(gy: np.ndarray, w: np.ndarray, gx: np.ndarray, stride: Pair, padding: Pair,
                       dilation: Pair, groups: int) -> None:
    """gx += conv_transpose2d(gy, w), gx zeroed by the caller: col2im adds into it."""
    n, c_out, out_h, out_w = gy.shape
    _, cg, k_h, k_w = w.shape
    kernel = (k_h, k_w)
    c_out_g = c_out // groups
    depth = cg * k_h * k_w
    weight_t = [np.ascontiguousarray(w_g.T) for w_g in w.reshape(groups, c_out_g, depth)]
    for r0, rows in _chunks(n, (out_h, out_w), depth, gy.itemsize):
        for g in range(groups):
            cols = weight_t[g] @ _gather_rows(gy, r0, rows, g * c_out_g, c_out_g)
            run_tasks(_col2im, cg, cols, r0, rows, g * cg, kernel, stride, padding, dilation, (out_h, out_w), gx)


def _conv_backward_weight_im2col(x: np.ndarray, gy: np.ndarray, w_shape: tuple[int, int, int, int], stride: Pair,
                                 padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """The weight gradient of conv2d(x, w), w of w_shape."""
    n, c_out, out_h, out_w = gy.shape
    _, cg, k_h, k_w = w_shape
    kernel = (k_h, k_w)
    depth = cg * k_h * k_w
    c_out_g = c_out // groups
    gw = np.zeros((c_out, depth), x.dtype)
    for r0, rows in _chunks(n, (out_h, out_w), depth, x.itemsize):
        cols = np.empty((depth, rows * out_w), x.dtype)
        for g in range(groups):
            run_tasks(_im2col, depth, x, r0, rows, g * cg, kernel, stride, padding, dilation, (out_h, out_w),
                      cols)
            gw[g * c_out_g:(g + 1) * c_out_g] += _gather_rows(gy, r0, rows, g * c_out_g, c_out_g) @ cols.T
    return gw.reshape(c_out, cg, k_h, k_w)
