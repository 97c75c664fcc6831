"""Direct convolution (no BLAS): conv2d forward and backward-input (conv_transpose2d forward) as
correlations through the outer-product micro-kernel of conv_tiles, on the phase-split padded input,
which each task splits for the rows it reads.

The forward correlates x with the weights. Backward-input is a stride-1 correlation of gy per output
phase (``_phase``, ``_sub_kernel``), the two column phases of stride 2 stored interleaved into whole runs
of gx's rows. Any stride, dilation, group count.
"""

import functools
from collections.abc import Callable

import numpy as np
from numba import njit

from . import simd
from ._common import Pair
from .conv_tiles import (
    ROW_BASES,
    ROWS,
    VECTORS_PER_TASK,
    _split_rows,
    _store_lanes,
    _tap_offsets,
    _tile_into,
    _vector_starts,
)
from .tasks import AnyLayout, run_tasks

# rows of outputs a task takes per row its taps reach below them (at least): the rows of its band split
# for the task below too are then a fifth of the band or fewer (with a row a task, 3x3 layers took up to
# 1.4x the whole-batch split's time; 2 rows per row of reach lost 3-8% on some; docs/kernels/conv.md)
BAND_ROWS_PER_REACH = 4

@njit(cache=True, error_model="numpy")
def _correlate_tiles(first_task, last_task, x, top, left, stride_h, stride_w, band_rows, width, in_place, starts,
                     offsets, depths, weights, out):
    """out[b, g*C_g + co, o_h, o_w] = sum_{t < depths[p]} weights[p, g, co // ROWS, t * ROWS + co % ROWS]
    * src[g * group_stride + o_h * width + m + offsets[p, t]] with src image b of x (C-contiguous) zero-padded
    by (top, left) and split by phase (stride_h, stride_w; _split_phases) into planes of rows ``width``
    wide: a correlation, output pixel q = o_h * width + m reading q + offsets[p, t] through tap t. One
    phase (p = 0): o_w = m. Two: the column phases of a stride-2 transposed conv, o_w = 2m + p, their
    vectors interleaved into runs of out's rows (on rows narrower than a vector, its lanes past a row's end
    go on in the next row, as with one phase). offsets are those of planes of band_rows rows.

    One task per image and row of ``starts``, the q of the first output of each of its vectors (-1: none).
    Each task splits the band_rows rows of src from its first vector's row on into its own buffer, which
    stays in L2 while its tiles read it (a whole-batch split, written to memory and read back, was 1.0-1.5x
    slower; docs/kernels/conv.md); ``in_place``: x is its own split (stride 1, no padding, band_rows its
    height) and is read where it is. Every tile of ROWS output channels runs over one vector before the
    next vector: the vector's inputs stay in the caches while the weights stream from L2 (stride-2
    forward 3.3-4.0 -> 3.0-3.2 ms against the tiles outer, their weights held in L1).
    """
    n, c_out = out.shape[:2]
    phases, groups, tiles = weights.shape[:3]
    c_out_g = c_out // groups
    lanes = simd.lanes(x)
    channels = x.shape[1]
    channel_stride = stride_h * stride_w * band_rows * width
    group_stride = channels // groups * channel_stride
    for task in range(first_task, last_task):
        b, vectors = divmod(task, starts.shape[0])
        scratch = np.empty(phases * lanes, x.dtype)
        rows = np.empty(phases * ROWS * lanes, x.dtype)  # a tile's rows: phase 0's, then phase 1's
        last = starts[vectors].max()  # the last vector's start (-1 marks none)
        if in_place:
            src, origin = x[b].reshape(-1), 0
        else:
            first_row = starts[vectors][0] // width
            src = _split_rows(x, b, top, left, stride_h, stride_w, first_row, band_rows, width)
            origin = first_row * width
        # the micro-kernel does not check bounds: the last lane of the last vector, through the furthest tap
        # of the last group, must read inside src
        if (groups - 1) * group_stride + last + lanes - 1 - origin + offsets.max() >= src.size:
            raise AssertionError("conv: the micro-kernel would read outside its band of the input")
        for g in range(groups):
            image = src[g * group_stride:]
            for q0 in starts[vectors]:
                if q0 < 0:
                    break
                o_h, m = divmod(q0, width)
                for tile in range(tiles):
                    first = g * c_out_g + tile * ROWS
                    used = min(ROWS, c_out_g - tile * ROWS)
                    for p in range(phases):
                        _tile_into(used, weights[p, g, tile], ROW_BASES, ROWS, image[q0 - origin:],
                                   offsets[p, :depths[p]], rows, p * ROWS * lanes)
                    for r in range(used):
                        value = simd.load(rows, r * lanes)
                        if phases == 1:
                            _store_lanes(value, out[b, first + r], o_h, m, width, scratch)
                        else:
                            pair = simd.interleave(value, simd.load(rows, (ROWS + r) * lanes))
                            _store_lanes(pair, out[b, first + r], o_h, 2 * m, 2 * width, scratch)


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


