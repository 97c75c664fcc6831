"""Max pooling with argmax indices, and the index scatter/gather of max unpooling, on the CPU.

Every kernel runs one (n, c) plane per task (parallel over planes): planes never share output, so the
scatter-add of the max-pool backward needs no atomics and stays deterministic. The unpool kernels check
every index against the plane inside the loop, skip the bad ones and report the first; the Python side
raises PyTorch's IndexError.
"""

import numpy as np
from numba import njit

from . import simd
from ._common import valid_outputs
from .simd import SHORT_BYTES, VECTOR_BYTES
from .tasks import run_tasks

Pair = tuple[int, int]


@njit(cache=True, error_model="numpy")
def _max_pool(first_plane, last_plane, x, kernel, stride, padding, dilation, y, indices):
    """y and indices of the planes (b, ch) = divmod(plane, C), plane in first_plane .. last_plane - 1, any
    window; x, y and indices C-contiguous."""
    c = x.shape[1]
    out_w = y.shape[3]
    first_w = np.empty(out_w, np.int64)  # first in-bounds column of each window: the same on every row
    for o_w in range(out_w):
        first_w[o_w] = _first_inside(o_w, stride[1], padding[1], dilation[1])
    for plane in range(first_plane, last_plane):
        b, ch = divmod(plane, c)
        _max_pool_plane(x[b, ch], kernel, stride, padding, dilation, first_w, y[b, ch], indices[b, ch])


@njit(cache=True, error_model="numpy")
def _max_pool_2x2(first_plane, last_plane, x, w, plane_size, y, indices, out_h, out_w):
    """2x2 windows side by side, in flat x, y and indices (planes of plane_size, rows of w; out_h rows of
    out_w outputs): output (o_h, q) is the maximum of x[2 o_h + kh, 2 q + kw] by PyTorch's rule, taken
    in row-major order. Rows run in vectors (_rows_by_vectors) of VECTOR_BYTES or, when they are
    narrower than that, SHORT_BYTES; narrower still, or on planes whose indices x's dtype does not
    hold exactly (float32: over 2^24 pixels), in scalars.

    Explicit vectors, because LLVM vectorised the scalar loop only on rows of 24 outputs and more (its
    run-time overlap checks made shorter rows not pay, on AVX2); the scalar loop's selects became
    branches, mispredicted on real data: 15 ns an output instead of ~1, a 32 x 32 plane's pool 5x as
    long as a 64 x 64 one's. Each helper runs every plane of the task: arrays handed to a function
    cost reference counts (atomic), ~70 cycles a call, more than a short row's arithmetic."""
    exact = x.itemsize == 8 or plane_size <= 2**24
    if exact and out_w >= VECTOR_BYTES // x.itemsize:
        _rows_by_vectors(first_plane, last_plane, x, w, plane_size, y, indices, out_h, out_w,
                         _window_constants(x, w, VECTOR_BYTES))
    elif exact and out_w >= SHORT_BYTES // x.itemsize:
        _rows_by_vectors(first_plane, last_plane, x, w, plane_size, y, indices, out_h, out_w,
                         _window_constants(x, w, SHORT_BYTES))
    else:
        for plane in range(first_plane, last_plane):
            for o_h in range(out_h):
                top, out = plane * plane_size + 2 * o_h * w, (plane * out_h + o_h) * out_w
                for q in range(out_w):
                    value, at = x[top + 2 * q], 0
                    for t in range(1, 4):
                        offset = t // 2 * w + t % 2
                        candidate = x[top + 2 * q + offset]
                        take = (candidate > value) | (candidate != candidate)
                        value, at = (candidate, offset) if take else (value, at)
                    y[out + q] = value
                    indices[out + q] = 2 * o_h * w + 2 * q + at


