"""Max pooling with argmax indices, and the two index kernels built on those indices (unpooling).

Max pool: window (oh, ow) reads the taps x[h, w] with h = oh*sH - pH + i*dH and w = ow*sW - pW + j*dW,
i < kH, j < kW, scanned row-major (i outer, j inner). Taps in the padding read -inf and never win. The
output is the maximum; its index is the flat offset h*W + w of the winning tap in the unpadded (n, c)
plane. PyTorch's scan starts at the window's first tap with h >= 0 and w >= 0 (best = -inf) and keeps a
tap when ``value > best or isnan(value)``, hence: ties -> the first maximum wins; NaN propagates, and of
several NaNs the last one wins; a window with nothing above -inf reports that start tap. (When dilation
makes a window miss the input entirely, e.g. kH=2, dH=2, pH=1 over H=1, the start tap lies outside the
plane and so does its index: PyTorch does the same.)

Unpooling moves values along those indices: unpool_scatter writes values[n, c, i, j] to
out[n, c].flat[indices[n, c, i, j]], unpool_gather reads g[n, c].flat[indices[n, c, i, j]]. They are each
other's adjoint, and unpool_scatter with summed duplicates is the backward of max pooling.
"""

import math

import numpy as np

from .conv import Pair, padded_windows


def max_pool2d_forward(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair,
                       out_hw: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(y, indices): the maximum of each window and its flat h*W + w offset in the unpadded input plane."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel_size, stride, padding, dilation, out_hw
    # With ceil_mode the last window may run past the padded input: padded_windows pads further.
    windows = padded_windows(x, kernel_size, stride, padding, dilation, out_hw, fill=-np.inf)
    taps = windows.reshape(n, c, oh, ow, kh * kw)  # tap t = i*kW + j: row-major scan order

    y = taps.max(axis=-1)  # NaN propagates through max
    first_max = np.argmax(taps == y[..., None], axis=-1)
    last_nan = kh * kw - 1 - np.argmax(np.isnan(taps[..., ::-1]), axis=-1)  # first NaN scanning backwards
    i, j = np.divmod(np.where(np.isnan(y), last_nan, first_max), kw)

    # Tap (i, j) of window (oh, ow) reads input row top[oh] + i*dH and column left[ow] + j*dW.
    top, left = np.arange(oh)[:, None] * sh - ph, np.arange(ow) * sw - pw
    # Nothing above -inf: the start tap, the first i with top + i*dH >= 0 and first j with left + j*dW >= 0.
    nothing_above_minus_inf = y == -np.inf
    i = np.where(nothing_above_minus_inf, np.maximum(0, -(top // dh)), i)
    j = np.where(nothing_above_minus_inf, np.maximum(0, -(left // dw)), j)
    return y, ((top + i * dh) * w + left + j * dw).astype(np.int64)


def _check_indices(indices: np.ndarray, plane_hw: Pair) -> None:
    """Raise IndexError naming the first (row-major) index outside a plane of plane_hw elements."""
    h, w = plane_hw
    out_of_range = (indices < 0) | (indices >= h * w)
    if out_of_range.any():
        raise IndexError(
            f"Found an invalid max index: {indices[out_of_range][0]} (output volumes are of size {h}x{w})"
        )


def unpool_scatter(values: np.ndarray, indices: np.ndarray, out_hw: Pair,
                   pool: tuple[Pair, Pair, Pair, Pair] | None = None) -> np.ndarray:
    """out (N, C, *out_hw), zero but for out[n, c].flat[indices[n, c, i, j]] = values[n, c, i, j].

    pool=None (max_unpool2d forward): a duplicate index keeps its last value in row-major order.
    pool given (max_pool2d backward): values at a duplicate index are summed. The spec needs nothing
    from the pool's (kernel_size, stride, padding, dilation): they let other devices gather instead.
    """
    _check_indices(indices, out_hw)
    n, c = values.shape[:2]
    plane_size = out_hw[0] * out_hw[1]
    # Flat offsets into the whole output: plane (n, c) starts at (n*C + c) * H*W.
    offsets = (np.arange(n * c).reshape(n, c, 1, 1) * plane_size + indices).ravel()
    flat_values = values.ravel()
    out = np.zeros(n * c * plane_size, dtype=values.dtype)
    if pool is None:
        # The last occurrence of each offset is its first occurrence when reading backwards.
        last = offsets.size - 1 - np.unique(offsets[::-1], return_index=True)[1]
        out[offsets[last]] = flat_values[last]
    else:
        np.add.at(out, offsets, flat_values)
    return out.reshape(n, c, *out_hw)


def unpool_gather(g: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """out[n, c, i, j] = g[n, c].flat[indices[n, c, i, j]] (max_unpool2d backward)."""
    _check_indices(indices, g.shape[2:])
    n, c, h, w = g.shape
    planes, flat_indices = g.reshape(n, c, h * w), indices.reshape(n, c, math.prod(indices.shape[2:]))
    return np.take_along_axis(planes, flat_indices, axis=2).reshape(indices.shape)
