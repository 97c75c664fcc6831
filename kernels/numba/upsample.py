"""Nearest upsampling on the CPU: a gather by precomputed source indices, and its exact adjoint.

One (n, c) plane per task. The forward copies an output row whole when its source row is the one of the
row above (every row of a 2x upsampling but the first of a pair), so most of it is a memcpy. Scale 2
along the rows, the lecture's case, has loops of its own that need no gather or scatter.
"""

import numpy as np
from numba import njit

from .tasks import run_tasks


@njit(cache=True, error_model="numpy")
def _upsample_nearest_forward(first_plane, last_plane, x, src_h, src_w, doubled, y):
    """y[plane, i, j] = x[plane, src_h[i], src_w[j]], plane in first_plane .. last_plane - 1. ``doubled``:
    src_w[j] = j // 2 for every j (scale 2 along the rows), where each source value is written twice: a
    loop LLVM vectorises with shuffles, where the general one is a gather (the benchmark's 2x case 1.2x
    faster on two threads, 1.4x on one, Zen 3)."""
    for plane in range(first_plane, last_plane):
        for i in range(y.shape[1]):
            if i > 0 and src_h[i] == src_h[i - 1]:
                above, out = y[plane, i - 1], y[plane, i]
                for j in range(out.size):  # a loop, not a slice copy: that compiles its error message (0.5 s)
                    out[j] = above[j]
            else:
                row, out = x[plane, src_h[i]], y[plane, i]
                if doubled:
                    for k in range(row.size):
                        out[2 * k] = row[k]
                        out[2 * k + 1] = row[k]
                else:
                    for j in range(out.size):
                        out[j] = row[src_w[j]]


@njit(cache=True, error_model="numpy")
def _upsample_nearest_backward(first_plane, last_plane, gy, src_h, src_w, doubled, gx):
    """gx[h, w] = sum of gy[i, j] over src_h[i] == h, src_w[j] == w, plane in first_plane .. last_plane - 1:
    each gy row is added into its source row, one plane per task, so nothing races. ``doubled`` as in the
    forward: the pair of a source value added in the general loop's order (the same sums, bit for bit),
    without its scatter (2.2-2.5x)."""
    for plane in range(first_plane, last_plane):
        gx[plane] = 0
        for i in range(gy.shape[1]):
            row, source = gx[plane, src_h[i]], gy[plane, i]
            if doubled:
                for k in range(row.size):
                    row[k] = (row[k] + source[2 * k]) + source[2 * k + 1]
            else:
                for j in range(source.size):
                    row[src_w[j]] += source[j]


def _doubled(src_w: np.ndarray, w: int) -> bool:
    """Whether src_w maps output column j to j // 2 for every j of 2 * w: the kernels' fast case."""
    return src_w.size == 2 * w and bool(np.array_equal(src_w, np.arange(src_w.size) // 2))


def _check_sources(src_h: np.ndarray, src_w: np.ndarray, in_hw: tuple[int, int]) -> None:
    """The engine computes the maps in range; this keeps a bad one from reading or writing outside."""
    for name, src, size in (("src_h", src_h, in_hw[0]), ("src_w", src_w, in_hw[1])):
        if src.size and (src.min() < 0 or src.max() >= size):
            raise IndexError(f"{name} holds indices outside [0, {size}): [{src.min()}, {src.max()}]")


def upsample_nearest_forward(x: np.ndarray, src_h: np.ndarray, src_w: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    _check_sources(src_h, src_w, (h, w))
    y = np.empty((n, c, len(src_h), len(src_w)), x.dtype)
    run_tasks(_upsample_nearest_forward, n * c, x.reshape(n * c, h, w), src_h, src_w, _doubled(src_w, w),
              y.reshape(n * c, *y.shape[2:]))
    return y


def upsample_nearest_backward(gy: np.ndarray, src_h: np.ndarray, src_w: np.ndarray,
                              in_hw: tuple[int, int]) -> np.ndarray:
    n, c = gy.shape[:2]
    _check_sources(src_h, src_w, in_hw)
    gx = np.zeros((n, c, *in_hw), gy.dtype)
    run_tasks(_upsample_nearest_backward, n * c, gy.reshape(n * c, *gy.shape[2:]), src_h, src_w,
              _doubled(src_w, in_hw[1]), gx.reshape(n * c, *gx.shape[2:]))
    return gx
