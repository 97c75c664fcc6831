"""The weight gradient of layers with few taps (the 3-channel first layers) or few output channels (16 on
AVX-512): pixels along the lanes.

conv_weight_grad's tiles put output channels along the lanes and taps along the rows, on gy copied
channels-last: for a 3-channel 3x3 layer (27 taps; 16 or 64 output channels) that copy took as long as
the products, and 16 channels fill half a 32-lane vector. Here each accumulator is one (output channel,
tap) pair whose lanes are consecutive output pixels of a row: gy is read in place, the phase-split input
(conv_tiles) at the tap's offset, and each accumulator's lanes are summed once, at the end of its image.
A tile is 2 output channels by ROWS // 2 taps: ROWS accumulators, as many registers as conv_tiles'
micro-kernel, and each loaded input vector feeds two FMAs, each gy vector ROWS // 2.
"""

import numpy as np
from numba import njit
from numba.cpython.unsafe.tuple import tuple_setitem

from . import simd
from ._common import Pair
from .conv_tiles import ROWS, _group_stride, _phase_split, _tap_offsets
from .tasks import run_tasks

TAPS_PER_TILE = ROWS // 2  # times 2 output channels: ROWS accumulators
TILE_SUMS = 8  # a tile's lane sums, 2 x 4 (_tile_sums; TAPS_PER_TILE is 4 or 3)
MAX_TAPS = 32  # taps per group up to which this path serves the weight gradient (docs/kernels/conv.md)


@njit(inline="always", cache=True)
def _lane_sum(value, scratch):
    """The sum of a vector's lanes, in lane order."""
    simd.store(scratch, 0, value)
    total = scratch[0]
    for lane in range(1, simd.lanes(value)):
        total += scratch[lane]
    return total


@njit(inline="always", cache=True)
def _pair_sums(a, b):
    """(a[0] + a[1], a[2] + a[3], ..., b[0] + b[1], ...): the lanes of a and b summed in pairs."""
    even, odd = simd.deinterleave(a, b)
    return simd.add(even, odd)


@njit(inline="always", cache=True)
def _tile_sums(top, bottom, scratch):
    """scratch[j] = the sum of top[j]'s lanes, scratch[TILE_SUMS // 2 + j] that of bottom[j]: with 8 lanes
    or more, a tree of pairwise sums over the tile's accumulators at once (log2(lanes) shuffles and adds
    per pair of them), as the chain of one scalar add per lane took as long as the tile's products on
    rows of one vector (a 32->16 weight gradient at 32x32: 6.4 -> 4.7 ms); with fewer, lane by lane."""
    half = TILE_SUMS // 2
    last = len(top) - 1  # an accumulator short of half (AVX2's 3 taps) repeats the last: computed, not read
    if simd.lanes(top[0]) < TILE_SUMS:
        for j in range(len(top)):
            scratch[j] = _lane_sum(top[j], scratch[TILE_SUMS:])
            scratch[half + j] = _lane_sum(bottom[j], scratch[TILE_SUMS:])
        return
    sums = _pair_sums(_pair_sums(_pair_sums(top[0], top[1]), _pair_sums(top[2], top[min(3, last)])),
                      _pair_sums(_pair_sums(bottom[0], bottom[1]), _pair_sums(bottom[2], bottom[min(3, last)])))
    lanes = simd.lanes(sums)
    while lanes > TILE_SUMS:  # TILE_SUMS groups of lanes / TILE_SUMS partial sums each: halve the groups
        sums = _pair_sums(sums, sums)
        lanes //= 2
    simd.store(scratch, 0, sums)


