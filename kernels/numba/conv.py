"""Convolution on the CPU: conv2d forward, backward-input (= conv_transpose2d forward), backward-weight.

Three algorithms, as cuDNN offers several (``set_conv_algorithm`` picks one):

* ``winograd`` (the default): Winograd F(2x2, 3x3) (Lavin & Gray, 2016) for the forward and
  backward-input of 3x3 stride-1 undilated layers, 16 products per 2x2 outputs and input channel
  instead of 36, and F(2x2, 2x2) for each output phase of the 4x4 stride-2 padding-1 transposed conv
  (backward-input), 9 instead of 16; ``direct`` for every other layer and for every weight gradient.
  Each 4x4 input patch and each kernel is transformed, the sum over input channels is the same
  micro-kernel as ``direct``'s (one per transform element), and the sums are transformed back.
* ``direct``: no BLAS. The input is zero-padded and split by stride phase once
  (``_split_phases``), so that for every tap, consecutive outputs of a row read consecutive inputs, at an
  offset per tap. All three kernels are then one outer-product micro-kernel, ``_outer_tile``: 8 rows x
  32 lanes of outputs held in vector registers (``simd``), each loaded vector of inputs feeding 8 FMAs.
  Forward: rows are output channels, lanes are pixels, reduction over taps. backward-input: the
  transposed convolution split by output phase into stride-1 correlations (the two column phases of
  stride 2 stored interleaved). backward-weight: rows are taps, lanes are output channels (gy
  channels-last), reduction over pixels, one partial per image. Any stride, dilation, group count.
* ``im2col``: unfold a chunk of output rows into columns ``cols[(ci, kh, kw), pixel]`` (Numba, parallel
  over column rows), then one BLAS GEMM per chunk and group: ``y = W @ cols``, ``gW += gy @ cols.T``,
  ``cols = W.T @ gy`` followed by a col2im scatter-add (parallel over channels, so no races). Chunks are
  whole images when they fit in ``CHUNK_BYTES``, else bands of rows, so memory stays bounded.

``winograd`` is the fastest on the layers it serves, ``direct`` on the others (docs/kernels/conv.md).
Winograd's sums differ from the direct ones by rounding only: a layer with an infinite or NaN output
is run again by the direct sum, whose infinities and NaNs are PyTorch's (Winograd's transforms subtract
inputs from each other, and inf - inf is NaN).
"""

import contextlib
import functools
import math
from collections.abc import Iterator

import numba
import numpy as np
from numba import njit, prange

from . import simd
from ._common import valid_outputs

Pair = tuple[int, int]

CHUNK_BYTES = 16 * 2**20  # im2col columns per chunk; well under the 64 MiB bound, and cache-friendlier
ROWS = 8  # rows of a tile of the outer-product micro-kernel: 8 vectors of 2 AVX-512 registers
ROW_BASES = np.arange(ROWS)  # a forward tile's weights: ROWS per tap, side by side
VECTORS_PER_TASK = 8  # vectors of outputs (or of Winograd tiles) per task at most
WEIGHT_BAND = 256  # pixels per band of the weight gradient: 64 KiB of gy for 64 float32 channels, in L2
# phase-split input per chunk of images of the direct forward: read back from the caches right after
# the split (a whole batch's 17 MB is mostly evicted first: conv3x3 s2 fwd+bwd 14.0 -> 12.7 ms)
SPLIT_BYTES = 4 * 2**20

ALGORITHMS = ("winograd", "direct", "im2col")
_algorithm = "winograd"  # Winograd where it applies, direct elsewhere: the fastest measured (docs/kernels/conv.md)


def set_conv_algorithm(name: str) -> None:
    """Choose the convolution algorithm for all three conv kernels: one of ``ALGORITHMS``."""
    global _algorithm
    if name not in ALGORITHMS:
        raise ValueError(f"unknown conv algorithm {name!r}; expected one of {', '.join(ALGORITHMS)}")
    _algorithm = name


def get_conv_algorithm() -> str:
    """The conv algorithm in use: ``winograd`` (the default), ``direct`` or ``im2col``."""
    return _algorithm


@contextlib.contextmanager
def conv_algorithm(name: str) -> Iterator[None]:
    """Use the conv algorithm ``name`` inside a ``with`` block, then restore the previous one."""
    previous = get_conv_algorithm()
    set_conv_algorithm(name)
    try:
        yield
    finally:
        set_conv_algorithm(previous)


def _pair(values) -> Pair:
    """Plain Python ints, so every call hits the same compiled specialisation."""
    return int(values[0]), int(values[1])


# ---------------------------------------------------------------------------------------------------
# direct, forward and backward-input: an outer-product micro-kernel over a phase-split padded input.


@njit(inline="always", cache=True)
def _outer_tile(scalars, bases, step, vectors, offsets):
    """The ROWS x lanes tile sum_t scalars[bases[r] + t * step] * vectors[offsets[t] + l], r < ROWS, l < lanes.

    The ROWS accumulators are vectors along l that stay in registers while t runs: each t loads one
    vector and broadcasts ROWS scalars into it, ROWS FMAs per load and no horizontal sums.
    """
    b0, b1, b2, b3, b4, b5, b6, b7 = bases[0], bases[1], bases[2], bases[3], bases[4], bases[5], bases[6], bases[7]
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = simd.zeros(vectors)
    for t in range(offsets.size):
        v, s = simd.load(vectors, offsets[t]), t * step
        c0 = simd.fma(simd.broadcast(scalars, b0 + s), v, c0)
        c1 = simd.fma(simd.broadcast(scalars, b1 + s), v, c1)
        c2 = simd.fma(simd.broadcast(scalars, b2 + s), v, c2)
        c3 = simd.fma(simd.broadcast(scalars, b3 + s), v, c3)
        c4 = simd.fma(simd.broadcast(scalars, b4 + s), v, c4)
        c5 = simd.fma(simd.broadcast(scalars, b5 + s), v, c5)
        c6 = simd.fma(simd.broadcast(scalars, b6 + s), v, c6)
        c7 = simd.fma(simd.broadcast(scalars, b7 + s), v, c7)
    return c0, c1, c2, c3, c4, c5, c6, c7


