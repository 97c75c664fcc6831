"""Convolution on the CPU: conv2d forward, backward-input (= conv_transpose2d forward), backward-weight.

Three algorithms, as cuDNN offers several (``set_conv_algorithm`` picks one):

* ``winograd`` (the default): Winograd F(2x2, 3x3) (Lavin & Gray, 2016) for the forward and
  backward-input of 3x3 stride-1 undilated layers, 16 products per 2x2 outputs and input channel
  instead of 36, and F(2x2, 2x2) for each output phase of the 4x4 stride-2 padding-1 transposed conv
  (backward-input), 9 instead of 16, and F(2x2, 3x3) for the weight gradient of the 3x3 stride-1
  layers of 32 channels and more, each where it pays (enough channels, and 2x2 tiles in the batch: the rules
  below); ``direct`` for every other layer and weight gradient.
  Each 4x4 input patch and each kernel is transformed, the sum over input channels is the same
  micro-kernel as ``direct``'s (one per transform element), and the sums are transformed back.
* ``direct``: no BLAS. The input is zero-padded and split by stride phase once
  (``_split_phases``), so that for every tap, consecutive outputs of a row read consecutive inputs, at an
  offset per tap. All three kernels are then one outer-product micro-kernel, ``_outer_tile``: ROWS x
  lanes outputs held in vector registers (``simd``; 8 x 32 float32 on AVX-512, 6 x 16 on AVX2:
  ``target.py``), each loaded vector of inputs feeding ROWS FMAs.
  Forward: rows are output channels, lanes are pixels, reduction over taps. backward-input: the
  transposed convolution split by output phase into stride-1 correlations (the two column phases of
  stride 2 stored interleaved). backward-weight: rows are taps, lanes are output channels (gy
  channels-last), reduction over pixels, one partial per image (or a few). Any stride, dilation, group count.
  The weight gradient of layers with few taps (3-channel first layers) puts pixels along the lanes
  instead (``conv_weight_grad_pixels``): no channels-last copy of gy, no lanes of padding channels. The
  forward of strided layers puts output channels along the lanes and pixels along the rows
  (``conv_direct_channels``): no phase split, no lanes on the split's padding columns.
* ``im2col``: unfold a chunk of output rows into columns ``cols[(ci, kh, kw), pixel]`` (Numba, parallel
  over column rows), then one BLAS GEMM per chunk and group: ``y = W @ cols``, ``gW += gy @ cols.T``,
  ``cols = W.T @ gy`` followed by a col2im scatter-add (parallel over channels, so no races). Chunks are
  whole images when they fit in ``CHUNK_BYTES``, else bands of rows, so memory stays bounded.

``winograd`` is the fastest on the layers it serves, ``direct`` on the others (docs/kernels/conv.md).
Winograd's sums differ from the direct ones by rounding only: a layer with an infinite or NaN output
is run again by the direct sum, whose infinities and NaNs are PyTorch's (Winograd's transforms subtract
inputs from each other, and inf - inf is NaN); an infinite or NaN weight gradient by im2col.

One file per idea: ``conv_tiles`` (the micro-kernel and the phase-split input every tile algorithm
reads), ``conv_direct`` (forward and backward-input), ``conv_direct_channels`` (the strided forward,
channels along the lanes), ``conv_winograd``, ``conv_weight_grad`` (the
weight gradient of both; ``conv_weight_grad_pixels`` for few taps), ``conv_im2col``; this one keeps the
algorithm choice and the kernel table's three entry points.
"""

import contextlib
from collections.abc import Iterator

import numpy as np

from . import simd, target
from ._common import Pair
from .conv_direct import _conv_direct, _sub_kernel, _transposed_direct
from .conv_direct_channels import _conv_direct_channels, uses_channel_lanes
from .conv_im2col import _conv_backward_weight_im2col, _conv_im2col, _transposed_im2col
from .conv_weight_grad import _conv_backward_weight_direct, _conv_backward_weight_winograd
from .conv_weight_grad_pixels import _conv_backward_weight_pixels, uses_pixel_lanes
from .conv_winograd import _conv_winograd, _transposed_winograd

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


