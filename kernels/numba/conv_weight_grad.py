"""The weight gradient (conv2d backward-weight), both algorithms on conv_tiles' micro-kernel with lanes =
output channels read from gy laid out channels-last, a band of pixels at a time in each task's own buffer
(``_gather_run``; no whole-batch copy):

* direct (any layer): reducing over pixels, rows = taps broadcast from the phase-split input;
* Winograd F(2x2, 3x3) (3x3 stride-1 undilated ungrouped layers): reducing over 2x2 tiles, rows = input
  channels broadcast from the transformed input patches, one product per transform element.

Numba's cache watches each function's own file only: after changing conv_winograd's inlined
``_transform_patch``, delete ``kernels/numba/__pycache__``.
"""

import numpy as np
from numba import njit

from . import simd
from ._common import Pair
from .conv_tiles import ROWS, _group_stride, _outer_tile, _phase_split, _tap_offsets
from .conv_winograd import KERNEL_TRANSFORM_3, _split_band, _transform_patch
from .tasks import run_tasks

WEIGHT_BAND = 256  # pixels per band of the weight gradient: 64 KiB of gy for 64 float32 channels, in L2
WINOGRAD_BAND = 64  # 2x2 tiles per band of the Winograd weight gradient, a multiple of every lane count
# bytes of split input a task of the Winograd weight gradient makes at a time (_split_band), rows of tiles
# it then reads from L2
SPLIT_BAND_BYTES = 2**18
MIN_TASKS = 8  # tasks (and partial sums) a batch is split into at least, whatever the thread count (both paths)
# pixels of gy a task of the direct weight gradient reduces over at least (images share a task below it):
# its partial sum is zeroed, added into and added up whatever its pixels, so a task of a few pixels (the
# 2 x 2 gy of a small image's deepest layer) spent more on its partial than on its products
MIN_TASK_PIXELS = 64
PARTIALS_BYTES = 64 * 2**20  # a weight gradient's partial sums at most (but one per part)
SHARED_PARTIALS_BYTES = 2**20  # partial sums of a batch past this: images share them (MIN_TASKS tasks kept)


@njit(inline="always", cache=True)
def _transpose_tile(src, dst, rows, columns):
    for j in range(columns):
        for i in range(rows):
            dst[j, i] = src[i, j]