@njit(inline="always", cache=True)
def _store_lanes(value, plane, o_h, o_w, wrap, scratch):
    """plane[o_h, o_w + lane] = value[lane], the lanes past column ``wrap`` (-1: none) going on at column 0
    of the next row; lanes outside the plane (padding columns, past the row's end or the last row) dropped."""
    rows, columns = plane.shape
    count = simd.lanes(value)
    if o_h < rows and o_w + count <= columns and plane.strides[1] == plane.itemsize:
        simd.store(plane[o_h], o_w, value)  # the whole vector is one run of the row
        return
    simd.store(scratch, 0, value)
    lane = 0
    while lane < count and o_h < rows:  # one run per row the vector reaches
        row = plane[o_h]
        for j in range(max(0, min(count - lane, columns - o_w))):
            row[o_w + j] = scratch[lane + j]
        if wrap < 0:
            return
        lane, o_h, o_w = lane + wrap - o_w, o_h + 1, 0


@njit(parallel=True, cache=True)
def _correlate_tiles(src, image_stride, group_stride, width, starts, offsets, depths, weights, out):
    """out[b, g*C_g + co, o_h, o_w] = sum_{t < depths[p]} weights[p, g, co // ROWS, t * ROWS + co % ROWS]
    * src[b * image_stride + g * group_stride + o_h * width + m + offsets[p, t]]: a correlation read in
    place from a flat input whose rows are ``width`` wide, output pixel q = o_h * width + m reading q +
    offsets[p, t] through tap t. One phase (p = 0): o_w = m. Two: the column phases of a stride-2
    transposed conv, o_w = 2m + p, their vectors interleaved into whole runs of out's rows.

    One task per row of ``starts``, the q of the first output of each of its vectors (-1: none). Every
    tile of ROWS output channels runs over one vector before the next vector: the vector's inputs stay
    in the caches while the weights stream from L2 (stride-2 forward 3.3-4.0 -> 3.0-3.2 ms against
    the tiles outer, their weights held in L1).
    """
    n, c_out = out.shape[:2]
    phases, groups, tiles = weights.shape[:3]
    c_out_g = c_out // groups
    lanes = simd.lanes(src)
    for task in prange(n * starts.shape[0]):
        b, vectors = divmod(np.int64(task), starts.shape[0])
        scratch = np.empty(phases * lanes, src.dtype)
        first_phase = np.empty((ROWS, lanes), src.dtype)  # phase 0's tile while phase 1's is computed
        for g in range(groups):
            image = src[b * image_stride + g * group_stride:]
            for q0 in starts[vectors]:
                if q0 < 0:
                    break
                o_h, m = divmod(q0, width)
                for tile in range(tiles):
                    first = g * c_out_g + tile * ROWS
                    for p in range(phases):
                        tile_outputs = _outer_tile(weights[p, g, tile], ROW_BASES, ROWS, image[q0:],
                                                   offsets[p, :depths[p]])
                        for r in range(min(ROWS, c_out_g - tile * ROWS)):
                            if phases == 1:
                                _store_lanes(tile_outputs[r], out[b, first + r], o_h, m, width, scratch)
                            elif p == 0:
                                simd.store(first_phase[r], 0, tile_outputs[r])
                            else:
                                pair = simd.interleave(simd.load(first_phase[r], 0), tile_outputs[r])
                                _store_lanes(pair, out[b, first + r], o_h, 2 * m, -1, scratch)