# Winograd's input and output transforms cost per channel, its products save per pair of input and output
# channels: on narrow layers (the 3-channel first layers, 16 and 32 channels) the direct sum was faster.
# Thresholds on the channels per group of the correlation computed (forward: the layer's in -> out;
# backward-input: out -> in), per instruction set: (input, output) channels per group, input x output
# channels per group, and the input and output channels of a layer whose weight gradient goes by Winograd.
# Measured at 32x32 to 128x128 (docs/kernels/conv.md): on AVX-512 (Zen 4) the direct sum led below 16 -> 32
# channels and 1024 pairs; on AVX2 (Zen 3), since Winograd's tiles split their own rows (DECISIONS 92),
# Winograd led from 8 channels each way (1.06-1.41x; 3 input channels: 0.82-0.89x), its weight gradient
# from 24 channels. The ISAs not measured take AVX-512's.
WINOGRAD_RULES = {"avx512": ((16, 32), 1024, 32), "avx2": ((8, 8), 64, 24)}
WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_PAIRS, WINOGRAD_WEIGHT_MIN_CHANNELS = WINOGRAD_RULES.get(
    target.ISA, WINOGRAD_RULES["avx512"])
# Winograd's transforms and the set-up of its tiles cost per call and per channel pair whatever the batch,
# while its products save per tile: under 512 2x2 output tiles in the batch (N8 at 8x8, N2 at 16x16) the
# direct sum was faster on each pass, forward, backward-input and weight gradient (Winograd 0.4-0.95x its
# speed at 32-128 channels, AVX2; from 512 on 1.0-1.5x; docs/kernels/conv.md)
WINOGRAD_MIN_TILES = 512
# The 4x4 stride-2 transposed conv: Winograd's vectors hold tiles along gy's rows, so on rows narrower than
# a vector (gy of 8 x 8 and less on AVX2) the direct sum was faster (Winograd 0.5-0.95x at 32-64 channels,
# 1.0 at rows of one vector, 1.3-1.8x at two and more); and 16 and 24 channels, rows of one to two vectors
# (32 float32 on AVX-512, 16 on AVX2): Winograd took 1.2-1.7x the direct sum's time; at 32 channels the two
# were even, at 64 Winograd 2-6% ahead (docs/kernels/conv.md)
TRANSPOSED_WINOGRAD_MIN_VECTORS = 1
TRANSPOSED_WINOGRAD_MIN_CHANNELS = 32


def _tiles(shape: tuple[int, ...]) -> int:
    """The 2x2 tiles of a batch of outputs (N, C, H, W): N * ceil(H / 2) * ceil(W / 2)."""
    return shape[0] * -(-shape[2] // 2) * -(-shape[3] // 2)


def _uses_winograd(kernel: Pair, stride: Pair, dilation: Pair, channels_in: int, channels_out: int,
                   tiles: int) -> bool:
    """Whether the algorithm is ``winograd`` and the layer one of the 3x3 stride-1 undilated it serves,
    with enough channels (per group) into and out of the correlation, and enough 2x2 tiles of its output
    in the batch, for its transforms to pay."""
    wide = (channels_in >= WINOGRAD_MIN_CHANNELS[0] and channels_out >= WINOGRAD_MIN_CHANNELS[1]
            and channels_in * channels_out >= WINOGRAD_MIN_PAIRS)
    return (_algorithm == "winograd" and kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1) and wide
            and tiles >= WINOGRAD_MIN_TILES)


def _uses_transposed_winograd(kernel: Pair, stride: Pair, padding: Pair, dilation: Pair, channels: int,
                              in_width: int, lanes: int) -> bool:
    """Whether the algorithm is ``winograd`` and the transposed conv (backward-input) one of kernel 4x4,
    stride 2, padding 1, undilated: the exact 2x upsampling that _winograd_transposed_tiles serves, with
    input rows of TRANSPOSED_WINOGRAD_MIN_VECTORS vectors of ``lanes`` or more. Except on layers of fewer
    than TRANSPOSED_WINOGRAD_MIN_CHANNELS channels (per group, the fewer of in and out) whose input rows
    are one to two vectors wide: there the direct sum stores its two column phases as whole interleaved
    vectors, while Winograd's rows of in_width / 2 tiles end inside a vector."""
    exact = _algorithm == "winograd" and (kernel, stride, padding, dilation) == ((4, 4), (2, 2), (1, 1), (1, 1))
    narrow = channels < TRANSPOSED_WINOGRAD_MIN_CHANNELS and lanes <= in_width < 2 * lanes
    return exact and in_width >= TRANSPOSED_WINOGRAD_MIN_VECTORS * lanes and not narrow


