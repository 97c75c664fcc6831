"""Direct convolution (no BLAS): conv2d forward and backward-input (conv_transpose2d forward) as
correlations through the outer-product micro-kernel of conv_tiles, on the phase-split padded input,
which each task splits for the rows it reads.

The forward correlates x with the weights. Backward-input is a stride-1 correlation of gy per output
phase (``_phase``: the taps of w that reach it), the two column phases of stride 2 stored interleaved into
whole runs of gx's rows. Any stride, dilation, group count. What a call works out from the sizes alone is
cached (``_plan``, ``_transposed_plan``); per call, the weights are laid out into the micro-kernel's tiles
straight from w (``_weight_tiles``) and the kernel runs.
"""

import functools
from typing import NamedTuple

import numba
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


class Phase(NamedTuple):
    """One correlation of _correlate_tiles, as it reads w: a conv's forward (all of w's taps), or one output
    phase of a transposed conv (the taps that reach it, _phase). Tap (i, j) of the correlation is w's
    kernel tap (taps_h[i], taps_w[j]) and reads the split input ``start`` rows and columns down and right
    of the output's own position, plus (i, j) * step."""

    taps_h: tuple[int, ...]
    taps_w: tuple[int, ...]
    start: Pair
    step: Pair


@njit(cache=True)
def _weight_tiles(w, transposed, kernel_taps, counts, out):
    """out[p, g, tile, (ci * counts[p] + a) * ROWS + r] = the weight of phase p's correlation from input
    channel ci to output channel co = tile * ROWS + r of group g, at w's kernel tap kernel_taps[p, a] (a flat
    index into w's last axis): w[g * C_g + co, ci, tap] for a conv's forward (w (C_out, C_in / G, taps)),
    or w[g * C_i + ci, co, tap] for a transposed conv's phase (w (C_gy, C_gx / G, taps), gy's channels in,
    gx's out). Each tile's weights are one contiguous run in the order the micro-kernel reads them (taps in
    the order of _tap_offsets); rows past C_g keep out's zeros. Read from w itself: a sub-kernel copied
    out first took 50-100 us a phase at 64 channels, longer than this whole layout."""
    phases, groups, tiles = out.shape[:3]
    c_in = w.shape[0] // groups if transposed else w.shape[1]
    c_out = w.shape[1] if transposed else w.shape[0] // groups
    for p in range(phases):
        count = counts[p]
        # copied: the loop below then keeps the taps in registers instead of reloading them after every
        # store to out, which might alias them (2-3x faster)
        taps = kernel_taps[p, :count].copy()
        for g in range(groups):
            for tile in range(tiles):
                run = out[p, g, tile, :c_in * count * ROWS].reshape((c_in * count, ROWS))
                for r in range(min(ROWS, c_out - tile * ROWS)):
                    co = tile * ROWS + r
                    for ci in range(c_in):
                        weights = w[g * c_in + ci, co] if transposed else w[g * c_out + co, ci]
                        for a in range(count):
                            run[ci * count + a, r] = weights[taps[a]]


