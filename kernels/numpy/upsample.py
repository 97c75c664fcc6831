"""Nearest-neighbour upsampling (and downsampling) as a gather, and its exact adjoint.

The engine works out, for every output row i and column j, the input row src_h[i] and column src_w[j]
('nearest': floor(i * in / out); 'nearest-exact': floor((i + 0.5) * in / out); both clipped to in - 1).
The forward copies; the backward sends each output gradient back to the pixel it was copied from, adding
up where one input pixel fed several outputs. Input pixels that fed none get zero.
"""

import numpy as np


def upsample_nearest_forward(x: np.ndarray, src_h: np.ndarray, src_w: np.ndarray) -> np.ndarray:
    """y[n, c, i, j] = x[n, c, src_h[i], src_w[j]]."""
    return np.ascontiguousarray(x[:, :, src_h[:, None], src_w[None, :]])  # np.ix_-style outer indexing


def _gather_adjoint(g: np.ndarray, src: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Adjoint of ``a.take(src, axis)`` with a.shape[axis] == size: slice k of g adds into slice src[k]."""
    out = np.zeros(g.shape[:axis] + (size,) + g.shape[axis + 1 :], dtype=g.dtype)
    np.add.at(np.moveaxis(out, axis, 0), src, np.moveaxis(g, axis, 0))  # a view: adds into out
    return out


def upsample_nearest_backward(gy: np.ndarray, src_h: np.ndarray, src_w: np.ndarray,
                              in_hw: tuple[int, int]) -> np.ndarray:
    """gx[n, c, h, w] = sum of gy[n, c, i, j] over src_h[i] == h and src_w[j] == w (rows, then columns)."""
    return _gather_adjoint(_gather_adjoint(gy, src_h, in_hw[0], axis=2), src_w, in_hw[1], axis=3)
