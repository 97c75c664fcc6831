"""Winograd convolution: F(2x2, 3x3) for the forward and backward-input of 3x3 stride-1 layers, 16
products per 2x2 outputs and input channel instead of 36; F(2x2, 2x2) for each output phase of the 4x4
stride-2 padding-1 transposed conv, 9 instead of 16. Each 4x4 input patch and each kernel is
transformed, the sum over input channels is conv_tiles' micro-kernel (one per transform element), and
the sums are transformed back.

The sums differ from the direct ones by rounding only; a call whose output holds an infinity or a NaN
returns False, and the caller runs the direct sum instead (Winograd's transforms subtract inputs from
each other, and inf - inf is NaN).
"""

import numba
import numpy as np
from numba import njit

from . import simd
from ._common import Pair
from .conv_direct import _phase, _sub_kernel
from .conv_tiles import (
    ROW_BASES,
    ROWS,
    _split_rows,
    _store_lanes,
    _tile_into,
    _vector_starts,
)
from .tasks import run_tasks

# Lavin & Gray (2016): Y = A^T [(G g G^T) * (B^T d B)] A is the 2x2 correlation of the patch d with the
# kernel g, the sum over input channels taken between the transforms. F(2, 3): B^T d = (d0 - d2, d1 + d2,
# d2 - d1, d1 - d3), G below, A^T m = (m0 + m1 + m2, m1 - m2 - m3). F(2, 2): B^T d = (d0 - d1, d1, d2 - d1),
# G g = (g0, g0 + g1, g1), A^T m = (m0 + m1, m1 + m2). Kernels are transformed in float64, rounded once.
KERNEL_TRANSFORM_3 = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
# F(2, 2)'s G for the two phases of a 4x4 stride-2 transposed conv; the second phase's window (d1, d2, d3)
# shares d2 - d1 with the first's, so its B^T d is (-(d2 - d1), d2, d3 - d2): the sign goes into G.
KERNEL_TRANSFORMS_2 = (np.array([[1.0, 0], [1, 1], [0, 1]]), np.array([[-1.0, 0], [1, 1], [0, 1]]))


@njit(cache=True, error_model="numpy")
def _winograd_weights(first_task, last_task, kernels, rows, columns, out):
    """out[u * V + v, g, tile, ci * ROWS + r] = (rows k columns^T)[u, v] for the kernel k = kernels[co, ci] of
    output channel co = g*C_g + tile*ROWS + r (rows (U, k_h), columns (V, k_w)): the transformed kernels in
    the micro-kernel's tiles of ROWS output channels, summed in float64 and rounded once to out's dtype,
    for (g, tile) = divmod(task, tiles) of the tasks first_task .. last_task - 1. Rows past C_g keep out's
    zeros."""
    groups, tiles = out.shape[1:3]
    c_out_g = kernels.shape[0] // groups
    c_in_g, k_h, k_w = kernels.shape[1:]
    # in float64, input channels innermost: each step below is one loop over them, which LLVM vectorises
    kernel = np.empty((k_h, k_w, c_in_g))
    half = np.empty((rows.shape[0], k_w, c_in_g))  # rows @ k, then @ columns^T
    for task in range(first_task, last_task):
        g, tile = divmod(task, tiles)
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
def _transform_patch(patch, at, patch_offsets, half, transformed, out_at, lanes):
    """B^T d B of the 4x4 patches whose corners' vectors start at patch[at + patch_offsets[k]] (k = 4 * row
    + column): B^T down each column into ``half``, then B along each row, element (u, v) of the result
    stored at transformed[4 * u + v][out_at]. The forward and the weight gradient transform alike."""
    for v in range(4):
        column = _input_transform(patch, at + patch_offsets[v], at + patch_offsets[4 + v],
                                  at + patch_offsets[8 + v], at + patch_offsets[12 + v])
        for u in range(4):
            simd.store(half, (4 * u + v) * lanes, column[u])
    for u in range(4):
        row = _input_transform(half, 4 * u * lanes, (4 * u + 1) * lanes, (4 * u + 2) * lanes, (4 * u + 3) * lanes)
        for v in range(4):
            simd.store(transformed[4 * u + v], out_at, row[v])


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