@njit(inline="always", cache=True)
def _window_constants(x, w, nbytes):
    """Vectors of nbytes (a compile-time constant) in x's dtype: each lane's 2q from the first output of
    its vector, and the offsets in the plane of a 2x2 window's taps, in the order they are taken."""
    columns = np.arange(0, 2 * nbytes // x.itemsize, 2).astype(x.dtype)
    return (simd.load_width(columns, 0, nbytes), simd.splat(x.dtype.type(0), nbytes),
            simd.splat(x.dtype.type(1), nbytes), simd.splat(x.dtype.type(w), nbytes),
            simd.splat(x.dtype.type(w + 1), nbytes))


@njit(inline="always", cache=True)
def _rows_by_vectors(first_plane, last_plane, x, w, plane_size, y, indices, out_h, out_w, constants):
    """_max_pool_2x2 in vectors of _window_constants' width (rows of out_w >= its lanes): each window's
    two columns deinterleaved from two loads of each of its rows, the taps through take_greater_or_nan
    carrying their offsets in the plane, the index (2 o_h w + 2q + offset) summed in x's dtype (exact:
    the caller checks) and stored as int64. A row's last vector ends at its end, overlapping the one
    before it."""
    columns, top_left, top_right, bottom_left, bottom_right = constants
    lanes = simd.lanes(columns)
    for plane in range(first_plane, last_plane):
        for o_h in range(out_h):
            top, out = plane * plane_size + 2 * o_h * w, (plane * out_h + o_h) * out_w
            q = 0
            while q < out_w:
                q = min(q, out_w - lanes)
                t0, t1 = simd.deinterleave(simd.load_width(x, top + 2 * q, columns),
                                           simd.load_width(x, top + 2 * q + lanes, columns))
                b0, b1 = simd.deinterleave(simd.load_width(x, top + w + 2 * q, columns),
                                           simd.load_width(x, top + w + 2 * q + lanes, columns))
                value, at = simd.take_greater_or_nan(t1, t0, top_right, top_left)
                value, at = simd.take_greater_or_nan(b0, value, bottom_left, at)
                value, at = simd.take_greater_or_nan(b1, value, bottom_right, at)
                simd.store(y, out + q, value)
                start = simd.splat(x.dtype.type(2 * (o_h * w + q)), columns)
                simd.store_int64(indices, out + q, simd.add(simd.add(at, start), columns))
                q += lanes


@njit(cache=True)
def _max_pool_plane(x, kernel, stride, padding, dilation, first_w, y, indices):
    """Row by row: each tap of the window updates a whole output row, so the inner loop runs along o_w
    (vectorised) while every output still sees its taps in row-major order."""
    h, w = x.shape
    out_h, out_w = y.shape
    for o_h in range(out_h):
        best = y[o_h]
        where = indices[o_h]
        first_h = _first_inside(o_h, stride[0], padding[0], dilation[0])
        for o_w in range(out_w):
            best[o_w] = -np.inf  # the first in-bounds tap is the maximum until one is greater
            where[o_w] = first_h * w + first_w[o_w]
        for kh in range(kernel[0]):
            i_h = o_h * stride[0] - padding[0] + kh * dilation[0]
            if i_h < 0 or i_h >= h:
                continue
            for kw in range(kernel[1]):
                lo, hi = valid_outputs(kw, stride[1], padding[1], dilation[1], w, out_w)
                first = lo * stride[1] + kw * dilation[1] - padding[1]  # input column of output lo
                taps, run, run_where = x[i_h, first:], best[lo:hi], where[lo:hi]
                # literal steps for the common strides: LLVM then loads with shuffles, not gathers (2x)
                if stride[1] == 1:
                    _update_row(taps, run, run_where, 1, i_h * w + first)
                elif stride[1] == 2:
                    _update_row(taps, run, run_where, 2, i_h * w + first)
                else:
                    _update_row(taps, run, run_where, stride[1], i_h * w + first)


@njit(inline="always", cache=True)
def _update_row(taps, best, where, step, first_index):
    """One tap over a run of outputs: output q reads taps[q * step]. Views starting at the run and an
    index from 0 let LLVM vectorise (it does not with offsets inside the subscripts)."""
    for q in range(best.size):
        value = taps[q * step]
        # PyTorch's rule: strictly greater (first max wins) or NaN (last NaN wins)
        take = (value > best[q]) | (value != value)
        best[q] = value if take else best[q]
        where[q] = first_index + q * step if take else where[q]


@njit(inline="always", cache=True)
def _first_inside(o, s, p, d):
    """The first input coordinate >= 0 among the taps o*s - p + k*d of window o."""
    start = o * s - p
    return start if start >= 0 else start + (-start + d - 1) // d * d


@njit(cache=True, error_model="numpy")
def _unpool_scatter(first_plane, last_plane, values, indices, out, accumulate, bad_found, bad_index):
    """out[plane].flat[indices] = (or +=) values, plane by plane from first_plane to last_plane - 1; bad
    indices are skipped and the first of each plane recorded."""
    size = out.shape[1]
    for plane in range(first_plane, last_plane):
        out[plane, :] = 0
        for i in range(values.shape[1]):
            j = indices[plane, i]
            if 0 <= j < size:
                if accumulate:
                    out[plane, j] += values[plane, i]
                else:
                    out[plane, j] = values[plane, i]
            elif not bad_found[plane]:
                bad_found[plane] = True
                bad_index[plane] = j


@njit(cache=True, error_model="numpy")
def _unpool_gather(first_plane, last_plane, g, indices, out, bad_found, bad_index):
    """out[plane, i] = g[plane, indices[plane, i]] for the planes first_plane .. last_plane - 1; a bad index
    reads nothing (gives 0) and is recorded."""
    size = g.shape[1]
    for plane in range(first_plane, last_plane):
        for i in range(out.shape[1]):
            j = indices[plane, i]
            if 0 <= j < size:
                out[plane, i] = g[plane, j]
            else:
                out[plane, i] = 0
                if not bad_found[plane]:
                    bad_found[plane] = True
                    bad_index[plane] = j


def _raise_first_bad(bad_found: np.ndarray, bad_index: np.ndarray, plane_hw: Pair) -> None:
    if bad_found.any():
        first = int(bad_index[np.argmax(bad_found)])
        raise IndexError(
            f"Found an invalid max index: {first} (output volumes are of size {plane_hw[0]}x{plane_hw[1]})")


def _as_planes(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0] * a.shape[1], -1)


