"""Direct convolution forward with output channels along the lanes: the strided layers of small outputs.

conv_direct's tiles put output pixels along the lanes, read from the input split by stride phase, and
output channels along the rows. On the stride-2 layers of the encoders (outputs of 8x8 to 32x32, 16 to 64
channels) its vectors run across the split's short rows, lanes on their padding columns, after each task
has split its band of the input by phase: PyTorch led there (0.79-0.94x its speed, AVX2, two threads).
Here the operands trade roles: a tile is ROWS output pixels (the rows: one scalar each, broadcast from the
zero-padded input, so any stride and dilation reads it as it is, no phase split) by one vector of output
channels (the lanes: the weights laid out (taps, C_out), taps in w's order (ci, kh, kw)). Each task pads its
band of output rows' input into its own buffer (in L2 while its tiles read it) and stores its tiles
transposed into the NCHW output.
"""

import functools

import numba
import numpy as np
from numba import njit
from numba.cpython.unsafe.tuple import tuple_setitem

from . import simd, target
from ._common import Pair
from .conv_tiles import ROWS
from .tasks import run_tasks

BAND_BYTES = 2**17  # a task's padded input at most, where the batch leaves tasks to spare (Zen 3's L2: 512 KiB)
# Strided layers of more taps per group (input channels x kernel taps) than this go by this path. Measured on
# AVX2 (Zen 3, two threads; 8 to 128 channels, kernels 1x1 to 4x4, outputs 4x4 to 32x32, batches 2 to 32):
# 1.1-1.6x the direct sum's speed from 64 taps on, but for one layer even (docs/kernels/conv.md); with 27
# (the 3-channel first layers) 0.88-1.1x. Between them, not measured, the line is the weight gradient's
# for few taps (conv_weight_grad_pixels.MAX_TAPS). Not measured on the other instruction sets: they keep
# the direct sum (None).
MIN_TAPS = {"avx2": 32}.get(target.ISA)


@njit(inline="always", cache=True)
def _channel_tile(image, first_input, pixels, first_pixel, offsets, weights, first_weight, step, rows):
    """The rows x lanes tile sum_t image[first_input + pixels[first_pixel + r] + offsets[t]]
    * weights[first_weight + t * step + l], r < rows: output pixel r's input at tap t (a scalar, broadcast)
    times the tap's weights to a vector of output channels. As conv_tiles._outer_tile, ``rows``
    accumulators stay in registers, ``rows`` FMAs a loaded vector."""
    tile = simd.repeat(simd.zeros(weights), rows)
    for t in range(offsets.size):
        v, at = simd.load(weights, first_weight + t * step), first_input + offsets[t]
        for r in range(rows):
            tile = tuple_setitem(tile, r, simd.fma(simd.broadcast(image, at + pixels[first_pixel + r]), v, tile[r]))
    return tile


@njit(cache=True)
def _band_tiles(band, first_input, pixels, count, offsets, weights, first_weight, step, c_out_g, tiles):
    """tiles[p * step + co] = the sum of output pixel p < count to output channel co < c_out_g of one band
    and group (_channel_tile's, the band's input from first_input on, its weights from first_weight on).
    A function of its own: inlined into the task loop, LLVM hoisted the broadcasts of two unrolled taps
    and spilled them to the stack (1.3-1.6x slower)."""
    lanes = simd.lanes(band)
    for p0 in range(0, count, ROWS):
        for co0 in range(0, c_out_g, lanes):
            tile = _channel_tile(band, first_input, pixels, p0, offsets, weights, first_weight + co0, step, ROWS)
            for r in range(ROWS):
                simd.store(tiles, (p0 + r) * step + co0, tile[r])