@njit(inline="always", cache=True)
def _deal_columns(source, evens, odds):
    """evens[k] = source[2k], odds[k] = source[2k + 1] for every k the arrays hold; returns how many of
    evens and of odds were written. Whole vectors deinterleaved in registers (a gather by 2 in scalars
    runs 3x slower than a plain copy)."""
    lanes = simd.lanes(source)
    pairs = min(evens.size, odds.size, source.size // 2)
    in_vectors = pairs - pairs % lanes if source.strides[0] == source.itemsize else 0
    for k in range(0, in_vectors, lanes):
        even, odd = simd.deinterleave(simd.load(source, 2 * k), simd.load(source, 2 * k + lanes))
        simd.store(evens, k, even)
        simd.store(odds, k, odd)
    for k in range(in_vectors, pairs):
        evens[k] = source[2 * k]
        odds[k] = source[2 * k + 1]
    written_evens = pairs + (pairs < evens.size and 2 * pairs < source.size)
    if written_evens > pairs:
        evens[pairs] = source[2 * pairs]
    return written_evens, pairs


@njit(parallel=True, cache=True)
def _split_phases(x, top, left, out):
    """out[b, c, r_h, r_w, i, j] = x[b, c, i * s_h + r_h - top, j * s_w + r_w - left], 0 off x, with
    (s_h, s_w) = out.shape[2:4]: the zero-padded input, split by row and column phase (space-to-depth).

    A strided correlation's taps then read consecutive pixels of one phase for consecutive outputs.
    """
    n, channels, s_h, s_w, rows, columns = out.shape
    h, w = x.shape[2], x.shape[3]
    for task in prange(n * channels):
        b, c = divmod(np.int64(task), channels)
        for r_h in range(s_h):
            if s_w == 2 and left >= 0:  # x's columns 2k and 2k + 1 go to the two column phases at once
                evens, odds = out[b, c, r_h, left % 2], out[b, c, r_h, 1 - left % 2]
                first_even, first_odd = left // 2, (left + 1) // 2
                for i in range(rows):
                    source_h = i * s_h + r_h - top
                    if not 0 <= source_h < h:
                        evens[i] = 0
                        odds[i] = 0
                        continue
                    evens[i, :first_even] = 0
                    odds[i, :first_odd] = 0
                    written_evens, written_odds = _deal_columns(x[b, c, source_h], evens[i, first_even:],
                                                                odds[i, first_odd:])
                    evens[i, first_even + written_evens:] = 0
                    odds[i, first_odd + written_odds:] = 0
                continue
            for r_w in range(s_w):
                lo, hi = valid_outputs(r_w, s_w, left, 1, w, columns)
                for i in range(rows):
                    row, source_h = out[b, c, r_h, r_w, i], i * s_h + r_h - top
                    if not 0 <= source_h < h:
                        row[:] = 0
                        continue
                    row[:lo] = 0
                    source = x[b, c, source_h, lo * s_w + r_w - left:]
                    if s_w == 1:
                        row[lo:hi] = source[:hi - lo]
                    else:
                        inside = row[lo:hi]  # a view from 0, indexed by j alone: LLVM vectorises the loop
                        for j in range(inside.size):
                            inside[j] = source[j * s_w]
                    row[hi:] = 0


def _phase_split(x: np.ndarray, top_left: Pair, stride: Pair, size: Pair) -> np.ndarray:
    """_split_phases into a flat buffer of (N, C, s_h, s_w, rows, columns), plus one vector of zeros at
    the end for the last vector's lanes past the last pixel."""
    shape = (*x.shape[:2], *stride, *size)
    lanes = simd.VECTOR_BYTES // x.itemsize
    flat = np.empty(math.prod(shape) + lanes, x.dtype)
    flat[-lanes:] = 0
    _split_phases(x, *top_left, flat[:-lanes].reshape(shape))
    return flat


@functools.lru_cache(maxsize=64)
def _tap_offsets(cg: int, kernel: Pair, stride: Pair, dilation: Pair,
                 size: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, order): offsets[ci * kH * kW + a] is where tap order[a] = kh * kW + kw of input channel ci
    reads the phase-split input of _phase_split for output pixel 0. Row o_h * s + k * d is row o_h + k*d // s
    of phase k*d % s (likewise along w). Each channel's taps go in the order of their offsets, so the
    loads of a micro-kernel tile walk forward through memory (strided layers: 1.4x faster than tap order).
    """
    plane = size[0] * size[1]
    kh, kw = np.arange(kernel[0]) * dilation[0], np.arange(kernel[1]) * dilation[1]
    along_h = kh % stride[0] * stride[1] * plane + kh // stride[0] * size[1]
    along_w = kw % stride[1] * plane + kw // stride[1]
    taps = (along_h[:, None] + along_w).reshape(-1)
    order = np.argsort(taps, kind="stable")
    channel = np.arange(cg) * stride[0] * stride[1] * plane
    offsets = (channel[:, None] + taps[order]).reshape(-1)
    offsets.flags.writeable = order.flags.writeable = False  # cached: shared by every call with these sizes
    return offsets, order


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


def _vector_starts(images: int, rows: int, columns: int, width: int, lanes: int) -> np.ndarray:
    """The first q = o_h * width + o_w of each vector of outputs of a rows x columns output read from rows
    ``width`` wide, one row per task: up to VECTORS_PER_TASK, fewer where that would leave a thread
    with under 4 tasks (-1: none).

    When a vector fits in an output row: whole vectors along each row, the last one ending at the row's
    end (overlapping the one before it if need be: the same task writes both), whole rows to a task.
    Else consecutive vectors across rows, their lanes on the padding columns dropped.
    """
    along_row = np.minimum(np.arange(0, columns, lanes), columns - lanes)
    across_rows = np.arange(0, (rows - 1) * width + columns, lanes)
    vectors = rows * along_row.size if columns >= lanes else across_rows.size
    per_task = max(1, min(VECTORS_PER_TASK, images * vectors // (4 * numba.get_num_threads())))
    if columns >= lanes:
        rows_per_task = max(1, per_task // along_row.size)
        starts = np.full((-(-rows // rows_per_task) * rows_per_task, along_row.size), -1)
        starts[:rows] = np.arange(rows)[:, None] * width + along_row
        return starts.reshape(-1, rows_per_task * along_row.size)
    starts = np.full(-(-vectors // per_task) * per_task, -1)
    starts[:vectors] = across_rows
    return starts.reshape(-1, per_task)


def _strides(src: np.ndarray, images: int, groups: int, offsets: np.ndarray, reach: int) -> Pair:
    """(image, group) strides of src from _phase_split, after checking that reads at q + offsets[t] for
    q < reach stay inside src in the last image and group: the micro-kernel does not check bounds."""
    image_stride = (src.size - simd.VECTOR_BYTES // src.itemsize) // images
    group_stride = image_stride // groups
    last = (images - 1) * image_stride + (groups - 1) * group_stride + reach - 1 + offsets.max()
    if offsets.min() < 0 or last >= src.size:
        raise AssertionError("conv: the micro-kernel would read outside the padded input")
    return image_stride, group_stride


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


def _correlate(src: np.ndarray, images: int, groups: int, width: int,
               taps: tuple[np.ndarray, np.ndarray, np.ndarray], out: np.ndarray) -> None:
    """Run _correlate_tiles with taps from _tap_tiles on src from _phase_split."""
    depths, offsets, weights = taps
    lanes = simd.VECTOR_BYTES // src.itemsize
    starts = _vector_starts(images, out.shape[2], -(-out.shape[3] // offsets.shape[0]), width, lanes)
    image_stride, group_stride = _strides(src, images, groups, offsets, starts.max() + lanes)
    _correlate_tiles(src, image_stride, group_stride, width, starts, offsets, depths, weights, out)


def _conv_direct(x: np.ndarray, w: np.ndarray, out: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                 groups: int) -> None:
    """out = conv2d(x, w), every element written: the correlation over x zero-padded and split by phase,
    a chunk of images at a time."""
    kernel = w.shape[2:]
    size = tuple(out.shape[2 + i] + (kernel[i] - 1) * dilation[i] // stride[i] for i in (0, 1))
    taps = _tap_tiles([(*_tap_offsets(w.shape[1], kernel, stride, dilation, size), w)], groups, w.shape[0], x.dtype)
    for images in _image_chunks(x.shape[0], math.prod((x.shape[1], *stride, *size, x.itemsize))):
        src = _phase_split(x[images], padding, stride, size)
        _correlate(src, images.stop - images.start, groups, size[1], taps, out[images])


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


def _sub_kernel(w: np.ndarray, taps_h: list[int], taps_w: list[int], groups: int) -> np.ndarray:
    """The correlation kernel of a transposed conv's output phase: w's taps (taps_h, taps_w), gx's group g
    gathering from gy's: (groups * C_in/G, C_out/G, len(taps_h), len(taps_w))."""
    c_out, cg = w.shape[:2]
    sub_kernel = w[:, :, taps_h][:, :, :, taps_w].reshape(groups, c_out // groups, cg, len(taps_h), -1)
    return sub_kernel.transpose(0, 2, 1, 3, 4).reshape(groups * cg, c_out // groups, len(taps_h), -1)


def _transposed_direct(gy: np.ndarray, w: np.ndarray, gx: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                       groups: int) -> None:
    """gx = conv_transpose2d(gy, w), every element written, as one stride-1 correlation per output phase
    (o_h % s_h, o_w % s_w): each phase meets only its own taps, which read gy at consecutive pixels, so
    each is a correlation with a sub-kernel, written into the phase's strided view of gx, or, for the
    two column phases of stride 2 along w, interleaved into whole runs of gx's rows. Stride 1 is one
    phase: the flipped kernel. No FLOP goes into the zeros between strided taps.
    """
    c_out, cg = w.shape[:2]
    lanes = simd.VECTOR_BYTES // gx.itemsize
    problems = []  # (view of gx, [(sub-kernel, first row and column of gy read, sub-dilation) per phase])
    for ph in range(min(stride[0], gx.shape[2])):
        taps_h, offset_h, step_h = _phase(w.shape[2], stride[0], padding[0], dilation[0], ph)
        phases = []
        for pw in range(min(stride[1], gx.shape[3])):
            taps_w, offset_w, step_w = _phase(w.shape[3], stride[1], padding[1], dilation[1], pw)
            if not taps_h or not taps_w:
                gx[:, :, ph::stride[0], pw::stride[1]] = 0  # no tap reaches these outputs
                continue
            phases.append((pw, _sub_kernel(w, taps_h, taps_w, groups), (offset_h, offset_w), (step_h, step_w)))
        rows = gx[:, :, ph::stride[0]]
        if stride[1] == 2 and len(phases) == 2 and -(-gx.shape[3] // 2) >= lanes:
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
    src = _phase_split(gy, (-first[0], -first[1]), (1, 1), size)  # the whole batch: chunks measured slower here
    for out, phases in problems:
        correlations = []
        for sub_kernel, start, step in phases:
            offsets, order = _tap_offsets(c_out // groups, sub_kernel.shape[2:], (1, 1), step, size)
            correlations.append((offsets + (start[0] - first[0]) * size[1] + start[1] - first[1], order, sub_kernel))
        _correlate(src, gy.shape[0], groups, size[1], _tap_tiles(correlations, groups, gx.shape[1], gx.dtype), out)


# ---------------------------------------------------------------------------------------------------
# winograd: F(2x2, 3x3) for 3x3 stride-1 layers, 16 products per 2x2 outputs instead of 36; F(2x2, 2x2) for
# each output phase of 4x4 stride-2 transposed convs, 9 products per 2x2 outputs instead of 16.

# Lavin & Gray (2016): Y = A^T [(G g G^T) * (B^T d B)] A is the 2x2 correlation of the patch d with the
# kernel g, the sum over input channels taken between the transforms. F(2, 3): B^T d = (d0 - d2, d1 + d2,
# d2 - d1, d1 - d3), G below, A^T m = (m0 + m1 + m2, m1 - m2 - m3). F(2, 2): B^T d = (d0 - d1, d1, d2 - d1),
# G g = (g0, g0 + g1, g1), A^T m = (m0 + m1, m1 + m2). Kernels are transformed in float64, rounded once.
KERNEL_TRANSFORM_3 = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
# F(2, 2)'s G for the two phases of a 4x4 stride-2 transposed conv; the second phase's window (d1, d2, d3)
# shares d2 - d1 with the first's, so its B^T d is (-(d2 - d1), d2, d3 - d2): the sign goes into G.
KERNEL_TRANSFORMS_2 = (np.array([[1.0, 0], [1, 1], [0, 1]]), np.array([[-1.0, 0], [1, 1], [0, 1]]))


@njit(parallel=True, cache=True)
def _winograd_weights(kernels, rows, columns, out):
    """out[u * V + v, g, tile, ci * ROWS + r] = (rows k columns^T)[u, v] for the kernel k = kernels[co, ci] of
    output channel co = g*C_g + tile*ROWS + r (rows (U, k_h), columns (V, k_w)): the transformed kernels in
    the micro-kernel's tiles of ROWS output channels, summed in float64 and rounded once to out's dtype.
    Rows past C_g keep out's zeros."""
    groups, tiles = out.shape[1:3]
    c_out_g = kernels.shape[0] // groups
    c_in_g, k_h, k_w = kernels.shape[1:]
    for task in prange(groups * tiles):
        g, tile = divmod(np.int64(task), tiles)
        # in float64, input channels innermost: each step below is one loop over them, which LLVM vectorises
        kernel = np.empty((k_h, k_w, c_in_g))
        half = np.empty((rows.shape[0], k_w, c_in_g))  # rows @ k, then @ columns^T
        for r in range(min(ROWS, c_out_g - tile * ROWS)):
            for a in range(k_h):
                for c in range(k_w):
                    for ci in range(c_in_g):
                        kernel[a, c, ci] = kernels[g * c_out_g + tile * ROWS + r, ci, a, c]
            for u in range(rows.shape[0]):
                for c in range(k_w):
                    for ci in range(c_in_g):
                        half[u, c, ci] = 0.0
                    for a in range(k_h):
                        for ci in range(c_in_g):
                            half[u, c, ci] += rows[u, a] * kernel[a, c, ci]
                for v in range(columns.shape[0]):
                    transformed = out[u * columns.shape[0] + v, g, tile]
                    for ci in range(c_in_g):
                        total = 0.0
                        for c in range(k_w):
                            total += half[u, c, ci] * columns[v, c]
                        transformed[ci * ROWS + r] = total


@njit(inline="always", cache=True)
def _input_transform(array, i0, i1, i2, i3):
    """F(2, 3)'s B^T applied to the vectors d_k at array[i_k]: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    d0, d1, d2, d3 = simd.load(array, i0), simd.load(array, i1), simd.load(array, i2), simd.load(array, i3)
    return simd.subtract(d0, d2), simd.add(d1, d2), simd.subtract(d2, d1), simd.subtract(d1, d3)


@njit(inline="always", cache=True)
def _output_transform(array, i0, i1, i2, i3):
    """F(2, 3)'s A^T applied to the vectors m_k at array[i_k]: (m0 + m1 + m2, m1 - m2 - m3)."""
    m0, m1, m2, m3 = simd.load(array, i0), simd.load(array, i1), simd.load(array, i2), simd.load(array, i3)
    return simd.add(simd.add(m0, m1), m2), simd.subtract(simd.subtract(m1, m2), m3)


@njit(inline="always", cache=True)
def _window_transforms(array, i0, i1, i2, i3):
    """F(2, 2)'s B^T applied to both 3-value windows of the vectors d_k at array[i_k], the shared d2 - d1 once:
    (d0 - d1, d1, d2 - d1, d2, d3 - d2), the first window's transform at 0, the second's (sign aside) at 2."""
    d0, d1, d2, d3 = simd.load(array, i0), simd.load(array, i1), simd.load(array, i2), simd.load(array, i3)
    return simd.subtract(d0, d1), d1, simd.subtract(d2, d1), d2, simd.subtract(d3, d2)


@njit(inline="always", cache=True)
def _window_sums(m, step):
    """F(2x2, 2x2)'s A^T M A for the 3x3 vectors M[u, v] at m[(3u + v) * step]: Y[a, c] is the sum of M's 2x2
    window at (a, c). Returns Y[0, 0], Y[0, 1], Y[1, 0], Y[1, 1]."""
    m00, m01, m02 = simd.load(m, 0), simd.load(m, step), simd.load(m, 2 * step)
    m10, m11, m12 = simd.load(m, 3 * step), simd.load(m, 4 * step), simd.load(m, 5 * step)
    m20, m21, m22 = simd.load(m, 6 * step), simd.load(m, 7 * step), simd.load(m, 8 * step)
    r00, r01, r10, r11 = simd.add(m00, m01), simd.add(m01, m02), simd.add(m10, m11), simd.add(m11, m12)
    r20, r21 = simd.add(m20, m21), simd.add(m21, m22)
    return simd.add(r00, r10), simd.add(r01, r11), simd.add(r10, r20), simd.add(r11, r21)


@njit(inline="always", cache=True)
def _nan_if_non_finite(check, value):
    """check + (value - value): NaN from the first infinite or NaN value on (inf - inf is NaN), else 0. The
    value checked is a sum of outputs: one past the float range sends the layer to the direct sum too, which
    is never wrong, only slower."""
    return simd.add(check, simd.subtract(value, value))


@njit(parallel=True, cache=True)
def _winograd_tiles(src, image_stride, group_stride, width, starts, patch_offsets, channel_stride, weights, out,
                    non_finite):
    """out[b, g*C_g + co, 2i + a, 2j + c] for the 2x2 output tiles q = i * width + j of ``starts``' vectors
    (see _vector_starts): the Winograd F(2x2, 3x3) correlation of the split input of _winograd_split, whose
    tile q's 4 x 4 patch element (u, v) is src[... + q + patch_offsets[4u + v]] in each channel's block of
    channel_stride; weights[k, g, tile, ci * ROWS + r] = (G w G^T)[k] of output channel g*C_g + tile*ROWS + r
    and input channel ci.

    Per vector of 32 tiles: the 16 transformed patches of every input channel (B^T d B, into V), then per
    element k of them a product over input channels through the micro-kernel (V[k] sits in L1 while every
    tile of output channels runs over it), then per output channel the 2x2 outputs (A^T M A), their two
    columns interleaved into runs of output rows. non_finite[task] is set when a task computed an
    infinity or a NaN.
    """
    n, c_out = out.shape[:2]
    groups, tiles, depth = weights.shape[1:]
    c_in_g, c_out_g = depth // ROWS, c_out // groups
    lanes = simd.lanes(src)
    channel_lanes = np.arange(c_in_g) * lanes
    for task in prange(n * starts.shape[0]):
        b, vectors = divmod(np.int64(task), starts.shape[0])
        # V[k, ci]: B^T d B of each channel; M[k, co] at k * stride + co * lanes: the sum over ci of U * V.
        # Rows one vector longer than they need: 16 rows a multiple of 4 KiB apart would share L1 sets.
        transformed = np.empty((16, (c_in_g + 1) * lanes), src.dtype)
        stride = (tiles * ROWS + 1) * lanes
        products = np.empty(16 * stride, src.dtype)
        half = np.empty(16 * lanes, src.dtype)  # a transform done along one axis
        scratch = np.empty(2 * lanes, src.dtype)
        finite_check = simd.zeros(src)
        for g in range(groups):
            for q0 in starts[vectors]:
                if q0 < 0:
                    break
                i, j = divmod(q0, width)
                image = src[b * image_stride + g * group_stride + q0:]
                for ci in range(c_in_g):
                    patch = image[ci * channel_stride:]
                    for v in range(4):  # B^T down each column of the patch, then B along each row
                        column = _input_transform(patch, patch_offsets[v], patch_offsets[4 + v],
                                                  patch_offsets[8 + v], patch_offsets[12 + v])
                        for u in range(4):
                            simd.store(half, (4 * u + v) * lanes, column[u])
                    for u in range(4):
                        row = _input_transform(half, 4 * u * lanes, (4 * u + 1) * lanes, (4 * u + 2) * lanes,
                                               (4 * u + 3) * lanes)
                        for v in range(4):
                            simd.store(transformed[4 * u + v], ci * lanes, row[v])
                for k in range(16):
                    for tile in range(tiles):
                        sums = _outer_tile(weights[k, g, tile], ROW_BASES, ROWS, transformed[k], channel_lanes)
                        for r in range(ROWS):
                            simd.store(products, k * stride + (tile * ROWS + r) * lanes, sums[r])
                for co in range(c_out_g):
                    for v in range(4):  # A^T down each column of M, then A along each row
                        m = products[v * stride + co * lanes:]
                        column = _output_transform(m, 0, 4 * stride, 8 * stride, 12 * stride)
                        for a in range(2):
                            simd.store(half, (4 * a + v) * lanes, column[a])
                    for a in range(2):
                        y0, y1 = _output_transform(half, 4 * a * lanes, (4 * a + 1) * lanes, (4 * a + 2) * lanes,
                                                   (4 * a + 3) * lanes)
                        finite_check = _nan_if_non_finite(finite_check, simd.add(y0, y1))
                        _store_lanes(simd.interleave(y0, y1), out[b, g * c_out_g + co, a::2], i, 2 * j, 2 * width,
                                     scratch)
        simd.store(scratch, 0, finite_check)
        non_finite[task] = np.isnan(scratch[:lanes]).any()


@njit(parallel=True, cache=True)
def _winograd_transposed_tiles(src, image_stride, group_stride, width, starts, patch_offsets, channel_stride,
                               weights, out, non_finite):
    """out[b, g*C_g + co, 4i + r, 4j + c] for the 4x4 output tiles q = i * width + j of ``starts``' vectors:
    the conv_transpose2d (kernel 4x4, stride 2, padding 1) of the input, split as for _winograd_tiles with
    padding 1, so that tile q's 4 x 4 patch covers input rows 2i - 1 ... 2i + 2. Output phase (ph, pw) of a
    tile, rows 4i + 2a + ph and columns 4j + 2c + pw, is the 2x2 correlation of the patch's 3x3 window at
    (ph, pw) with a 2x2 sub-kernel: Winograd F(2x2, 2x2), 9 products instead of 16; weights[9p + 3u + v, g,
    tile, ci * ROWS + r] = (G_ph g G_pw^T)[u, v] of phase p = 2 ph + pw, output channel g*C_g + tile*ROWS + r
    and input channel ci (_transposed_winograd).

    Per vector of 32 tiles: the 5 x 5 transformed values of every input channel (both windows along each
    axis share their middle one), then per tile of ROWS output channels its 36 products through the
    micro-kernel and the 4x4 outputs of each channel (A^T M A of each phase) into ``pending``. A tile's
    outputs are stored while the next tile's products run, one row of 4 x 32 columns after each product:
    stored in one burst (64 KiB a vector in float32) they stalled the core, 16.9 instead of 15.9 ms.
    non_finite[task] is set when a task computed an infinity or a NaN.
    """
    n, c_out = out.shape[:2]
    groups, tiles, depth = weights.shape[1:]
    c_in_g, c_out_g = depth // ROWS, c_out // groups
    lanes = simd.lanes(src)
    channel_lanes = np.arange(c_in_g) * lanes
    for task in prange(n * starts.shape[0]):
        b, vectors = divmod(np.int64(task), starts.shape[0])
        transformed = np.empty((25, (c_in_g + 1) * lanes), src.dtype)  # V[5s + t, ci], rows padded as above
        products = np.empty(36 * ROWS * lanes, src.dtype)  # M[k, r] of one tile of output channels
        pending = np.empty(16 * ROWS * lanes, src.dtype)  # Y[r, 2a + ph, 2c + pw] of the tile before
        half = np.empty(20 * lanes, src.dtype)
        scratch = np.empty(4 * lanes, src.dtype)
        finite_check = simd.zeros(src)
        for g in range(groups):
            for q0 in starts[vectors]:
                if q0 < 0:
                    break
                i, j = divmod(q0, width)
                image = src[b * image_stride + g * group_stride + q0:]
                # _winograd_tiles' loop with 5 values per column: one helper taking the transform as an
                # argument made the 3x3 forward 13% slower (Numba does not inline a function passed as a value)
                for ci in range(c_in_g):
                    patch = image[ci * channel_stride:]
                    for v in range(4):  # B^T down each column of the patch, then B along each row
                        column = _window_transforms(patch, patch_offsets[v], patch_offsets[4 + v],
                                                    patch_offsets[8 + v], patch_offsets[12 + v])
                        for s in range(5):
                            simd.store(half, (4 * s + v) * lanes, column[s])
                    for s in range(5):
                        row = _window_transforms(half, 4 * s * lanes, (4 * s + 1) * lanes, (4 * s + 2) * lanes,
                                                 (4 * s + 3) * lanes)
                        for t in range(5):
                            simd.store(transformed[5 * s + t], ci * lanes, row[t])
                for tile in range(tiles + 1):  # tile == tiles: the last tile's stores alone
                    for k in range(36):
                        if tile < tiles:
                            p, uv = divmod(k, 9)
                            u, v = divmod(uv, 3)
                            sums = _outer_tile(weights[k, g, tile], ROW_BASES, ROWS,
                                               transformed[5 * (2 * (p // 2) + u) + 2 * (p % 2) + v], channel_lanes)
                            for r in range(ROWS):
                                simd.store(products, (k * ROWS + r) * lanes, sums[r])
                        r, row = divmod(k, 4)
                        if tile > 0 and r < min(ROWS, c_out_g - (tile - 1) * ROWS):
                            at = (4 * r + row) * 4 * lanes  # columns 4j + (0, 1, 2, 3) from (c, pw) = 00, 01, 10, 11
                            y = simd.interleave(
                                simd.interleave(simd.load(pending, at), simd.load(pending, at + 2 * lanes)),
                                simd.interleave(simd.load(pending, at + lanes), simd.load(pending, at + 3 * lanes)))
                            _store_lanes(y, out[b, g * c_out_g + (tile - 1) * ROWS + r, row::4], i, 4 * j, 4 * width,
                                         scratch)
                    if tile == tiles:
                        break
                    for r in range(ROWS):
                        for p in range(4):
                            y00, y01, y10, y11 = _window_sums(products[(9 * p * ROWS + r) * lanes:], ROWS * lanes)
                            finite_check = _nan_if_non_finite(finite_check, simd.add(simd.add(y00, y01),
                                                                                     simd.add(y10, y11)))
                            at = (4 * r + p // 2) * 4 * lanes + p % 2 * lanes
                            simd.store(pending, at, y00)
                            simd.store(pending, at + 2 * lanes, y01)
                            simd.store(pending, at + 8 * lanes, y10)
                            simd.store(pending, at + 10 * lanes, y11)
        simd.store(scratch, 0, finite_check)
        non_finite[task] = np.isnan(scratch[:lanes]).any()


def _uses_winograd(kernel: Pair, stride: Pair, dilation: Pair) -> bool:
    """Whether the algorithm is ``winograd`` and the layer one of the 3x3 stride-1 undilated it serves."""
    return _algorithm == "winograd" and kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1)


def _uses_transposed_winograd(kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> bool:
    """Whether the algorithm is ``winograd`` and the transposed conv (backward-input) one of kernel 4x4,
    stride 2, padding 1, undilated: the exact 2x upsampling that _winograd_transposed_tiles serves."""
    return _algorithm == "winograd" and (kernel, stride, padding, dilation) == ((4, 4), (2, 2), (1, 1), (1, 1))


def _winograd_split(x: np.ndarray, padding: Pair, tiles_hw: Pair, groups: int, c_in_g: int) -> tuple:
    """x zero-padded and split into 2 x 2 phases, so that element (u, v) of the 4 x 4 patch of tile (i, j),
    rows 2i + u and columns 2j + v of the padded x, is src[q + patch_offsets[4u + v]] for q = i * width + j
    in each channel's block, and a vector of 32 tiles along a row is one load per patch element.
    Returns the arguments of the tiles kernels up to the weights: (src, image_stride, group_stride, width,
    starts, patch_offsets, channel_stride)."""
    size = (tiles_hw[0] + 1, tiles_hw[1] + 1)  # the patch of tile (i, j) is rows i, i + 1 of each phase
    src = _phase_split(x, padding, (2, 2), size)
    plane = size[0] * size[1]
    u, v = np.arange(4)[:, None], np.arange(4)
    patch_offsets = ((u % 2 * 2 + v % 2) * plane + u // 2 * size[1] + v // 2).reshape(-1)
    lanes = simd.VECTOR_BYTES // x.itemsize
    starts = _vector_starts(x.shape[0], *tiles_hw, size[1], lanes)
    reads = np.array([0, (c_in_g - 1) * 4 * plane + patch_offsets.max()])
    image_stride, group_stride = _strides(src, x.shape[0], groups, reads, starts.max() + lanes)
    return src, image_stride, group_stride, size[1], starts, patch_offsets, 4 * plane


def _all_finite(tiles_kernel, split: tuple, weights: np.ndarray, out: np.ndarray) -> bool:
    """Run a Winograd tiles kernel on _winograd_split's arguments into out; False if one of its tasks (one
    per image and row of starts) computed an infinity or a NaN."""
    non_finite = np.zeros(out.shape[0] * split[4].shape[0], np.bool_)
    tiles_kernel(*split, weights, out, non_finite)
    return not non_finite.any()


def _conv_winograd(x: np.ndarray, w: np.ndarray, out: np.ndarray, padding: Pair, groups: int) -> bool:
    """out = conv2d(x, w) of a 3x3 stride-1 layer, every element written: Winograd F(2x2, 3x3) over x
    split by _winograd_split. (The whole batch at once: chunks of images, as _conv_direct takes them,
    measured slower here.)

    Returns False when an output is infinite or NaN: the transforms subtract inputs from each other, so
    an infinity can come out NaN where the direct sum (and PyTorch) gives +-inf; the caller then runs
    the direct sum instead."""
    split = _winograd_split(x, padding, (-(-out.shape[2] // 2), -(-out.shape[3] // 2)), groups, w.shape[1])
    weights = np.zeros((16, groups, -(-w.shape[0] // groups // ROWS), w.shape[1] * ROWS), x.dtype)
    _winograd_weights(w, KERNEL_TRANSFORM_3, KERNEL_TRANSFORM_3, weights)
    return _all_finite(_winograd_tiles, split, weights, out)


def _transposed_winograd(gy: np.ndarray, w: np.ndarray, gx: np.ndarray, groups: int) -> bool:
    """gx = conv_transpose2d(gy, w) of kernel 4x4, stride 2, padding 1, every element written: Winograd
    F(2x2, 2x2) on each output phase's 2x2 sub-kernel (_phase: rows of phase 0 take taps 3, 1 from gy rows
    m - 1, m; phase 1 taps 2, 0 from m, m + 1). Returns False when an output is infinite or NaN, as
    _conv_winograd."""
    split = _winograd_split(gy, (1, 1), (-(-gx.shape[2] // 4), -(-gx.shape[3] // 4)), groups, w.shape[0] // groups)
    taps = [_phase(4, 2, 1, 1, phase)[0] for phase in (0, 1)]  # [3, 1] and [2, 0]
    weights = np.zeros((36, groups, -(-gx.shape[1] // groups // ROWS), w.shape[0] // groups * ROWS), gy.dtype)
    for p, (ph, pw) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        _winograd_weights(_sub_kernel(w, taps[ph], taps[pw], groups), KERNEL_TRANSFORMS_2[ph], KERNEL_TRANSFORMS_2[pw],
                          weights[9 * p:9 * p + 9])
    return _all_finite(_winograd_transposed_tiles, split, weights, gx)


# ---------------------------------------------------------------------------------------------------
# direct, backward-weight: the same micro-kernel, reducing over pixels.


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


# ---------------------------------------------------------------------------------------------------
# im2col: columns of a chunk of output rows, and BLAS.


@njit(inline="always", cache=True)
def _source_index(o, k, s, p, d, size):
    """Input coordinate ``o*s - p + k*d`` read by output coordinate ``o`` through tap ``k``, or -1 if it
    is padding."""
    i = o * s - p + k * d
    return i if 0 <= i < size else -1


@njit(cache=True)
def _im2col_row(x, k, r0, rows, c0, kernel, stride, padding, dilation, out_hw, cols):
    """cols[k, r*W_out + o_w] = x[b, c0 + ci, i_h, i_w] (0 in the padding), k = (ci, kh, kw), for the
    output rows r0 + r (flat b*H_out + o_h)."""
    _, _, h, w = x.shape
    out_h, out_w = out_hw
    ci, tap = divmod(k, kernel[0] * kernel[1])
    kh, kw = divmod(tap, kernel[1])
    lo, hi = valid_outputs(kw, stride[1], padding[1], dilation[1], w, out_w)
    offset_w = kw * dilation[1] - padding[1]
    for r in range(rows):
        b, o_h = divmod(r0 + r, out_h)
        i_h = _source_index(o_h, kh, stride[0], padding[0], dilation[0], h)
        row = cols[k, r * out_w:(r + 1) * out_w]
        if i_h < 0:
            row[:] = 0
            continue
        row[:lo] = 0
        inside, source = row[lo:hi], x[b, c0 + ci, i_h, lo * stride[1] + offset_w:]
        for q in range(inside.size):  # views from 0: no index wrap-around, so LLVM vectorises
            inside[q] = source[q * stride[1]]
        row[hi:] = 0


@njit(parallel=True, cache=True)
def _im2col(x, r0, rows, c0, kernel, stride, padding, dilation, out_hw, cols):
    for k in prange(cols.shape[0]):
        _im2col_row(x, np.int64(k), r0, rows, c0, kernel, stride, padding, dilation, out_hw, cols)


@njit(parallel=True, cache=True)
def _col2im(cols, r0, rows, c0, kernel, stride, padding, dilation, out_hw, gx):
    """gx[b, c0 + ci, i_h, i_w] += cols[(ci, kh, kw), r*W_out + o_w]: the adjoint of _im2col_row.

    Parallel over channels: every thread owns whole planes of gx, so the sums never race.
    """
    _, _, h, w = gx.shape
    out_h, out_w = out_hw
    taps = kernel[0] * kernel[1]
    for ci in prange(cols.shape[0] // taps):
        ci = np.int64(ci)
        for kh in range(kernel[0]):
            for kw in range(kernel[1]):
                k = ci * taps + kh * kernel[1] + kw
                lo, hi = valid_outputs(kw, stride[1], padding[1], dilation[1], w, out_w)
                offset_w = kw * dilation[1] - padding[1]
                for r in range(rows):
                    b, o_h = divmod(r0 + r, out_h)
                    i_h = _source_index(o_h, kh, stride[0], padding[0], dilation[0], h)
                    if i_h < 0:
                        continue
                    target = gx[b, c0 + ci, i_h, lo * stride[1] + offset_w:]
                    source = cols[k, r * out_w + lo:r * out_w + hi]
                    for q in range(source.size):
                        target[q * stride[1]] += source[q]


@njit(parallel=True, cache=True)
def _planes_to_rows(src, r0, rows, c0, out):
    """out[c, r*W + j] = src[b, c0 + c, o_h, j] for the flat rows r0 + r = b*H + o_h."""
    out_h, out_w = src.shape[2], src.shape[3]
    for c in prange(out.shape[0]):
        c = np.int64(c)
        for r in range(rows):
            b, o_h = divmod(r0 + r, out_h)
            out[c, r * out_w:(r + 1) * out_w] = src[b, c0 + c, o_h, :]


@njit(parallel=True, cache=True)
def _rows_to_planes(rows_array, r0, rows, c0, out):
    """The inverse copy of _planes_to_rows."""
    out_h, out_w = out.shape[2], out.shape[3]
    for c in prange(rows_array.shape[0]):
        c = np.int64(c)
        for r in range(rows):
            b, o_h = divmod(r0 + r, out_h)
            out[b, c0 + c, o_h, :] = rows_array[c, r * out_w:(r + 1) * out_w]


def _chunks(n: int, out_hw: Pair, depth: int, itemsize: int) -> Iterator[tuple[int, int]]:
    """(first flat output row, row count) of each im2col chunk: whole images if one fits in
    CHUNK_BYTES, else bands of one image."""
    out_h, out_w = out_hw
    rows = max(1, CHUNK_BYTES // max(1, depth * out_w * itemsize))
    if rows >= out_h:
        rows = rows // out_h * out_h
    total = n * out_h
    for r0 in range(0, total, rows):
        yield r0, min(rows, total - r0)


def _rows_view(planes: np.ndarray, r0: int, rows: int, c0: int, count: int) -> np.ndarray | None:
    """planes[b, c0:c0+count] as a (count, H*W) matrix when the chunk is exactly image b, else None."""
    out_h = planes.shape[2]
    if rows != out_h or r0 % out_h:
        return None
    return planes[r0 // out_h, c0:c0 + count].reshape(count, -1)


def _gather_rows(planes: np.ndarray, r0: int, rows: int, c0: int, count: int) -> np.ndarray:
    view = _rows_view(planes, r0, rows, c0, count)
    if view is not None:
        return view
    out = np.empty((count, rows * planes.shape[3]), planes.dtype)
    _planes_to_rows(planes, r0, rows, c0, out)
    return out


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ---------------------------------------------------------------------------------------------------
# The kernel table.


def conv2d_forward(x: np.ndarray, w: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                   groups: int) -> np.ndarray:
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, _, h, wd = x.shape
    c_out, cg, k_h, k_w = w.shape
    kernel = (k_h, k_w)
    out_hw = (_output_size(h, k_h, stride[0], padding[0], dilation[0]),
              _output_size(wd, k_w, stride[1], padding[1], dilation[1]))
    if math.prod((n, c_out, *out_hw)) == 0 or cg == 0:
        return np.zeros((n, c_out, *out_hw), x.dtype)
    y = simd.empty((n, c_out, *out_hw), x.dtype)  # every path below writes every element
    if _uses_winograd(kernel, stride, dilation) and _conv_winograd(x, w, y, padding, groups):
        return y
    if _algorithm != "im2col":  # direct, or winograd's layers with an infinite or NaN output
        _conv_direct(x, w, y, stride, padding, dilation, groups)
        return y
    c_out_g = c_out // groups
    depth = cg * k_h * k_w
    weight = w.reshape(groups, c_out_g, depth)
    for r0, rows in _chunks(n, out_hw, depth, x.itemsize):
        cols = np.empty((depth, rows * out_hw[1]), x.dtype)
        for g in range(groups):
            _im2col(x, r0, rows, g * cg, kernel, stride, padding, dilation, out_hw, cols)
            view = _rows_view(y, r0, rows, g * c_out_g, c_out_g)
            if view is not None:
                np.matmul(weight[g], cols, out=view)
            else:
                _rows_to_planes(weight[g] @ cols, r0, rows, g * c_out_g, y)
    return y


def conv2d_backward_input(gy: np.ndarray, w: np.ndarray, x_shape: tuple[int, int, int, int], stride: Pair,
                          padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, c_out, out_h, out_w = gy.shape
    _, cg, k_h, k_w = w.shape
    kernel = (k_h, k_w)
    x_shape = tuple(int(s) for s in x_shape)
    if math.prod(x_shape) == 0 or gy.size == 0:
        return np.zeros(x_shape, gy.dtype)
    # winograd and direct write every element of gx; col2im adds into it
    gx = np.zeros(x_shape, gy.dtype) if _algorithm == "im2col" else simd.empty(x_shape, gy.dtype)
    c_out_g = c_out // groups
    # stride 1: one phase, whose correlation kernel is w flipped (_sub_kernel of the taps in reverse)
    if _uses_winograd(kernel, stride, dilation) and _conv_winograd(
            gy, _sub_kernel(w, [2, 1, 0], [2, 1, 0], groups), gx, (k_h - 1 - padding[0], k_w - 1 - padding[1]),
            groups):
        return gx
    if _uses_transposed_winograd(kernel, stride, padding, dilation) and _transposed_winograd(gy, w, gx, groups):
        return gx
    if _algorithm != "im2col":  # direct, or winograd's layers with an infinite or NaN output
        _transposed_direct(gy, w, gx, stride, padding, dilation, groups)
        return gx
    depth = cg * k_h * k_w
    weight_t = [np.ascontiguousarray(w_g.T) for w_g in w.reshape(groups, c_out_g, depth)]
    for r0, rows in _chunks(n, (out_h, out_w), depth, gy.itemsize):
        for g in range(groups):
            cols = weight_t[g] @ _gather_rows(gy, r0, rows, g * c_out_g, c_out_g)
            _col2im(cols, r0, rows, g * cg, kernel, stride, padding, dilation, (out_h, out_w), gx)
    return gx


def conv2d_backward_weight(x: np.ndarray, gy: np.ndarray, w_shape: tuple[int, int, int, int], stride: Pair,
                           padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, c_out, out_h, out_w = gy.shape
    _, cg, k_h, k_w = (int(s) for s in w_shape)
    kernel = (k_h, k_w)
    depth = cg * k_h * k_w
    if gy.size == 0 or depth == 0:
        return np.zeros((c_out, cg, k_h, k_w), x.dtype)
    c_out_g = c_out // groups
    if _algorithm != "im2col":
        return _conv_backward_weight_direct(x, gy, (c_out, cg, k_h, k_w), stride, padding, dilation, groups)
    gw = np.zeros((c_out, depth), x.dtype)
    for r0, rows in _chunks(n, (out_h, out_w), depth, x.itemsize):
        cols = np.empty((depth, rows * out_w), x.dtype)
        for g in range(groups):
            _im2col(x, r0, rows, g * cg, kernel, stride, padding, dilation, (out_h, out_w), cols)
            gw[g * c_out_g:(g + 1) * c_out_g] += _gather_rows(gy, r0, rows, g * c_out_g, c_out_g) @ cols.T
    return gw.reshape(c_out, cg, k_h, k_w)