def max_pool2d_forward(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair,
                       out_hw: Pair) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x)  # the kernel reads it flat
    y = np.empty((*x.shape[:2], *out_hw), x.dtype)
    indices = np.empty(y.shape, np.int64)
    planes = x.shape[0] * x.shape[1]
    # 2x2 windows tiling the plane side by side (stride 2, no padding or dilation, all inside), the common
    # pool, have a kernel of their own, so that a run of such pools never compiles the general one
    if (kernel_size == stride == (2, 2) and padding == (0, 0) and dilation == (1, 1) and 2 * out_hw[0] <= x.shape[2]
            and 2 * out_hw[1] <= x.shape[3]):
        run_tasks(_max_pool_2x2, planes, x.reshape(-1), x.shape[3], x.shape[2] * x.shape[3], y.reshape(-1),
                  indices.reshape(-1), *out_hw)
    else:
        run_tasks(_max_pool, planes, x, kernel_size, stride, padding, dilation, y, indices)
    return y, indices


def unpool_scatter(values: np.ndarray, indices: np.ndarray, out_hw: Pair,
                   pool: tuple[Pair, Pair, Pair, Pair] | None = None) -> np.ndarray:
    n, c = values.shape[:2]
    out = np.empty((n, c, *out_hw), values.dtype)
    planes = n * c
    bad_found = np.zeros(planes, np.bool_)
    bad_index = np.zeros(planes, np.int64)
    # pool given: max-pool backward, duplicates (overlapping windows) add up
    run_tasks(_unpool_scatter, planes, _as_planes(values), _as_planes(indices), out.reshape(planes, -1),
              pool is not None, bad_found, bad_index)
    _raise_first_bad(bad_found, bad_index, out_hw)
    return out


def unpool_gather(g: np.ndarray, indices: np.ndarray) -> np.ndarray:
    n, c = indices.shape[:2]
    out = np.empty(indices.shape, g.dtype)
    planes = n * c
    bad_found = np.zeros(planes, np.bool_)
    bad_index = np.zeros(planes, np.int64)
    run_tasks(_unpool_gather, planes, _as_planes(g), _as_planes(indices), out.reshape(planes, -1), bad_found,
              bad_index)
    _raise_first_bad(bad_found, bad_index, g.shape[2:])
    return out
