"""Nearest upsampling on the CPU: a gather by precomputed source indices, and its exact adjoint.

One (n, c) plane per task. The forward copies an output row whole when its source row is the one of the
row above (every row of a 2x upsampling but the first of a pair), so most of it is a memcpy.
"""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _upsample_nearest_forward(x, src_h, src_w, y):
    for plane in prange(y.shape[0]):
        for i in range(y.shape[1]):
            if i > 0 and src_h[i] == src_h[i - 1]:
                y[plane, i, :] = y[plane, i - 1, :]
            else:
                row, out = x[plane, src_h[i]], y[plane, i]
                for j in range(out.size):
                    out[j] = row[src_w[j]]


@njit(parallel=True, cache=True)
def _upsample_nearest_backward(gy, src_h, src_w, gx):
    """gx[h, w] = sum of gy[i, j] over src_h[i] == h, src_w[j] == w: each gy row is added into its
    source row, one plane per task, so nothing races."""
    for plane in prange(gx.shape[0]):
        gx[plane] = 0
        for i in range(gy.shape[1]):
            row, source = gx[plane, src_h[i]], gy[plane, i]
            for j in range(source.size):
                row[src_w[j]] += source[j]


def _check_sources(src_h: np.ndarray, src_w: np.ndarray, in_hw: tuple[int, int]) -> None:
    """The engine computes the maps in range; this keeps a bad one from reading or writing outside."""
    for name, src, size in (("src_h", src_h, in_hw[0]), ("src_w", src_w, in_hw[1])):
        if src.size and (src.min() < 0 or src.max() >= size):
            raise IndexError(f"{name} holds indices outside [0, {size}): [{src.min()}, {src.max()}]")


def upsample_nearest_forward(x: np.ndarray, src_h: np.ndarray, src_w: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    _check_sources(src_h, src_w, (h, w))
    y = np.empty((n, c, len(src_h), len(src_w)), x.dtype)
    _upsample_nearest_forward(x.reshape(n * c, h, w), src_h, src_w, y.reshape(n * c, *y.shape[2:]))
    return y


def upsample_nearest_backward(gy: np.ndarray, src_h: np.ndarray, src_w: np.ndarray,
                              in_hw: tuple[int, int]) -> np.ndarray:
    n, c = gy.shape[:2]
    _check_sources(src_h, src_w, in_hw)
    gx = np.zeros((n, c, *in_hw), gy.dtype)
    _upsample_nearest_backward(gy.reshape(n * c, *gy.shape[2:]), src_h, src_w, gx.reshape(n * c, *gx.shape[2:]))
    return gx
