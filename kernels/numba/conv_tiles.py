"""The machinery the direct, Winograd and weight-gradient convolutions share: an outer-product
micro-kernel held in vector registers (``_outer_tile``), and the zero-padded, phase-split input it reads
in place (``_split_phases``, ``_tap_offsets``), in vectors of outputs a task (``_vector_starts``).

Numba's on-disk cache checks only the source file of each cached function: the ``inline="always"``
functions here are compiled into the kernels of conv_direct, conv_winograd and conv_weight_grad, so
after changing one, delete ``kernels/numba/__pycache__`` or those kernels keep their old machine code.
"""

import functools
import math

import numpy as np
from numba import njit
from numba.cpython.unsafe.tuple import tuple_setitem

from . import simd, target
from ._common import Pair, valid_outputs
from .tasks import run_tasks

ROWS = target.ROWS  # rows of a tile of the outer-product micro-kernel: 8 on AVX-512, 6 on AVX2 (target.py)
# a layer's last tile, when it has this many rows or fewer to fill, runs a micro-kernel of this many rows: on
# AVX2, 16 channels are tiles of 6 + 6 + 4 rows rather than 6 + 6 + 6 (11% of the FMAs were on zero rows)
SHORT_ROWS = ROWS - 2
ROW_BASES = np.arange(ROWS)  # a forward tile's weights: ROWS per tap, side by side
VECTORS_PER_TASK = 8  # vectors of outputs (or of Winograd tiles) per task at most


@njit(inline="always", cache=True)
def _outer_tile(scalars, bases, step, vectors, offsets, rows):
    """The rows x lanes tile sum_t scalars[bases[r] + t * step] * vectors[offsets[t] + l], r < rows, l < lanes.

    The rows accumulators are vectors along l that stay in registers while t runs: each t loads one
    vector and broadcasts ``rows`` scalars into it, ``rows`` FMAs per load and no horizontal sums. rows is
    a compile-time constant (ROWS or SHORT_ROWS), so the loop over rows unrolls and the tuple of
    accumulators is registers.
    """
    tile = simd.repeat(simd.zeros(vectors), rows)
    for t in range(offsets.size):
        v, s = simd.load(vectors, offsets[t]), t * step
        for r in range(rows):
            tile = tuple_setitem(tile, r, simd.fma(simd.broadcast(scalars, bases[r] + s), v, tile[r]))
    return tile


@njit(inline="always", cache=True)
def _tile_into(used, scalars, bases, step, vectors, offsets, out, at):
    """out[at + r * lanes:][:lanes] = row r of the tile of _outer_tile, for the first ``used`` rows (those
    that matter) at least: through the SHORT_ROWS micro-kernel when they fit in it (the rows past it are
    then not written), else the ROWS one. The one store path after it then serves both (each its own
    copy of the stores compiled 3 s longer)."""
    lanes = simd.lanes(vectors)
    if used <= SHORT_ROWS:
        short = _outer_tile(scalars, bases, step, vectors, offsets, SHORT_ROWS)
        for r in range(SHORT_ROWS):
            simd.store(out, at + r * lanes, short[r])
    else:
        tile = _outer_tile(scalars, bases, step, vectors, offsets, ROWS)
        for r in range(ROWS):
            simd.store(out, at + r * lanes, tile[r])


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