def _uses_winograd_weight_gradient(kernel: Pair, stride: Pair, dilation: Pair, groups: int, c_in: int,
                                   c_out: int, tiles: int) -> bool:
    """Whether the weight gradient goes by Winograd F(2x2, 3x3): a layer _uses_winograd serves, ungrouped,
    with at least WINOGRAD_WEIGHT_MIN_CHANNELS input and output channels (narrower layers were 0.6-0.96x
    the direct sum's speed: the transforms cost as much as the products they save; docs/kernels/conv.md)."""
    return (_uses_winograd(kernel, stride, dilation, c_in, c_out, tiles) and groups == 1
            and min(c_in, c_out) >= WINOGRAD_WEIGHT_MIN_CHANNELS)


# ---------------------------------------------------------------------------------------------------
# The kernel table.


def conv2d_forward(x: np.ndarray, w: np.ndarray, out_hw: Pair, stride: Pair, padding: Pair, dilation: Pair,
                   groups: int) -> np.ndarray:
    c_out, cg, k_h, k_w = w.shape
    kernel = (k_h, k_w)
    y = simd.empty((x.shape[0], c_out, *out_hw), x.dtype)  # every path below writes every element
    if _uses_winograd(kernel, stride, dilation, cg, c_out // groups, _tiles(y.shape)) and _conv_winograd(
            x, w, y, padding, groups):
        return y
    if _algorithm != "im2col":  # direct, or winograd's layers with an infinite or NaN output
        direct = _conv_direct_channels if uses_channel_lanes(stride, cg * k_h * k_w) else _conv_direct
        direct(x, w, y, stride, padding, dilation, groups)
        return y
    _conv_im2col(x, w, y, stride, padding, dilation, groups)
    return y


def conv2d_backward_input(gy: np.ndarray, w: np.ndarray, x_shape: tuple[int, int, int, int], stride: Pair,
                          padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    c_out, cg, k_h, k_w = w.shape
    kernel = (k_h, k_w)
    # winograd and direct write every element of gx; col2im adds into it
    gx = np.zeros(x_shape, gy.dtype) if _algorithm == "im2col" else simd.empty(x_shape, gy.dtype)
    # stride 1: one phase, whose correlation kernel is w flipped (_sub_kernel of the taps in reverse)
    if _uses_winograd(kernel, stride, dilation, c_out // groups, cg, _tiles(x_shape)) and _conv_winograd(
            gy, _sub_kernel(w, [2, 1, 0], [2, 1, 0], groups), gx, (k_h - 1 - padding[0], k_w - 1 - padding[1]),
            groups):
        return gx
    if _uses_transposed_winograd(kernel, stride, padding, dilation, min(c_out // groups, cg), gy.shape[3],
                                 simd.VECTOR_BYTES // gy.itemsize) and _transposed_winograd(gy, w, gx, groups):
        return gx
    if _algorithm != "im2col":  # direct, or winograd's layers with an infinite or NaN output
        _transposed_direct(gy, w, gx, stride, padding, dilation, groups)
        return gx
    _transposed_im2col(gy, w, gx, stride, padding, dilation, groups)
    return gx


def conv2d_backward_weight(x: np.ndarray, gy: np.ndarray, w_shape: tuple[int, int, int, int], stride: Pair,
                           padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    c_out, cg, k_h, k_w = w_shape
    if _uses_winograd_weight_gradient((k_h, k_w), stride, dilation, groups, cg, c_out, _tiles(gy.shape)):
        gw = _conv_backward_weight_winograd(x, gy, w_shape, padding)
        if gw is not None:
            return gw
    elif _algorithm != "im2col":
        pixel_lanes = uses_pixel_lanes(cg, (k_h, k_w), c_out // groups, gy.shape[3], x.itemsize)
        backward_weight = _conv_backward_weight_pixels if pixel_lanes else _conv_backward_weight_direct
        gw = backward_weight(x, gy, w_shape, stride, padding, dilation, groups)
        if np.isfinite(gw).all():
            return gw
    # An infinite or NaN gradient: the direct sum also multiplies the inputs its pixels on the split's
    # padding columns read by gy's zeros there (0 * inf is NaN) and Winograd subtracts inputs (inf - inf);
    # im2col sums exactly PyTorch's products, so its infinities and NaNs are PyTorch's.
    return _conv_backward_weight_im2col(x, gy, w_shape, stride, padding, dilation, groups)
