"""The weight gradient (conv2d backward-weight) of the direct and Winograd algorithms: conv_tiles'
micro-kernel reducing over pixels, rows = taps broadcast from the phase-split input, lanes = output
channels read from gy laid out channels-last.
"""

import numba
import numpy as np
from numba import njit, prange

from . import simd
from ._common import Pair
from .conv_tiles import ROWS, _outer_tile, _phase_split, _strides, _tap_offsets

WEIGHT_BAND = 256  # pixels per band of the weight gradient: 64 KiB of gy for 64 float32 channels, in L2


@njit(inline="always", cache=True)
def _transpose_tile(src, dst, rows, columns):
    for j in range(columns):
        for i in range(rows):
            dst[j, i] = src[i, j]


@njit(parallel=True, cache=True)
def _channels_last(x, out):
    """out[b, i, j, c] = x[b, c, i, j], zeros where j or c lies past x: out is (N, H, width, C') with
    width >= W and C' >= C (or a view of one).

    The transpose goes by 16 x 16 tiles (16 channels by 16 pixels): both the 16 source rows and the 16
    destination runs stay in L1, and a full tile's constant trip counts let LLVM turn it into register
    shuffles (3x faster than copying one pixel's channels at a time).
    """
    n, channels, h, w = x.shape
    for task in prange(n * h):
        b, i = divmod(np.int64(task), h)
        row = out[b, i]
        row[w:] = 0
        row[:w, channels:] = 0
        for c0 in range(0, channels, 16):
            for j0 in range(0, w, 16):
                src, dst = x[b, c0:, i, j0:], row[j0:, c0:]
                if c0 + 16 <= channels and j0 + 16 <= w:
                    _transpose_tile(src, dst, 16, 16)
                else:
                    _transpose_tile(src, dst, min(16, channels - c0), min(16, w - j0))


@njit(parallel=True, cache=True)
def _weight_gradient_tiles(src, image_stride, group_stride, gy_t, bases, band_offsets, reach, tiles_per_task,
                           partials):
    """partials[b, g, t, co] = sum_{q < reach} src[b * image_stride + g * group_stride + bases[t] + q]
    * gy_t[b, q, g, co]: the gradient of the weight (tap t = (ci, kh, kw), output channel co) of the
    correlation _correlate_tiles computes, for each image apart (their sum, in a fixed order, is the
    caller's). gy_t holds gy channels-last on the correlation's pixels q, zeros on the padding columns.

    Tiles of ROWS taps by lanes output channels, reducing over pixels; each task runs its tiles over a
    band of pixels at a time, so that band of gy_t is read from L2 by every tile.
    """
    n, groups, depth, c_pad = partials.shape
    lanes = simd.lanes(src)
    tile_groups = -(-(depth // ROWS) // tiles_per_task)
    for task in prange(n * groups * tile_groups):
        image_group, tile_group = divmod(np.int64(task), tile_groups)
        b, g = divmod(image_group, groups)
        gy_image = gy_t[b].reshape(-1)
        for q0 in range(0, reach, band_offsets.size):
            window = src[b * image_stride + g * group_stride + q0:]
            offsets = band_offsets[:min(band_offsets.size, reach - q0)]
            for tile in range(tile_group * tiles_per_task, min((tile_group + 1) * tiles_per_task, depth // ROWS)):
                for co in range(0, c_pad, lanes):
                    sums = _outer_tile(window, bases[tile * ROWS:], 1, gy_image[(q0 * groups + g) * c_pad + co:],
                                       offsets)
                    for r in range(ROWS):
                        row = partials[b, g, tile * ROWS + r]
                        simd.store(row, co, simd.add(simd.load(row, co), sums[r]))


def _conv_backward_weight_direct(x: np.ndarray, gy: np.ndarray, w_shape: tuple[int, int, int, int], stride: Pair,
                                 padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """The weight gradient of _conv_direct's correlation: sum over images and pixels q of the input it
    reads through each tap times gy, on the same phase-split padded input. (The whole batch at once:
    chunks of images, as _conv_direct takes them, measured slower here.)"""
    n, c_out, out_h, out_w = gy.shape
    _, cg, k_h, k_w = w_shape
    c_out_g = c_out // groups
    lanes = simd.VECTOR_BYTES // x.itemsize
    size = tuple(gy.shape[2 + i] + ((k_h, k_w)[i] - 1) * dilation[i] // stride[i] for i in (0, 1))
    src = _phase_split(x, padding, stride, size)
    offsets, order = _tap_offsets(cg, (k_h, k_w), stride, dilation, size)
    reach = (out_h - 1) * size[1] + out_w  # the pixels q of outputs
    image_stride, group_stride = _strides(src, n, groups, offsets, reach)
    c_pad = -(-c_out_g // lanes) * lanes
    gy_t = simd.empty((n, out_h, size[1], groups, c_pad), x.dtype)
    for g in range(groups):
        _channels_last(gy[:, g * c_out_g:(g + 1) * c_out_g], gy_t[:, :, :, g])
    tiles = -(-offsets.size // ROWS)
    bases = np.full(tiles * ROWS, offsets[-1])  # the last tile's missing taps repeat one: computed, dropped
    bases[:offsets.size] = offsets
    tasks_wanted = 4 * numba.get_num_threads()  # the work's split only: each image's sum is the same
    tiles_per_task = max(1, min(tiles, tiles * n * groups // tasks_wanted))
    partials = np.zeros((n, groups, tiles * ROWS, c_pad), x.dtype)
    _weight_gradient_tiles(src, image_stride, group_stride, gy_t, bases, np.arange(WEIGHT_BAND) * groups * c_pad,
                           reach, tiles_per_task, partials)
    by_offset = partials.sum(axis=0)[:, :offsets.size, :c_out_g].reshape(groups, cg, -1, c_out_g)
    gw = np.empty((groups, c_out_g, cg, k_h * k_w), x.dtype)
    gw[..., order] = by_offset.transpose(0, 3, 1, 2)
    return gw.reshape(c_out, cg, k_h, k_w)