@njit(cache=True)
def _winograd_tiles(first_task, last_task, x, top, left, width, starts, weights, out, non_finite):
    """out[b, g*C_g + co, 2i + a, 2j + c] for the 2x2 output tiles q = i * width + j of ``starts``' vectors
    (see _vector_starts): the Winograd F(2x2, 3x3) correlation of x padded by (top, left), each task's rows
    split by _split_band; weights[k, g, tile, ci * ROWS + r] = (G w G^T)[k] of output channel
    g*C_g + tile*ROWS + r and input channel ci.

    Per vector of 32 tiles: the 16 transformed patches of every input channel (B^T d B, into V), then per
    element k of them a product over input channels through the micro-kernel (V[k] sits in L1 while every
    tile of output channels runs over it), then per output channel the 2x2 outputs (A^T M A), their two
    columns interleaved into runs of output rows. non_finite[task] is set when a task computed an
    infinity or a NaN.
    """
    c_out = out.shape[1]
    groups, tiles, depth = weights.shape[1:]
    c_in_g, c_out_g = depth // ROWS, c_out // groups
    lanes = simd.lanes(x)
    channel_lanes = np.arange(c_in_g) * lanes
    # V[k, ci]: B^T d B of each channel; M[k, co] at k * stride + co * lanes: the sum over ci of U * V.
    # Rows one vector longer than they need: 16 rows a multiple of 4 KiB apart would share L1 sets.
    transformed = np.empty((16, (c_in_g + 1) * lanes), x.dtype)
    stride = (tiles * ROWS + 1) * lanes
    products = np.empty(16 * stride, x.dtype)
    half = np.empty(16 * lanes, x.dtype)  # a transform done along one axis
    scratch = np.empty(2 * lanes, x.dtype)
    for task in range(first_task, last_task):  # image b, its vectors starts[vectors]
        b, vectors = divmod(task, starts.shape[0])
        band, origin, patch_offsets, channel_stride = _split_vectors(x, b, top, left, width, starts[vectors])
        finite_check = simd.zeros(x)
        for g in range(groups):
            for q0 in starts[vectors]:
                if q0 < 0:
                    break
                i, j = divmod(q0, width)
                image = band[g * c_in_g * channel_stride + q0 - origin:]
                for ci in range(c_in_g):
                    _transform_patch(image[ci * channel_stride:], 0, patch_offsets, half, transformed, ci * lanes,
                                     lanes)
                for k in range(16):
                    for tile in range(tiles):
                        _tile_into(min(ROWS, c_out_g - tile * ROWS), weights[k, g, tile], ROW_BASES, ROWS,
                                   transformed[k], channel_lanes, products, k * stride + tile * ROWS * lanes)
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


