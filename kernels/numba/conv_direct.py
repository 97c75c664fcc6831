"""Direct convolution (no BLAS): conv2d forward and backward-input (conv_transpose2d forward) as
correlations through the outer-product micro-kernel of conv_tiles, on the phase-split padded input.

The forward correlates x with the weights, a chunk of images at a time. Backward-input is a stride-1
correlation of gy per output phase (``_phase``, ``_sub_kernel``), the two column phases of stride 2
stored interleaved into whole runs of gx's rows. Any stride, dilation, group count.
"""

import math

import numpy as np
from numba import njit

from . import simd
from ._common import Pair
from .conv_tiles import (
    ROW_BASES,
    ROWS,
    _group_stride,
    _phase_split,
    _store_lanes,
    _tap_offsets,
    _tile_into,
    _vector_starts,
)
from .tasks import run_tasks

# phase-split input per chunk of images of the direct forward: read back from the caches right after
# the split (a whole batch's 17 MB is mostly evicted first: conv3x3 s2 fwd+bwd 14.0 -> 12.7 ms)
SPLIT_BYTES = 4 * 2**20


@njit(cache=True, error_model="numpy")
def _correlate_tiles(first_task, last_task, src, image_stride, group_stride, width, starts, offsets, depths, weights,
                     out):
    """out[b, g*C_g + co, o_h, o_w] = sum_{t < depths[p]} weights[p, g, co // ROWS, t * ROWS + co % ROWS]
    * src[b * image_stride + g * group_stride + o_h * width + m + offsets[p, t]]: a correlation read in
    place from a flat input whose rows are ``width`` wide, output pixel q = o_h * width + m reading q +
    offsets[p, t] through tap t. One phase (p = 0): o_w = m. Two: the column phases of a stride-2
    transposed conv, o_w = 2m + p, their vectors interleaved into runs of out's rows (on rows narrower
    than a vector, its lanes past a row's end go on in the next row, as with one phase).

    One task per image and row of ``starts``, the q of the first output of each of its vectors (-1: none). Every
    tile of ROWS output channels runs over one vector before the next vector: the vector's inputs stay
    in the caches while the weights stream from L2 (stride-2 forward 3.3-4.0 -> 3.0-3.2 ms against
    the tiles outer, their weights held in L1).
    """
    n, c_out = out.shape[:2]
    phases, groups, tiles = weights.shape[:3]
    c_out_g = c_out // groups
    lanes = simd.lanes(src)
    for task in range(first_task, last_task):
        b, vectors = divmod(task, starts.shape[0])
        scratch = np.empty(phases * lanes, src.dtype)
        rows = np.empty(phases * ROWS * lanes, src.dtype)  # a tile's rows: phase 0's, then phase 1's
        for g in range(groups):
            image = src[b * image_stride + g * group_stride:]
            for q0 in starts[vectors]:
                if q0 < 0:
                    break
                o_h, m = divmod(q0, width)
                for tile in range(tiles):
                    first = g * c_out_g + tile * ROWS
                    used = min(ROWS, c_out_g - tile * ROWS)
                    for p in range(phases):
                        _tile_into(used, weights[p, g, tile], ROW_BASES, ROWS, image[q0:], offsets[p, :depths[p]],
                                   rows, p * ROWS * lanes)
                    for r in range(used):
                        value = simd.load(rows, r * lanes)
                        if phases == 1:
                            _store_lanes(value, out[b, first + r], o_h, m, width, scratch)
                        else:
                            pair = simd.interleave(value, simd.load(rows, (ROWS + r) * lanes))
                            _store_lanes(pair, out[b, first + r], o_h, 2 * m, 2 * width, scratch)


@njit(cache=True)
def _correlate_any_layout(first_task, last_task, src, image_stride, group_stride, width, starts, offsets, depths,
                          weights, out):
    """_correlate_tiles with out typed as any layout: the forward's C-contiguous out and a transposed conv's
    strided phase of gx then share one compile of it (5 s cold), where each layout would compile its own.
    Its stores go through a pointer to the row (simd.store), as fast either way."""
    _correlate_tiles(first_task, last_task, src, image_stride, group_stride, width, starts, offsets, depths, weights,
                     out[..., ::1])