@njit(cache=True, error_model="numpy")
def _split_phases(first_plane, last_plane, x, top, left, out):
    """out[b, c, r_h, r_w, i, j] = x[b, c, i * s_h + r_h - top, j * s_w + r_w - left], 0 off x, with
    (s_h, s_w) = out.shape[2:4], for the planes (b, c) = divmod(task, C) of tasks first_plane .. last_plane - 1:
    the zero-padded input, split by row and column phase (space-to-depth). x and out are C-contiguous.

    A strided correlation's taps then read consecutive pixels of one phase for consecutive outputs.
    Each plane is zeroed in one run, then its rows inside x are copied by flat offsets: unsigned, so
    Numba adds no wraparound test to each access, and no view is made per row (rows of 8-32 pixels
    ran 2.2-3.7x faster than with a slice per row). Rows of stride-2 columns at least a vector long
    deal x's columns 2k and 2k + 1 to the two column phases in registers instead (``_deal_columns``).
    """
    channels, s_h, s_w, rows, columns = out.shape[1:]
    h, w = x.shape[2], x.shape[3]
    lanes = simd.lanes(x)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    plane_x, plane_out = np.uint64(h * w), np.uint64(s_h * s_w * rows * columns)
    for task in range(first_plane, last_plane):
        b, c = divmod(task, channels)
        first_x, first_out = np.uint64(task) * plane_x, np.uint64(task) * plane_out
        flat_out[first_out:first_out + plane_out] = 0
        for r_h in range(s_h):
            i_lo, i_hi = valid_outputs(r_h, s_h, top, 1, h, rows)
            if s_w == 2 and left >= 0 and min(columns - (left + 1) // 2, w // 2) >= lanes:
                evens, odds = out[b, c, r_h, left % 2], out[b, c, r_h, 1 - left % 2]  # x's columns 2k, 2k + 1
                for i in range(i_lo, i_hi):
                    _deal_columns(x[b, c, i * s_h + r_h - top], evens[i, left // 2:], odds[i, (left + 1) // 2:])
                continue
            for r_w in range(s_w):
                lo, hi = valid_outputs(r_w, s_w, left, 1, w, columns)
                for i in range(i_lo, i_hi):
                    to = first_out + np.uint64(((r_h * s_w + r_w) * rows + i) * columns + lo)
                    source = first_x + np.uint64((i * s_h + r_h - top) * w + lo * s_w + r_w - left)
                    for j in range(hi - lo):
                        flat_out[to + np.uint64(j)] = flat_x[source + np.uint64(j * s_w)]


@njit(cache=True)
def _split_rows(x, b, top, left, stride_h, stride_w, first_row, rows, width):
    """A task's band of the split input: rows first_row .. first_row + rows - 1 of each phase of image b of
    x (C-contiguous) zero-padded by (top, left) and split by _split_phases into rows ``width`` wide, flat in
    the task's own buffer (it stays in L2 while the task reads it), plus a vector of zeros after them for
    lanes past the last row."""
    channels = x.shape[1]
    size = channels * stride_h * stride_w * rows * width
    band = np.empty(size + simd.lanes(x), x.dtype)
    band[size:] = 0
    # np.int64(0), not the literal 0: Numba would compile _split_phases a second time for Literal[int](0)
    _split_phases(np.int64(0), channels, x[b:b + 1], top - first_row * stride_h, left,
                  band[:size].reshape((1, channels, stride_h, stride_w, rows, width)))
    return band


def _phase_split(x: np.ndarray, top_left: Pair, stride: Pair, size: Pair) -> tuple[np.ndarray, int]:
    """(src, image_stride): the whole batch split by _split_phases into a flat buffer of (N, C, s_h, s_w,
    rows, columns), image_stride elements an image, plus one vector of zeros at the end for the last
    vector's lanes past the last pixel, as the weight gradients read it (each read inside the split's
    pixels). An input that is its own split (stride 1, no padding, nothing cut off: a 1x1 layer's) is read
    where it is: no copy (it took a third of a 1x1 layer's weight gradient; docs/kernels/conv.md)."""
    shape = (*x.shape[:2], *stride, *size)
    image_stride = math.prod(shape[1:])
    if stride == (1, 1) and tuple(top_left) == (0, 0) and tuple(size) == x.shape[2:]:
        return np.ascontiguousarray(x).reshape(-1), image_stride
    lanes = simd.VECTOR_BYTES // x.itemsize
    flat = np.empty(math.prod(shape) + lanes, x.dtype)
    flat[-lanes:] = 0
    run_tasks(_split_phases, shape[0] * shape[1], np.ascontiguousarray(x), *top_left, flat[:-lanes].reshape(shape))
    return flat, image_stride


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


def _vector_starts(images: int, rows: int, columns: int, width: int, lanes: int, threads: int,
                   most: int = VECTORS_PER_TASK) -> np.ndarray:
    """The first q = o_h * width + o_w of each vector of outputs of a rows x columns output read from rows
    ``width`` wide, one row per task: up to ``most`` (VECTORS_PER_TASK unless the caller wants more), fewer
    where that would leave one of ``threads`` threads with under 4 tasks (-1: none).

    When a vector fits in an output row: whole vectors along each row, the last one ending at the row's
    end (overlapping the one before it if need be: the same task writes both), whole rows to a task.
    Else consecutive vectors across rows, their lanes on the padding columns dropped.
    """
    along_row = np.minimum(np.arange(0, columns, lanes), columns - lanes)
    across_rows = np.arange(0, (rows - 1) * width + columns, lanes)
    vectors = rows * along_row.size if columns >= lanes else across_rows.size
    per_task = max(1, min(most, images * vectors // (4 * threads)))
    if columns >= lanes:
        rows_per_task = max(1, per_task // along_row.size)
        starts: np.ndarray = np.full((-(-rows // rows_per_task) * rows_per_task, along_row.size), -1)
        starts[:rows] = np.arange(rows)[:, None] * width + along_row
        return starts.reshape(-1, rows_per_task * along_row.size)
    starts = np.full(-(-vectors // per_task) * per_task, -1)
    starts[:vectors] = across_rows
    return starts.reshape(-1, per_task)


def _group_stride(src: np.ndarray, image_stride: int, images: int, groups: int, offsets: np.ndarray,
                  reach: int) -> int:
    """The group stride of src from _phase_split, after checking that reads at q + offsets[t] for q < reach
    stay inside src in the last image and group: the micro-kernel does not check bounds."""
    group_stride = image_stride // groups
    last = (images - 1) * image_stride + (groups - 1) * group_stride + reach - 1 + offsets.max()
    if offsets.min() < 0 or last >= src.size:
        raise AssertionError("conv: the micro-kernel would read outside the padded input")
    return group_stride