@njit(cache=True)
def _winograd_transposed_tiles(first_task, last_task, x, top, left, width, starts, weights, out, non_finite):
    """out[b, g*C_g + co, 4i + r, 4j + c] for the 4x4 output tiles q = i * width + j of ``starts``' vectors:
    the conv_transpose2d (kernel 4x4, stride 2, padding 1) of x, split as for _winograd_tiles with
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
    c_out = out.shape[1]
    groups, tiles, depth = weights.shape[1:]
    c_in_g, c_out_g = depth // ROWS, c_out // groups
    lanes = simd.lanes(x)
    channel_lanes = np.arange(c_in_g) * lanes
    transformed = np.empty((25, (c_in_g + 1) * lanes), x.dtype)  # V[5s + t, ci], rows padded as above
    products = np.empty(36 * ROWS * lanes, x.dtype)  # M[k, r] of one tile of output channels
    pending = np.empty(16 * ROWS * lanes, x.dtype)  # Y[r, 2a + ph, 2c + pw] of the tile before
    half = np.empty(20 * lanes, x.dtype)
    scratch = np.empty(4 * lanes, x.dtype)
    for task in range(first_task, last_task):  # image b, its vectors starts[vectors]
        b, vectors = divmod(task, starts.shape[0])
        band, origin, patch_offsets, channel_stride = _split_vectors(x, b, top, left, width, starts[vectors])
        finite_check = simd.zeros(x)
        for g in range(groups):
            for q0 in starts[vectors]:
                if q0 < 0:
                    break
                i, j = divmod(q0, width)
                image = band[g * c_in_g * channel_stride + q0 - origin:]
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
                            _tile_into(min(ROWS, c_out_g - tile * ROWS), weights[k, g, tile], ROW_BASES, ROWS,
                                       transformed[5 * (2 * (p // 2) + u) + 2 * (p % 2) + v], channel_lanes, products,
                                       k * ROWS * lanes)
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
                    for r in range(min(ROWS, c_out_g - tile * ROWS)):  # the rows _tile_into wrote
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


def _transform_weights(kernels: np.ndarray, rows: np.ndarray, columns: np.ndarray, out: np.ndarray) -> None:
    """_winograd_weights into out (U * V, groups, tiles, C_in_g * ROWS), one task per group and tile."""
    run_tasks(_winograd_weights, out.shape[1] * out.shape[2], kernels, rows, columns, out)


@njit(cache=True)
def _patch_offsets(plane, width):
    """Where element (u, v) of a tile's 4 x 4 patch lies, 4u + v, in a channel's block of the 2 x 2 phases
    split (planes of ``plane`` elements, rows ``width`` wide) from the tile's own position q = i * width + j:
    row 2i + u and column 2j + v of the padded input are row i + u // 2, column j + v // 2 of phase
    (u % 2, v % 2)."""
    offsets = np.empty(16, np.int64)
    for u in range(4):
        for v in range(4):
            offsets[4 * u + v] = (u % 2 * 2 + v % 2) * plane + u // 2 * width + v // 2
    return offsets


@njit(cache=True)
def _split_band(x, b, top, left, width, first, last):
    """(band, origin, patch_offsets, channel_stride): of image b of x (C-contiguous), zero-padded by (top,
    left) and split into 2 x 2 phases of rows ``width`` wide, the rows that the patches of tiles q = first
    .. last read, plus a vector of zeros after them. Tile q's patch element k is band[q - origin +
    patch_offsets[k]] in each channel's block of channel_stride.

    A task splits the rows it reads into a buffer that stays in L2, rather than the whole batch being split
    into memory and read back: the patch transforms of narrow layers read that split at the memory's
    speed (narrow layers 1.15-1.3x faster; docs/kernels/conv.md).
    """
    i_first = first // width
    rows = last // width - i_first + 2  # a patch reads rows i and i + 1 of each phase
    plane = rows * width
    channels = x.shape[1]
    band = _split_rows(x, b, top, left, np.int64(2), np.int64(2), i_first, rows, width)  # not literals: one compile
    patch_offsets = _patch_offsets(plane, width)
    origin = i_first * width
    # the micro-kernels do not check bounds: tile ``last``, through the last patch element of the last
    # channel, must read inside the band
    if (channels - 1) * 4 * plane + last - origin + patch_offsets[15] >= band.size:
        raise AssertionError("conv: a Winograd tile would read outside its band")
    return band, origin, patch_offsets, 4 * plane


@njit(cache=True)
def _split_vectors(x, b, top, left, width, row_starts):
    """_split_band of the rows read by the vectors of tiles starting at row_starts (-1: none), the lanes
    past the last tile included."""
    # the last vector's start is the largest (-1 marks none)
    return _split_band(x, b, top, left, width, row_starts[0], row_starts.max() + simd.lanes(x) - 1)


def _all_finite(tiles_kernel, x: np.ndarray, padding: Pair, tiles_hw: Pair, weights: np.ndarray,
                out: np.ndarray) -> bool:
    """Run a Winograd tiles kernel over tiles_hw tiles of x padded by ``padding`` (each task splitting its
    rows, _split_band) into out; False if one of its tasks (one per image and row of starts) computed an
    infinity or a NaN."""
    width = tiles_hw[1] + 1  # the patch of tile (i, j) is columns j, j + 1 of each phase
    starts = _vector_starts(x.shape[0], *tiles_hw, width, simd.VECTOR_BYTES // x.itemsize, numba.get_num_threads())
    non_finite = np.zeros(out.shape[0] * starts.shape[0], np.bool_)
    run_tasks(tiles_kernel, non_finite.size, np.ascontiguousarray(x), *padding, width, starts, weights, out,
              non_finite)
    return not non_finite.any()


def _conv_winograd(x: np.ndarray, w: np.ndarray, out: np.ndarray, padding: Pair, groups: int) -> bool:
    """out = conv2d(x, w) of a 3x3 stride-1 layer, every element written: Winograd F(2x2, 3x3) over x
    zero-padded and split into 2 x 2 phases, a band of rows per task (_split_band).

    Returns False when an output is infinite or NaN: the transforms subtract inputs from each other, so
    an infinity can come out NaN where the direct sum (and PyTorch) gives +-inf; the caller then runs
    the direct sum instead."""
    weights = np.zeros((16, groups, -(-w.shape[0] // groups // ROWS), w.shape[1] * ROWS), x.dtype)
    _transform_weights(w, KERNEL_TRANSFORM_3, KERNEL_TRANSFORM_3, weights)
    return _all_finite(_winograd_tiles, x, padding, (-(-out.shape[2] // 2), -(-out.shape[3] // 2)), weights, out)


def _transposed_winograd(gy: np.ndarray, w: np.ndarray, gx: np.ndarray, groups: int) -> bool:
    """gx = conv_transpose2d(gy, w) of kernel 4x4, stride 2, padding 1, every element written: Winograd
    F(2x2, 2x2) on each output phase's 2x2 sub-kernel (_phase: rows of phase 0 take taps 3, 1 from gy rows
    m - 1, m; phase 1 taps 2, 0 from m, m + 1). Returns False when an output is infinite or NaN, as
    _conv_winograd."""
    taps = [_phase(4, 2, 1, 1, phase)[0] for phase in (0, 1)]  # [3, 1] and [2, 0]
    weights = np.zeros((36, groups, -(-gx.shape[1] // groups // ROWS), w.shape[0] // groups * ROWS), gy.dtype)
    for p, (ph, pw) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        _transform_weights(_sub_kernel(w, taps[ph], taps[pw], groups), KERNEL_TRANSFORMS_2[ph], KERNEL_TRANSFORMS_2[pw],
                           weights[9 * p:9 * p + 9])
    return _all_finite(_winograd_transposed_tiles, gy, (1, 1), (-(-gx.shape[2] // 4), -(-gx.shape[3] // 4)), weights,
                       gx)