@njit(cache=True, error_model="numpy")
def _weight_gradient_pixels(first_task, last_task, src, image_stride, group_stride, gy, offsets, width, partials):
    """partials[b, g, co, t] = sum over output pixels (o_h, o_w) of gy[b, g * C + co, o_h, o_w]
    * src[b * image_stride + g * group_stride + o_h * width + o_w + offsets[t]], C = partials.shape[2]:
    each image's weight gradient apart (their sum, in a fixed order, is the caller's). gy is C-contiguous.

    One task per image, group and pair of output channels (tasks first_task .. last_task - 1 here); whole
    vectors along each output row, the columns left past the last whole vector in scalars.
    """
    groups, c_out_g, taps = partials.shape[1:]
    out_h, out_w = gy.shape[2], gy.shape[3]
    lanes = simd.lanes(src)
    whole = out_w - out_w % lanes
    pairs = -(-c_out_g // 2)
    scratch = np.empty(TILE_SUMS + lanes, src.dtype)
    for task in range(first_task, last_task):
        image_group, pair = divmod(task, pairs)
        b, g = divmod(image_group, groups)
        window = src[b * image_stride + g * group_stride:]
        co = 2 * pair
        co_next = min(co + 1, c_out_g - 1)  # an odd last channel is computed twice, stored once
        top_plane, bottom_plane = gy[b, g * c_out_g + co], gy[b, g * c_out_g + co_next]
        for t0 in range(0, taps, TAPS_PER_TILE):
            tile_offsets = offsets[t0:t0 + TAPS_PER_TILE]
            top = simd.repeat(simd.zeros(src), TAPS_PER_TILE)
            bottom = simd.repeat(simd.zeros(src), TAPS_PER_TILE)
            for o_h in range(out_h):
                top_row, bottom_row, base = top_plane[o_h], bottom_plane[o_h], o_h * width
                for o_w in range(0, whole, lanes):
                    upper, lower = simd.load(top_row, o_w), simd.load(bottom_row, o_w)
                    for j in range(TAPS_PER_TILE):  # a constant trip count: unrolled, the tuples stay in registers
                        # the last tile's missing taps repeat its last one: computed, not stored
                        v = simd.load(window, base + o_w + tile_offsets[min(j, tile_offsets.size - 1)])
                        top = tuple_setitem(top, j, simd.fma(upper, v, top[j]))
                        bottom = tuple_setitem(bottom, j, simd.fma(lower, v, bottom[j]))
            _tile_sums(top, bottom, scratch)
            for j in range(tile_offsets.size):
                upper_sum, lower_sum = scratch[j], scratch[TILE_SUMS // 2 + j]
                for o_h in range(out_h):
                    top_row, bottom_row = top_plane[o_h], bottom_plane[o_h]
                    for o_w in range(whole, out_w):
                        v = window[o_h * width + o_w + tile_offsets[j]]
                        upper_sum += top_row[o_w] * v
                        lower_sum += bottom_row[o_w] * v
                partials[b, g, co, t0 + j] = upper_sum
                partials[b, g, co_next, t0 + j] = lower_sum


def uses_pixel_lanes(cg: int, kernel: Pair, c_out_g: int, out_w: int, itemsize: int) -> bool:
    """Whether this path serves the weight gradient: output rows a vector wide, and either few taps per
    group or output channels that would fill at most half of the channels-last tiles' lanes (16 channels
    of a 32-lane AVX-512 vector: those tiles then multiply as many zeros as values)."""
    lanes = simd.VECTOR_BYTES // itemsize
    few_taps = cg * kernel[0] * kernel[1] <= MAX_TAPS
    return (few_taps or 2 * c_out_g <= lanes) and out_w >= lanes


def _conv_backward_weight_pixels(x: np.ndarray, gy: np.ndarray, w_shape: tuple[int, int, int, int], stride: Pair,
                                 padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """The weight gradient of _conv_direct's correlation, as conv_weight_grad computes it (the same
    phase-split input and tap offsets), with pixels along the lanes instead of output channels."""
    n, c_out, out_h, out_w = gy.shape
    _, cg, k_h, k_w = w_shape
    c_out_g = c_out // groups
    size = tuple(gy.shape[2 + i] + ((k_h, k_w)[i] - 1) * dilation[i] // stride[i] for i in (0, 1))
    src, image_stride = _phase_split(x, padding, stride, size)
    offsets, order = _tap_offsets(cg, (k_h, k_w), stride, dilation, size)
    group_stride = _group_stride(src, image_stride, n, groups, offsets, (out_h - 1) * size[1] + out_w)
    partials = np.empty((n, groups, c_out_g, offsets.size), x.dtype)
    run_tasks(_weight_gradient_pixels, n * groups * -(-c_out_g // 2), src, image_stride, group_stride,
              np.ascontiguousarray(gy), offsets, size[1], partials)
    gw = np.empty((groups, c_out_g, cg, k_h * k_w), x.dtype)
    gw[..., order] = partials.sum(axis=0).reshape(groups, c_out_g, cg, k_h * k_w)
    return gw.reshape(c_out, cg, k_h, k_w)