@functools.lru_cache(maxsize=256)
def _plan(images: int, channels: int, out_hw: Pair, columns: int, size: Pair, stride: Pair, kernel_w: int,
          phases: tuple[Phase, ...], lanes: int, in_place: bool,
          threads: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(starts, band_rows, depths, offsets, kernel_taps, counts) of _correlate_tiles and _weight_tiles for
    these sizes: the first output of each vector (_vector_starts, at least BAND_ROWS_PER_REACH rows per row
    of the taps' reach a task), the rows of a task's band, and per phase its taps over ``channels`` input
    channels (per group), their offsets into planes of a band, and the w tap each kernel tap is (counts of
    them). A function of the sizes and the thread count alone, so cached: a small layer's call spent more
    on working these out than on its arithmetic. The arrays are shared by every call with these sizes and
    never written (read-only, they would be another Numba type: another compile)."""
    reach = size[0] - out_hw[0]  # the rows the taps read below an output's row
    most = max(VECTORS_PER_TASK, -(-columns // lanes) * BAND_ROWS_PER_REACH * (reach + 1))
    starts = _vector_starts(images, out_hw[0], columns, size[1], lanes, threads, most)
    if in_place:
        band_rows = size[0]
    else:  # the rows a task's vectors span, the rows the taps reach below them, and one for lanes past a row
        first, last = starts[:, 0], starts.max(axis=1) + lanes - 1
        band_rows = int((last // size[1] - first // size[1]).max()) + 1 + reach + 1
    counts = np.array([len(phase.taps_h) * len(phase.taps_w) for phase in phases])
    depths = channels * counts
    offsets = np.zeros((len(phases), depths.max()), np.int64)
    kernel_taps = np.zeros((len(phases), counts.max()), np.int64)
    for p, phase in enumerate(phases):
        sub_kernel = (len(phase.taps_h), len(phase.taps_w))
        tap_offsets, order = _tap_offsets(channels, sub_kernel, stride, phase.step, (band_rows, size[1]))
        offsets[p, :depths[p]] = tap_offsets + phase.start[0] * size[1] + phase.start[1]
        i, j = np.divmod(order, sub_kernel[1])
        kernel_taps[p, :order.size] = np.array(phase.taps_h)[i] * kernel_w + np.array(phase.taps_w)[j]
    return starts, band_rows, depths, offsets, kernel_taps, counts


def _correlate(x: np.ndarray, w: np.ndarray, transposed: bool, top_left: Pair, stride: Pair, size: Pair,
               groups: int, phases: tuple[Phase, ...], out: np.ndarray) -> None:
    """Run _correlate_tiles over x zero-padded by top_left, split by phase into planes of ``size`` (rows
    ``size[1]`` wide) and read in bands, for the ``phases`` (one, or a stride-2 transposed conv's two column
    phases, interleaved) of w (``transposed``: see _weight_tiles). x is read in place where it is its own
    split (stride 1, no padding, nothing cut off: 1x1 layers) and every vector of outputs lies inside a row
    (so that no read passes x's end)."""
    x = np.ascontiguousarray(x)
    lanes = simd.VECTOR_BYTES // x.itemsize
    columns = -(-out.shape[3] // len(phases))
    in_place = stride == (1, 1) and tuple(top_left) == (0, 0) and size == x.shape[2:] and columns >= lanes
    starts, band_rows, depths, offsets, kernel_taps, counts = _plan(
        x.shape[0], x.shape[1] // groups, out.shape[2:], columns, size, stride, w.shape[3], phases, lanes, in_place,
        numba.get_num_threads())
    weights = np.zeros((len(phases), groups, -(-out.shape[1] // groups // ROWS), depths.max() * ROWS), x.dtype)
    _weight_tiles(np.ascontiguousarray(w).reshape(*w.shape[:2], -1), transposed, kernel_taps, counts, weights)
    # out typed as any layout: the forward's C-contiguous out and a transposed conv's strided phase of gx share
    # one compile of the kernel (3 s cold), its stores as fast either way
    run_tasks(_correlate_tiles, x.shape[0] * starts.shape[0], x, *top_left, *stride, band_rows, size[1], in_place,
              starts, offsets, depths, weights, AnyLayout(out))


def _conv_direct(x: np.ndarray, w: np.ndarray, out: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                 groups: int) -> None:
    """out = conv2d(x, w), every element written: the correlation over x zero-padded and split by phase."""
    kernel = w.shape[2:]
    size = (out.shape[2] + (kernel[0] - 1) * dilation[0] // stride[0],
            out.shape[3] + (kernel[1] - 1) * dilation[1] // stride[1])
    every_tap = Phase(tuple(range(kernel[0])), tuple(range(kernel[1])), (0, 0), dilation)
    _correlate(x, w, False, padding, stride, size, groups, (every_tap,), out)


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


@functools.lru_cache(maxsize=128)
def _transposed_plan(gx_hw: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> tuple[
        tuple[tuple[int, int | None, tuple[Phase, ...]], ...], tuple[Pair, ...], Pair, Pair]:
    """(problems, unreached, first, size) of _transposed_direct for these sizes (cached: arithmetic on them
    alone): each problem (row phase ph, column phase pw, or None for the two column phases of stride 2
    interleaved, and its Phases); the (ph, pw) no tap reaches; the first row and column of gy any phase
    reads, and the size of the zero-padded gy that serves every phase, each Phase's start relative to it."""
    problems: list[tuple[int, int | None, tuple[Phase, ...]]] = []
    unreached: list[Pair] = []
    for ph in range(min(stride[0], gx_hw[0])):
        taps_h, offset_h, step_h = _phase(kernel[0], stride[0], padding[0], dilation[0], ph)
        reached = []
        for pw in range(min(stride[1], gx_hw[1])):
            taps_w, offset_w, step_w = _phase(kernel[1], stride[1], padding[1], dilation[1], pw)
            if taps_h and taps_w:
                reached.append((pw, Phase(tuple(taps_h), tuple(taps_w), (offset_h, offset_w), (step_h, step_w))))
            else:
                unreached.append((ph, pw))
        if stride[1] == 2 and len(reached) == 2:
            problems.append((ph, None, tuple(phase for _, phase in reached)))
        else:
            problems += [(ph, pw, (phase,)) for pw, phase in reached]
    if not problems:
        return (), tuple(unreached), (0, 0), (0, 0)
    # one zero-padded copy of gy serves every phase: its rows and columns span what any phase reads, (rows,
    # columns) outputs each from its start on
    reads = [(phase, (-(-(gx_hw[0] - ph) // stride[0]),
                      -(-gx_hw[1] // 2) if pw is None else -(-(gx_hw[1] - pw) // stride[1])))
             for ph, pw, phases in problems for phase in phases]
    first = [min(phase.start[i] for phase, _ in reads) for i in (0, 1)]
    last = [max(phase.start[i] + outputs[i] + (len((phase.taps_h, phase.taps_w)[i]) - 1) * phase.step[i]
                for phase, outputs in reads) for i in (0, 1)]
    shifted = tuple((ph, pw, tuple(phase._replace(start=(phase.start[0] - first[0], phase.start[1] - first[1]))
                                   for phase in phases)) for ph, pw, phases in problems)
    return shifted, tuple(unreached), (first[0], first[1]), (last[0] - first[0], last[1] - first[1])


def _transposed_direct(gy: np.ndarray, w: np.ndarray, gx: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                       groups: int) -> None:
    """gx = conv_transpose2d(gy, w), every element written, as one stride-1 correlation per output phase
    (o_h % s_h, o_w % s_w): each phase meets only its own taps, which read gy at consecutive pixels, so
    each is a correlation with a sub-kernel of w, written into the phase's strided view of gx, or, for the
    two column phases of stride 2 along w, interleaved into runs of gx's rows. Stride 1 is one
    phase: the flipped kernel. No FLOP goes into the zeros between strided taps.
    """
    problems, unreached, first, size = _transposed_plan(gx.shape[2:], w.shape[2:], stride, padding, dilation)
    for row_phase, column_phase in unreached:
        gx[:, :, row_phase::stride[0], column_phase::stride[1]] = 0
    for ph, pw, phases in problems:
        rows = gx[:, :, ph::stride[0]]
        out = rows if pw is None else rows[..., pw::stride[1]]
        _correlate(gy, w, True, (-first[0], -first[1]), (1, 1), size, groups, phases, out)