@njit(inline="always", cache=True)
def _line_aligned_zeros(count, like):
    """count zeros of like's dtype starting on a cache line, as simd.empty's (Numba's own arrays start on
    32 bytes only, and a 128-byte vector there touches three lines instead of two)."""
    raw = np.zeros(count + simd.CACHE_LINE // like.itemsize, like.dtype)
    start = (-raw.ctypes.data % simd.CACHE_LINE) // like.itemsize
    return raw[start:start + count]


@njit(inline="always", cache=True)
def _gather_run(plane, row, column, count, out):
    """out[k, c] = plane[c, row, column + k] for k < count and every channel c of plane: a run of one row's
    pixels laid out channels-last, zeros past plane's rows and columns (out's channels past plane's are left
    alone). Each task lays out the band of gy it reduces over in its own buffer, in L2, instead of one
    whole-batch channels-last copy written to memory and read back (docs/kernels/conv.md).

    The transpose goes by 16 x 16 tiles (16 channels by 16 pixels): both the 16 source rows and the 16
    destination runs stay in L1, and a full tile's constant trip counts let LLVM turn it into register
    shuffles (3x faster than copying one pixel's channels at a time).
    """
    channels, h, w = plane.shape
    inside = max(0, min(count, w - column)) if row < h else 0
    out[inside:count, :channels] = 0
    for c0 in range(0, channels, 16):
        for k0 in range(0, inside, 16):
            source, target = plane[c0:, row, column + k0:], out[k0:, c0:]
            if c0 + 16 <= channels and k0 + 16 <= inside:
                _transpose_tile(source, target, 16, 16)
            else:
                _transpose_tile(source, target, min(16, channels - c0), min(16, inside - k0))


@njit(cache=True)
def _weight_gradient_tiles(first_task, last_task, src, image_stride, group_stride, width, gy, bases, band,
                           rows_per_part, images_per_task, partials):
    """partials[(b // images_per_task) * parts + part, g, t, co] = sum over the images b of a task and the
    pixels q = o_h * width + o_w of the part's output rows (rows_per_part of them) of src[b * image_stride
    + g * group_stride + bases[t] + q] * gy[b, g * C + co, o_h, o_w], C = gy's channels per group: the
    gradient of the weight (tap t = (ci, kh, kw), output channel co) of the correlation _correlate_tiles
    computes, for each part of each group of images apart (their sum, in a fixed order, is the caller's).
    gy is C-contiguous; pixels q on the padding columns (o_w past gy's) add nothing. Task (image group,
    part, g) of the tasks first_task .. last_task - 1 fills partials[image group * parts + part, g].

    Tiles of ROWS taps by lanes output channels, reducing over pixels; each task runs all its tiles over a
    band of ``band`` pixels at a time, laid out channels-last in the task's buffer (_gather_run), read
    from L2 by every tile. (Tasks split along pixels, not tiles: a task per range of tiles would lay out
    the same band once per range.)
    """
    tasks, groups, depth, c_pad = partials.shape
    n, c_out, out_h, out_w = gy.shape
    parts, c_out_g = tasks // -(-n // images_per_task), c_out // groups
    reach = (out_h - 1) * width + out_w
    lanes = simd.lanes(src)
    band_offsets = np.arange(band) * c_pad
    band_flat = _line_aligned_zeros(band * c_pad, src)  # channels past C stay 0
    band_gy = band_flat.reshape((band, c_pad))
    for task in range(first_task, last_task):
        image_part, g = divmod(task, groups)
        image_group, part = divmod(image_part, parts)
        end = min(reach, (part + 1) * rows_per_part * width)
        for b in range(image_group * images_per_task, min(n, (image_group + 1) * images_per_task)):
            planes = gy[b, g * c_out_g:(g + 1) * c_out_g]
            for q0 in range(part * rows_per_part * width, end, band):
                count = min(band, end - q0)
                t = 0
                while t < count:  # one run per output row the band meets
                    o_h, o_w = divmod(q0 + t, width)
                    run = min(count - t, width - o_w)
                    _gather_run(planes, o_h, o_w, run, band_gy[t:])
                    t += run
                window = src[b * image_stride + g * group_stride + q0:]
                offsets = band_offsets[:count]
                for tile in range(depth // ROWS):
                    for co in range(0, c_pad, lanes):
                        sums = _outer_tile(window, bases[tile * ROWS:], 1, band_flat[co:], offsets, ROWS)
                        for r in range(ROWS):
                            row = partials[image_part, g, tile * ROWS + r]
                            simd.store(row, co, simd.add(simd.load(row, co), sums[r]))


@njit(cache=True)
def _add_partials(first_task, last_task, partials, order, out):
    """out[g, co, ci, order[a]] = the sum over k, in order, of partials[k, g, ci * taps + a, co] (taps =
    order.size), for the input channels (g, ci) = divmod(task, C_in per group) of tasks first_task ..
    last_task - 1: _weight_gradient_tiles' partial sums added up into the weight gradient's layout, w's
    taps in their own order. One pass in place of NumPy's sum, slice and fancy-indexed transpose.

    Each row of output channels is summed in a vector loop along the partials' rows, and one input
    channel's sums then written out across through an L1-sized buffer: summing each output channel down
    the partials walked them once per output channel, a cache line for every 4 bytes (0.9 ms of a 64 x 64
    x 3 x 3 weight gradient's 2.8 at N32 8x8; 0.1 ms this way)."""
    parts = partials.shape[0]
    c_out_g, cg, taps = out.shape[1:]
    totals = np.empty((taps, c_out_g), partials.dtype)  # 4 KiB for 16 taps x 64 output channels
    for task in range(first_task, last_task):
        g, ci = divmod(task, cg)
        for a in range(taps):
            t = ci * taps + a
            for co in range(c_out_g):
                totals[a, co] = partials[0, g, t, co]
            for k in range(1, parts):
                for co in range(c_out_g):
                    totals[a, co] += partials[k, g, t, co]
        for co in range(c_out_g):
            for a in range(taps):
                out[g, co, ci, order[a]] = totals[a, co]


def _images_per_task(images: int, tasks_per_image: int, partial_bytes: int) -> int:
    """Consecutive images per task, which share its partial sum (partial_bytes each): one, unless the batch's
    partials would pass SHARED_PARTIALS_BYTES, then as many as keep MIN_TASKS tasks (for wide layers of few
    pixels, zeroing, accumulating into and adding up a partial per image cost as much as the products), and
    in any case enough to keep the partials under PARTIALS_BYTES. A function of the shape alone."""
    batch_bytes = images * tasks_per_image * partial_bytes  # one task, and partial, per image
    shared = min(-(-batch_bytes // SHARED_PARTIALS_BYTES), images * tasks_per_image // MIN_TASKS)
    return max(1, shared, -(-batch_bytes // PARTIALS_BYTES))


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
    src, image_stride = _phase_split(x, padding, stride, size)
    offsets, order = _tap_offsets(cg, (k_h, k_w), stride, dilation, size)
    reach = (out_h - 1) * size[1] + out_w  # the pixels q of outputs
    group_stride = _group_stride(src, image_stride, n, groups, offsets, reach)
    c_pad = -(-c_out_g // lanes) * lanes
    tiles = -(-offsets.size // ROWS)
    bases = np.full(tiles * ROWS, offsets[-1])  # the last tile's missing taps repeat one: computed, dropped
    bases[:offsets.size] = offsets
    # the split of the work, and so the order of the sums, is a function of the shape alone
    parts = max(1, min(out_h, -(-MIN_TASKS // (n * groups)), out_h * out_w // MIN_TASK_PIXELS))
    rows_per_part = -(-out_h // parts)
    parts = -(-out_h // rows_per_part)
    images_per_task = max(_images_per_task(n, parts * groups, tiles * ROWS * c_pad * x.itemsize),
                          min(n, -(-MIN_TASK_PIXELS // (rows_per_part * out_w))))
    partials = np.zeros((-(-n // images_per_task) * parts, groups, tiles * ROWS, c_pad), x.dtype)
    run_tasks(_weight_gradient_tiles, partials.shape[0] * groups, src, image_stride, group_stride, size[1],
              np.ascontiguousarray(gy), bases, WEIGHT_BAND, rows_per_part, images_per_task, partials)
    gw = np.empty((groups, c_out_g, cg, k_h * k_w), x.dtype)
    run_tasks(_add_partials, groups * cg, partials, order, gw)
    return gw.reshape(c_out, cg, k_h, k_w)



@njit(inline="always", cache=True)
def _gradient_transform(array, i0, i1):
    """F(2, 3)'s A applied to the vectors (y0, y1) at array[i0], array[i1]: (y0, y0 + y1, y0 - y1, -y1), the
    transpose of the forward's output transform A^T."""
    y0, y1 = simd.load(array, i0), simd.load(array, i1)
    return y0, simd.add(y0, y1), simd.subtract(y0, y1), simd.subtract(simd.zeros(array), y1)


@njit(cache=True)
def _winograd_weight_tiles(first_task, last_task, x, pad_top, pad_left, gy, width, rows_per_part, images_per_task,
                           split_tiles, partials):
    """partials[(b // images_per_task) * parts + part, k, ci, co] = sum over the images b of a task and the
    2x2 tiles q of the part's rows of tiles of
    (B^T d_q B)[k] of input channel ci times (A dY_q A^T)[k] of output channel co: the gradient of the
    transformed kernel (G g G^T)[k] of Winograd F(2x2, 3x3) (Lavin & Gray 2016), for each part of each
    image apart (their sum, in a fixed order, is the caller's). d_q is the patch of tile q = i * width + j
    of x padded by (pad_top, pad_left), split by _split_band split_tiles tiles at a time (a multiple of
    WINOGRAD_BAND); dY_q is gy[b, :, 2i:2i + 2, 2j:2j + 2], zeros past gy (so the split's padding column of
    tiles, j = width - 1, adds nothing). gy is C-contiguous.

    Per band of WINOGRAD_BAND tiles: the band's dY laid out channels-last in the task's own buffer
    (_gather_run: in L2, instead of a whole-batch copy written to and read back from memory), V = B^T d B
    of every input channel (vectors along tiles, as the forward's), D = A dY A^T of every tile (vectors
    along output channels); then for each k the
    micro-kernel, rows = ROWS input channels (broadcasts from V[k]), lanes = output channels (D[k]),
    reducing over the band's tiles, V[k] and D[k] in L1 (16 KiB each for 64 float32 channels). Task
    (image group, part) of the tasks first_task .. last_task - 1 fills partials[image group * parts + part].
    """
    _, _, depth, c_pad = partials.shape
    n, tile_rows = gy.shape[0], -(-gy.shape[2] // 2)
    c_in = x.shape[1]
    parts = -(-tile_rows // rows_per_part)
    band = WINOGRAD_BAND
    lanes = simd.lanes(x)
    row_bases = np.arange(ROWS) * band
    tile_offsets = np.arange(band) * c_pad
    row_stride = 2 * band * c_pad
    # V[k, ci * band + t] (rows past c_in stay 0) and D[k, t * c_pad + co]: each k's block one vector
    # longer than it needs, so that the 16 blocks, a multiple of 4 KiB long, do not share L1 sets
    transformed = np.zeros((16, depth * band + lanes), x.dtype)
    gradients = np.empty((16, band * c_pad + lanes), x.dtype)
    half = np.empty(16 * lanes, x.dtype)
    band_flat = _line_aligned_zeros(4 * band * c_pad, x)  # channels past gy's stay 0
    band_gy = band_flat.reshape((2, 2 * band, c_pad))
    for task in range(first_task, last_task):
        image_group, part = divmod(task, parts)
        end = min(tile_rows, (part + 1) * rows_per_part) * width
        for b in range(image_group * images_per_task, min(n, (image_group + 1) * images_per_task)):
            for first in range(part * rows_per_part * width, end, split_tiles):
                last = min(end, first + split_tiles)
                # the transforms' last vector may run past the last tile
                image, origin, patch_offsets, channel_stride = _split_band(x, b, pad_top, pad_left, width, first,
                                                                           last + lanes - 2)
                for q0 in range(first, last, band):
                    count = min(band, last - q0)
                    t = 0
                    while t < count:  # the two gy rows of each row of tiles the band meets
                        i, j = divmod(q0 + t, width)
                        run = min(count - t, width - j)
                        for a in range(2):
                            _gather_run(gy[b], 2 * i + a, 2 * j, 2 * run, band_gy[a, 2 * t:])
                        t += run
                    for ci in range(c_in):
                        patch = image[ci * channel_stride + q0 - origin:]
                        for s in range(0, count, lanes):
                            _transform_patch(patch, s, patch_offsets, half, transformed, ci * band + s, lanes)
                    for t in range(count):
                        for co in range(0, c_pad, lanes):  # A down each column of dY, then along each row
                            at = 2 * t * c_pad + co
                            left = _gradient_transform(band_flat, at, at + row_stride)
                            right = _gradient_transform(band_flat, at + c_pad, at + row_stride + c_pad)
                            for u in range(4):
                                simd.store(half, 2 * u * lanes, left[u])
                                simd.store(half, (2 * u + 1) * lanes, right[u])
                            for u in range(4):
                                row = _gradient_transform(half, 2 * u * lanes, (2 * u + 1) * lanes)
                                for v in range(4):
                                    simd.store(gradients[4 * u + v], t * c_pad + co, row[v])
                    offsets = tile_offsets[:count]
                    for k in range(16):
                        v_k, d_k = transformed[k], gradients[k]
                        for tile in range(depth // ROWS):
                            for co in range(0, c_pad, lanes):
                                sums = _outer_tile(v_k[tile * ROWS * band:], row_bases, 1, d_k[co:], offsets, ROWS)
                                for r in range(ROWS):
                                    row = partials[task, k, tile * ROWS + r]
                                    simd.store(row, co, simd.add(simd.load(row, co), sums[r]))


@njit(cache=True, error_model="numpy")
def _kernel_gradients(first_channel, last_channel, transformed, transform, out):
    """out[o, i] = transform^T T transform for T = transformed[:, i, o] as a U x U matrix (U = transform's
    rows), input channels i = first_channel .. last_channel - 1: the gradient of each kernel from that of
    its transformed kernel, G^T (dL/dU) G, summed in float64 and rounded once to out's dtype. (NumPy's
    einsum did this by BLAS: 1-5 ms for 64-128 channels, and OpenBLAS's threads, spinning after it, took
    the cores from the next kernel's.) Output channels innermost, so each step is one vector loop."""
    size, taps = transform.shape
    c_out = out.shape[0]
    half = np.empty((taps, size, c_out))  # transform^T T, then (that) transform
    whole = np.empty((taps, taps, c_out))
    for i in range(first_channel, last_channel):
        for a in range(taps):
            for v in range(size):
                half[a, v] = 0.0
                for u in range(size):
                    for o in range(c_out):
                        half[a, v, o] += transform[u, a] * transformed[u * size + v, i, o]
        for a in range(taps):
            for b in range(taps):
                whole[a, b] = 0.0
                for v in range(size):
                    for o in range(c_out):
                        whole[a, b, o] += half[a, v, o] * transform[v, b]
        for o in range(c_out):
            for a in range(taps):
                for b in range(taps):
                    out[o, i, a, b] = whole[a, b, o]


def _conv_backward_weight_winograd(x: np.ndarray, gy: np.ndarray, w_shape: tuple[int, int, int, int],
                                   padding: Pair) -> np.ndarray | None:
    """The weight gradient of a 3x3 stride-1 undilated ungrouped layer by Winograd F(2x2, 3x3): with U = G g
    G^T, V = B^T d B and M = U * V summed over input channels (the forward), dL/dU = sum over tiles of
    (A dY A^T) * V, and dL/dg = G^T (dL/dU) G, 16 products per 2x2 outputs and channel pair instead of 36.
    The transformed gradient is summed in x's dtype and transformed back in float64, rounded once.

    Returns None when the result holds an infinity or a NaN: the transforms subtract inputs from each
    other (inf - inf is NaN), so the caller runs the direct sum, whose infinities are PyTorch's."""
    n, c_out, out_h, out_w = gy.shape
    c_in = w_shape[1]
    tiles_hw = (-(-out_h // 2), -(-out_w // 2))
    width = tiles_hw[1] + 1  # the patch of tile (i, j) is columns j, j + 1 of each phase
    lanes = simd.VECTOR_BYTES // x.itemsize
    # whole bands of tiles, about SPLIT_BAND_BYTES of split input (rows of tiles + 1 rows of 2 x 2 phases)
    split_rows = max(1, SPLIT_BAND_BYTES // (c_in * 4 * width * x.itemsize) - 1)
    split_tiles = -(-split_rows * width // WINOGRAD_BAND) * WINOGRAD_BAND
    c_pad = -(-c_out // lanes) * lanes
    # the split of the work, and so the order of the sums, is a function of the shape alone
    parts = min(tiles_hw[0], -(-MIN_TASKS // n))
    rows_per_part = -(-tiles_hw[0] // parts)
    parts = -(-tiles_hw[0] // rows_per_part)
    depth = -(-c_in // ROWS) * ROWS
    images_per_task = _images_per_task(n, parts, 16 * depth * c_pad * x.itemsize)
    partials = np.zeros((-(-n // images_per_task) * parts, 16, depth, c_pad), x.dtype)
    run_tasks(_winograd_weight_tiles, partials.shape[0], np.ascontiguousarray(x), *padding, np.ascontiguousarray(gy),
              width, rows_per_part, images_per_task, split_tiles, partials)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite sums are the caller's to redo
        transformed = partials.sum(axis=0)
    gw = np.empty((c_out, c_in, 3, 3), x.dtype)
    run_tasks(_kernel_gradients, c_in, transformed, KERNEL_TRANSFORM_3, gw)
    return gw if np.isfinite(gw).all() else None
