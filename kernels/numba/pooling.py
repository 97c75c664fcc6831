"""Max pooling with argmax indices, and the index scatter/gather of max unpooling, on the CPU.

Every kernel runs one (n, c) plane per task (parallel over planes): planes never share output, so the
scatter-add of the max-pool backward needs no atomics and stays deterministic. The unpool kernels check
every index against the plane inside the loop, skip the bad ones and report the first; the Python side
raises PyTorch's IndexError.
"""

import numpy as np
from numba import njit

from ._common import valid_outputs
from .tasks import run_tasks

Pair = tuple[int, int]


@njit(cache=True, error_model="numpy")
def _max_pool(first_plane, last_plane, x, kernel, stride, padding, dilation, y, indices):
    """y and indices of the planes (b, ch) = divmod(plane, C), plane in first_plane .. last_plane - 1."""
    c = x.shape[1]
    first_w = np.empty(y.shape[3], np.int64)  # first in-bounds column of each window: the same on every row
    for o_w in range(first_w.size):
        first_w[o_w] = _first_inside(o_w, stride[1], padding[1], dilation[1])
    out_h, out_w = y.shape[2:]
    # windows tiling the plane side by side (stride = kernel, no padding or dilation, all inside): the
    # common 2x2 pool gets a path that reads each window whole, with the kernel size a literal
    tiled = (kernel == stride and padding == (0, 0) and dilation == (1, 1)
             and out_h * kernel[0] <= x.shape[2] and out_w * kernel[1] <= x.shape[3])
    for plane in range(first_plane, last_plane):
        b, ch = divmod(plane, c)
        if tiled and kernel == (2, 2):
            _max_pool_plane_tiled(x[b, ch], 2, 2, first_w, y[b, ch], indices[b, ch])
        else:
            _max_pool_plane(x[b, ch], kernel, stride, padding, dilation, first_w, y[b, ch], indices[b, ch])


@njit(inline="always", cache=True)
def _max_pool_plane_tiled(x, k_h, k_w, first_w, y, indices):
    """Windows side by side: output (o_h, q) reads x[o_h*k_h + kh, q*k_w + kw], first_w[q] = q*k_w. Each
    output runs through its whole window in row-major order (a vector of outputs at a time: the window
    loops are unrolled when k_h, k_w are literals), with the same rule as the general path. The index
    picks the winning tap's offset in the window, the same for every q, and adds the window's first
    column once, loaded from first_w: AVX2 code had built a vector of q * k_w from scalars at every
    step (9-11% slower on AVX2 and AVX-512 alike)."""
    w = x.shape[1]
    for o_h in range(y.shape[0]):
        rows, best, where = x[o_h * k_h:], y[o_h], indices[o_h]
        top = o_h * k_h * w
        for q in range(best.size):
            # the first tap is the maximum until another is greater (or NaN): PyTorch's rule
            value_max, at = rows[0, q * k_w], top
            for tap in range(1, k_h * k_w):
                kh, kw = divmod(tap, k_w)
                value = rows[kh, q * k_w + kw]
                take = (value > value_max) | (value != value)
                value_max = value if take else value_max
                at = top + kh * w + kw if take else at
            best[q] = value_max
            where[q] = at + first_w[q]


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
    y = np.empty((*x.shape[:2], *out_hw), x.dtype)
    indices = np.empty(y.shape, np.int64)
    run_tasks(_max_pool, x.shape[0] * x.shape[1], x, kernel_size, stride, padding, dilation, y, indices)
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