@njit(cache=True, error_model="numpy")
def _correlate_channels(first_task, last_task, x, top, left, stride_h, band_outputs, in_rows, width, pixels,
                        offsets, weights, out):
    """out[b, g * C_g + co, o_h, o_w] = sum_t weights[g, t, co] * padded[g * Ci_g * plane + (o_h - first) * s_h
    * width + o_w * s_w + offsets[t]], with ``padded`` the band of image b of x zero-padded by (top, left)
    whose rows of ``width`` columns start at input row first * s_h - top, for the band_outputs output rows
    from ``first`` on: pixels[i * W_out + o_w] = i * s_h * width + o_w * s_w, offsets[t] the tap's channel,
    row and column in the band (plane = in_rows * width).

    One task per image and band of output rows; rows of the task's tiles past its band's pixels read its
    band at pixels' zeros and are not stored.
    """
    n, c_out, out_h, out_w = out.shape
    groups, taps, step = weights.shape
    channels, h, w = x.shape[1:]
    c_out_g = c_out // groups
    bands = -(-out_h // band_outputs)
    plane = in_rows * width
    group_stride = channels // groups * plane
    band = np.zeros(channels * plane, x.dtype)
    # the micro-kernel does not check bounds: the last pixel's furthest tap in the last group reads inside band
    if (groups - 1) * group_stride + pixels.max() + offsets.max() >= band.size or offsets.size != taps:
        raise AssertionError("conv: the micro-kernel would read outside its band of the input")
    tiles = np.empty(pixels.size * step, x.dtype)
    flat_x, flat_out, flat_weights = x.reshape(-1), out.reshape(-1), weights.reshape(-1)
    columns = max(0, min(w, width - left))  # the columns of x inside the band
    for task in range(first_task, last_task):
        b, k = divmod(task, bands)
        first = k * band_outputs
        count = min(band_outputs, out_h - first) * out_w
        # x's rows into the band (rows outside x zeroed; the padding columns keep their zeros): by unsigned
        # flat offsets, as _split_phases copies (signed ones carry a test for negative indices per element)
        for c in range(channels):
            for i in range(in_rows):
                row = first * stride_h - top + i
                to = np.uint64(c * plane + i * width + left)
                inside = 0 <= row < h
                source = np.uint64(((b * channels + c) * h + row) * w if inside else 0)
                for j in range(np.uint64(columns)):
                    band[to + j] = flat_x[source + j] if inside else 0
        for g in range(groups):
            _band_tiles(band, g * group_stride, pixels, count, offsets, flat_weights, g * taps * step, step, c_out_g,
                        tiles)
            # the band's outputs, channels-last in tiles, transposed into out's planes
            for co in range(c_out_g):
                at = np.uint64(((b * c_out + g * c_out_g + co) * out_h + first) * out_w)
                for p in range(np.uint64(count)):
                    flat_out[at + p] = tiles[p * np.uint64(step) + np.uint64(co)]


def uses_channel_lanes(stride: Pair, taps: int) -> bool:
    """Whether a layer's forward goes by this path: strided, with more than MIN_TAPS taps per group, on an
    instruction set where it was measured."""
    return MIN_TAPS is not None and stride != (1, 1) and taps > MIN_TAPS


@functools.lru_cache(maxsize=256)
def _plan(images: int, channels: int, groups: int, out_hw: Pair, kernel: Pair, stride: Pair, dilation: Pair,
          itemsize: int, threads: int) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """(band_outputs, in_rows, width, pixels, offsets) of _correlate_channels for these sizes (cached:
    arithmetic on them alone): the output rows of a band, the input rows and columns of its padded input,
    and the band's pixel and tap offsets. Bands are whole images unless that leaves one of ``threads``
    threads with under 4 tasks or a band's input over BAND_BYTES."""
    width = (out_hw[1] - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1
    reach = (kernel[0] - 1) * dilation[0] + 1  # the input rows of one output row
    image_bytes = channels * ((out_hw[0] - 1) * stride[0] + reach) * width * itemsize
    bands = min(out_hw[0], max(1, -(-4 * threads // images), -(-image_bytes // BAND_BYTES)))
    band_outputs = -(-out_hw[0] // bands)
    in_rows = (band_outputs - 1) * stride[0] + reach
    pixels = np.zeros(-(-band_outputs * out_hw[1] // ROWS) * ROWS, np.int64)
    o_h, o_w = np.divmod(np.arange(band_outputs * out_hw[1]), out_hw[1])
    pixels[:o_h.size] = o_h * stride[0] * width + o_w * stride[1]
    ci, kh, kw = np.meshgrid(np.arange(channels // groups), np.arange(kernel[0]) * dilation[0],
                             np.arange(kernel[1]) * dilation[1], indexing="ij")
    offsets = ((ci * in_rows + kh) * width + kw).reshape(-1)
    return band_outputs, in_rows, width, pixels, offsets


def _conv_direct_channels(x: np.ndarray, w: np.ndarray, out: np.ndarray, stride: Pair, padding: Pair,
                          dilation: Pair, groups: int) -> None:
    """out = conv2d(x, w), every element written (out C-contiguous), output channels along the lanes."""
    if out.size == 0:
        return
    c_out, cg, k_h, k_w = w.shape
    lanes = simd.VECTOR_BYTES // x.itemsize
    band_outputs, in_rows, width, pixels, offsets = _plan(x.shape[0], x.shape[1], groups, out.shape[2:], (k_h, k_w),
                                                          stride, dilation, x.itemsize, numba.get_num_threads())
    c_out_g = c_out // groups
    weights = np.zeros((groups, cg * k_h * k_w, -(-c_out_g // lanes) * lanes), x.dtype)
    weights[..., :c_out_g] = w.reshape(groups, c_out_g, -1).transpose(0, 2, 1)
    bands = -(-out.shape[2] // band_outputs)
    run_tasks(_correlate_channels, x.shape[0] * bands, np.ascontiguousarray(x), *padding, stride[0], band_outputs,
              in_rows, width, pixels, offsets, weights, out)