@njit(cache=True)
def _weight_tiles(w, order, out):
    """out[g, tile, ci * taps + a, r] = w[g*C_g + tile*ROWS + r, ci, order[a]]: w (C_out, C_in / groups,
    taps) in tiles of ROWS output channels, each tile's weights one contiguous run in the order the
    micro-kernel reads them (taps in the order of _tap_offsets). Rows past C_g keep out's zeros."""
    groups, tiles, _, rows = out.shape
    c_out_g, channels, taps = w.shape[0] // groups, w.shape[1], order.size
    for g in range(groups):
        for tile in range(tiles):
            for r in range(min(rows, c_out_g - tile * rows)):
                weights = w[g * c_out_g + tile * rows + r]
                for ci in range(channels):
                    for a in range(taps):
                        out[g, tile, ci * taps + a, r] = weights[ci, order[a]]


def _image_chunks(images: int, bytes_per_image: int) -> list[slice]:
    """Runs of consecutive images whose phase-split input takes SPLIT_BYTES at most (one image at least)."""
    step = max(1, SPLIT_BYTES // bytes_per_image)
    return [slice(b, min(b + step, images)) for b in range(0, images, step)]


def _tap_tiles(phases: list[tuple[np.ndarray, np.ndarray, np.ndarray]], groups: int, c_out: int,
               dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(depths, offsets, weights) of _correlate_tiles for phases [(offsets, order, weight)] from
    _tap_offsets and a weight (C_out, C_in / groups, taps...): one phase, or two interleaved along the
    output's rows (see there)."""
    depths = np.array([offsets.size for offsets, _, _ in phases])
    offsets = np.zeros((len(phases), depths.max()), np.int64)
    tiles = -(-c_out // groups // ROWS)
    weights = np.zeros((len(phases), groups, tiles, depths.max() * ROWS), dtype)
    for p, (phase_offsets, order, w) in enumerate(phases):
        offsets[p, :depths[p]] = phase_offsets
        _weight_tiles(w.reshape(*w.shape[:2], -1), order, weights[p].reshape(groups, tiles, -1, ROWS))
    return depths, offsets, weights


def _correlate(src: np.ndarray, image_stride: int, images: int, groups: int, width: int,
               taps: tuple[np.ndarray, np.ndarray, np.ndarray], out: np.ndarray) -> None:
    """Run _correlate_tiles with taps from _tap_tiles on (src, image_stride) from _phase_split."""
    depths, offsets, weights = taps
    lanes = simd.VECTOR_BYTES // src.itemsize
    starts = _vector_starts(images, out.shape[2], -(-out.shape[3] // offsets.shape[0]), width, lanes)
    group_stride = _group_stride(src, image_stride, images, groups, offsets, starts.max() + lanes)
    run_tasks(_correlate_any_layout, images * starts.shape[0], src, image_stride, group_stride, width, starts, offsets,
              depths, weights, out)


def _conv_direct(x: np.ndarray, w: np.ndarray, out: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                 groups: int) -> None:
    """out = conv2d(x, w), every element written: the correlation over x zero-padded and split by phase,
    a chunk of images at a time."""
    kernel = w.shape[2:]
    size = tuple(out.shape[2 + i] + (kernel[i] - 1) * dilation[i] // stride[i] for i in (0, 1))
    lanes = simd.VECTOR_BYTES // x.itemsize
    taps = _tap_tiles([(*_tap_offsets(w.shape[1], kernel, stride, dilation, size), w)], groups, w.shape[0], x.dtype)
    for images in _image_chunks(x.shape[0], math.prod((x.shape[1], *stride, *size, x.itemsize))):
        # in place where every vector of outputs lies inside a row (_vector_starts): none reads past x
        src, image_stride = _phase_split(x[images], padding, stride, size, in_place=out.shape[3] >= lanes)
        _correlate(src, image_stride, images.stop - images.start, groups, size[1], taps, out[images])


def _phase(kernel: int, stride: int, padding: int, dilation: int, phase: int) -> tuple[list[int], int, int]:
    """The taps met by the transposed-conv outputs o = phase + stride * m, in the order that makes them a
    stride-1 correlation: (taps, offset, sub_dilation) with tap a reading gy[m + offset + a * sub_dilation].

    Tap k reaches o from gy[(o + padding - k * dilation) / stride] when that divides; going down k, the
    reached index rises by a constant step.
    """
    taps = [k for k in reversed(range(kernel)) if (phase + padding - k * dilation) % stride == 0]
    offset = (phase + padding - taps[0] * dilation) // stride if taps else 0
    step = (taps[0] - taps[1]) * dilation // stride if len(taps) > 1 else 1
    return taps, offset, step


def _tap_slice(taps: list[int]) -> slice:
    """Equally spaced taps (``_phase``'s, or a kernel axis reversed) as a slice of that axis."""
    step = taps[1] - taps[0] if len(taps) > 1 else 1
    stop = taps[-1] + step
    if taps != list(range(taps[0], stop, step)):
        raise AssertionError(f"conv: taps {taps} are not equally spaced")
    return slice(taps[0], stop if stop >= 0 else None, step)


def _sub_kernel(w: np.ndarray, taps_h: list[int], taps_w: list[int], groups: int) -> np.ndarray:
    """The correlation kernel of a transposed conv's output phase: w's taps (taps_h, taps_w), gx's group g
    gathering from gy's: (groups * C_in/G, C_out/G, len(taps_h), len(taps_w))."""
    c_out, cg = w.shape[:2]
    # the taps by slices, a view: the copy to C order is the only one (a 64 x 64 x 3 x 3 kernel flipped
    # 176 -> 28 us, against indexing by lists). C order, as the forward's weight: the kernels reading it
    # then compile once, not per layout
    sub_kernel = w[:, :, _tap_slice(taps_h), _tap_slice(taps_w)].reshape(groups, c_out // groups, cg, len(taps_h),
                                                                          len(taps_w))
    return np.ascontiguousarray(sub_kernel.transpose(0, 2, 1, 3, 4)).reshape(groups * cg, c_out // groups,
                                                                              len(taps_h), len(taps_w))


def _transposed_direct(gy: np.ndarray, w: np.ndarray, gx: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                       groups: int) -> None:
    """gx = conv_transpose2d(gy, w), every element written, as one stride-1 correlation per output phase
    (o_h % s_h, o_w % s_w): each phase meets only its own taps, which read gy at consecutive pixels, so
    each is a correlation with a sub-kernel, written into the phase's strided view of gx, or, for the
    two column phases of stride 2 along w, interleaved into runs of gx's rows. Stride 1 is one
    phase: the flipped kernel. No FLOP goes into the zeros between strided taps.
    """
    c_out, cg = w.shape[:2]
    lanes = simd.VECTOR_BYTES // gy.itemsize
    problems = []  # (view of gx, [(sub-kernel, first row and column of gy read, sub-dilation) per phase])
    for ph in range(min(stride[0], gx.shape[2])):
        taps_h, offset_h, step_h = _phase(w.shape[2], stride[0], padding[0], dilation[0], ph)
        phases: list = []  # (pw, sub-kernel, start, step) here, (sub-kernel, start, step) in problems
        for pw in range(min(stride[1], gx.shape[3])):
            taps_w, offset_w, step_w = _phase(w.shape[3], stride[1], padding[1], dilation[1], pw)
            if not taps_h or not taps_w:
                gx[:, :, ph::stride[0], pw::stride[1]] = 0  # no tap reaches these outputs
                continue
            phases.append((pw, _sub_kernel(w, taps_h, taps_w, groups), (offset_h, offset_w), (step_h, step_w)))
        rows = gx[:, :, ph::stride[0]]
        if stride[1] == 2 and len(phases) == 2:
            problems.append((rows, [phase[1:] for phase in phases]))
        else:
            problems += [(rows[..., pw::stride[1]], [phase]) for pw, *phase in phases]
    if not problems:
        return
    # one zero-padded copy of gy serves every phase: its rows and columns span what any phase reads
    reads = [(start, (out.shape[2], -(-out.shape[3] // len(phases))), kernel.shape[2:], step)
             for out, phases in problems for kernel, start, step in phases]
    first = [min(start[i] for start, _, _, _ in reads) for i in (0, 1)]
    last = [max(start[i] + size[i] + (kernel[i] - 1) * step[i] for start, size, kernel, step in reads) for i in (0, 1)]
    size = (last[0] - first[0], last[1] - first[1])
    # the whole batch (chunks measured slower here); in place where, as in _conv_direct, every vector of
    # outputs lies inside a row
    in_place = all(out.shape[3] >= len(per_phase) * lanes for out, per_phase in problems)
    src, image_stride = _phase_split(gy, (-first[0], -first[1]), (1, 1), size, in_place)
    for out, phases in problems:
        correlations = []
        for sub_kernel, start, step in phases:
            offsets, order = _tap_offsets(c_out // groups, sub_kernel.shape[2:], (1, 1), step, size)
            correlations.append((offsets + (start[0] - first[0]) * size[1] + start[1] - first[1], order, sub_kernel))
        _correlate(src, image_stride, gy.shape[0], groups, size[1],
                   _tap_tiles(correlations, groups, gx.shape[1], gx.dtype), out)
