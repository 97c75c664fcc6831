"""Max pooling with argmax indices, and the index scatter/gather of max unpooling, on the CPU.

Every kernel runs one (n, c) plane per task (parallel over planes): planes never share output, so the
scatter-add of the max-pool backward needs no atomics and stays deterministic. The unpool kernels check
every index against the plane inside the loop, skip the bad ones and report the first; the Python side
raises PyTorch's IndexError.
"""

import numpy as np
from numba import njit, prange

from ._common import valid_outputs

Pair = tuple[int, int]


@njit(parallel=True, cache=True)
def _max_pool(x, kernel, stride, padding, dilation, y, indices):
    """Row by row: every tap of the window updates a whole output row, so the inner loop runs along o_w
    (vectorisable) while each output still sees its taps in row-major order."""
    n, c, h, w = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    for plane in prange(n * c):
        b, ch = divmod(np.int64(plane), c)
        best = np.empty(out_w, x.dtype)
        where = np.empty(out_w, np.int64)
        for o_h in range(out_h):
            best[:] = -np.inf
            where[:] = -1  # "no tap yet": the first in-bounds tap is always taken
            for kh in range(kernel[0]):
                i_h = o_h * stride[0] - padding[0] + kh * dilation[0]
                if i_h < 0 or i_h >= h:
                    continue
                for kw in range(kernel[1]):
                    lo, hi = valid_outputs(kw, stride[1], padding[1], dilation[1], w, out_w)
                    offset_w = kw * dilation[1] - padding[1]
                    for o_w in range(lo, hi):
                        i_w = o_w * stride[1] + offset_w
                        value = x[b, ch, i_h, i_w]
                        # PyTorch's rule: strictly greater (first max wins) or NaN (last NaN wins)
                        take = value > best[o_w] or value != value or where[o_w] < 0
                        best[o_w] = value if take else best[o_w]
                        where[o_w] = i_h * w + i_w if take else where[o_w]
            y[b, ch, o_h, :] = best
            indices[b, ch, o_h, :] = where


@njit(parallel=True, cache=True)
def _unpool_scatter(values, indices, out, accumulate, bad_found, bad_index):
    """out[plane].flat[indices] = (or +=) values, plane by plane; bad indices are skipped and the first
    of each plane recorded."""
    planes = out.shape[0]
    size = out.shape[1]
    for plane in prange(planes):
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


@njit(parallel=True, cache=True)
def _unpool_gather(g, indices, out, bad_found, bad_index):
    """out[plane, i] = g[plane, indices[plane, i]]; a bad index reads nothing (gives 0) and is recorded."""
    size = g.shape[1]
    for plane in prange(out.shape[0]):
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
    n, c = x.shape[:2]
    y = np.empty((n, c, int(out_hw[0]), int(out_hw[1])), x.dtype)
    indices = np.empty(y.shape, np.int64)
    if y.size:
        pairs = [(int(v[0]), int(v[1])) for v in (kernel_size, stride, padding, dilation)]
        _max_pool(x, *pairs, y, indices)
    return y, indices


def unpool_scatter(values: np.ndarray, indices: np.ndarray, out_hw: Pair,
                   pool: tuple[Pair, Pair, Pair, Pair] | None = None) -> np.ndarray:
    n, c = values.shape[:2]
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    out = np.empty((n, c, *out_hw), values.dtype)
    planes = n * c
    bad_found = np.zeros(planes, np.bool_)
    bad_index = np.zeros(planes, np.int64)
    if planes:
        # pool given: max-pool backward, duplicates (overlapping windows) add up
        _unpool_scatter(_as_planes(values), _as_planes(indices), out.reshape(planes, -1), pool is not None,
                        bad_found, bad_index)
    _raise_first_bad(bad_found, bad_index, out_hw)
    return out


def unpool_gather(g: np.ndarray, indices: np.ndarray) -> np.ndarray:
    n, c = indices.shape[:2]
    out = np.empty(indices.shape, g.dtype)
    planes = n * c
    bad_found = np.zeros(planes, np.bool_)
    bad_index = np.zeros(planes, np.int64)
    if planes:
        _unpool_gather(_as_planes(g), _as_planes(indices), out.reshape(planes, -1), bad_found, bad_index)
    _raise_first_bad(bad_found, bad_index, g.shape[2:])
    return out