def _correlate(x: np.ndarray, top_left: Pair, stride: Pair, size: Pair, groups: int, phases: int,
               correlations: Callable[[Pair], list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
               out: np.ndarray) -> None:
    """Run _correlate_tiles over x zero-padded by top_left, split by phase into planes of ``size`` (rows
    ``size[1]`` wide) and read in bands, for the ``phases`` (1, or a stride-2 transposed conv's 2 column
    phases, interleaved) [(offsets, order, weight)] of _tap_tiles that ``correlations`` gives for planes
    of a band's size. x is read in place where it is its own split (stride 1, no padding, nothing cut
    off: 1x1 layers) and every vector of outputs lies inside a row (so that no read passes x's end)."""
    x = np.ascontiguousarray(x)
    lanes = simd.VECTOR_BYTES // x.itemsize
    columns = -(-out.shape[3] // phases)
    in_place = stride == (1, 1) and tuple(top_left) == (0, 0) and size == x.shape[2:] and columns >= lanes
    reach = size[0] - out.shape[2]  # the rows the taps read below an output's row
    # tasks of BAND_ROWS_PER_REACH rows per row of reach at least: a band's rows past its outputs' are split
    # by the next task too
    most = max(VECTORS_PER_TASK, -(-columns // lanes) * BAND_ROWS_PER_REACH * (reach + 1))
    starts = _vector_starts(x.shape[0], out.shape[2], columns, size[1], lanes, most)
    if in_place:
        band_rows = size[0]
    else:  # the rows a task's vectors span, the rows the taps reach below them, and one for lanes past a row
        first, last = starts[:, 0], starts.max(axis=1) + lanes - 1
        band_rows = int((last // size[1] - first // size[1]).max()) + 1 + reach + 1
    depths, offsets, weights = _tap_tiles(correlations((band_rows, size[1])), groups, out.shape[1], x.dtype)
    # out typed as any layout: the forward's C-contiguous out and a transposed conv's strided phase of gx share
    # one compile of the kernel (3 s cold), its stores as fast either way
    run_tasks(_correlate_tiles, x.shape[0] * starts.shape[0], x, *top_left, *stride, band_rows, size[1], in_place,
              starts, offsets, depths, weights, AnyLayout(out))


def _conv_direct(x: np.ndarray, w: np.ndarray, out: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                 groups: int) -> None:
    """out = conv2d(x, w), every element written: the correlation over x zero-padded and split by phase."""
    kernel = w.shape[2:]
    size = tuple(out.shape[2 + i] + (kernel[i] - 1) * dilation[i] // stride[i] for i in (0, 1))
    _correlate(x, padding, stride, size, groups, 1,
               lambda band: [(*_tap_offsets(w.shape[1], kernel, stride, dilation, band), w)], out)


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

    def correlations(phases: list, band: Pair) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        taps = []
        for sub_kernel, start, step in phases:
            offsets, order = _tap_offsets(c_out // groups, sub_kernel.shape[2:], (1, 1), step, band)
            taps.append((offsets + (start[0] - first[0]) * size[1] + start[1] - first[1], order, sub_kernel))
        return taps

    for out, phases in problems:
        _correlate(gy, (-first[0], -first[1]), (1, 1), size, groups, len(phases),
                   functools.partial(correlations, phases), out)
