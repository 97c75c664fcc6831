"""The Numba CPU kernels (minicv.kernels.numba) against PyTorch and against the NumPy specification.

Configurations are drawn by hypothesis, array contents from a drawn seed; max ops get tie-free inputs (a
permutation of distinct values) except where a test is about ties or NaN. Every conv algorithm runs on
every conv case, with small im2col chunks and direct bands drawn too, so the chunked paths run.
"""

import contextlib
import functools
import math

import minicv.kernels.numba as nb
import minicv.kernels.numpy as spec
import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cases import (
    DTYPES,
    assert_close,
    assert_same,
    batch_norm_cases,
    check_batch_norm,
    check_max_pool,
    check_out_of_range_target,
    check_relu_mask,
    conv_cases,
    cross_entropy_cases,
    distinct_values,
    dtypes,
    index_maps,
    kernel_args,
    pairs,
    pool_cases,
    pool_out_size,
    seeds,
    ties_nan_and_minus_inf,
    torch_conv,
    torch_cross_entropy_gradient,
    torch_gather_upsample,
    torch_max_pool2d_gradient,
    torch_max_unpool2d_gradient,
    unpool_cases,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from minicv.kernels.numba import conv as nb_conv
from minicv.kernels.numba import (
    conv_direct_channels,
    conv_im2col,
    conv_tiles,
    conv_weight_grad,
    conv_weight_grad_pixels,
    conv_winograd,
)
from minicv.kernels.numba import loss as nb_loss
from minicv.kernels.numba.tasks import run_tasks
from numba import njit

import minicv as mc
from minicv.functional import conv2d as minicv_conv2d
from minicv.functional.conv import conv_output_hw
from minicv.gradcheck import gradcheck
from minicv.ops import kernel_table
from tests.conftest import numba_threads
from tests.reference import assert_close as assert_close_to_float64
from tests.reference import float64_reference

SETTINGS = settings(max_examples=30, deadline=None)


def test_has_every_kernel_of_the_registry_and_the_algorithm_setting():
    names = (*kernel_table(), "set_conv_algorithm", "get_conv_algorithm", "conv_algorithm", "code_generation")
    assert all(callable(getattr(nb, name)) for name in names)


def test_conv_algorithm_setting():
    assert nb.get_conv_algorithm() == "winograd"
    with nb.conv_algorithm("im2col"):
        assert nb.get_conv_algorithm() == "im2col"
        with nb.conv_algorithm("direct"):
            assert nb.get_conv_algorithm() == "direct"
        assert nb.get_conv_algorithm() == "im2col"
    assert nb.get_conv_algorithm() == "winograd"
    with pytest.raises(ValueError, match="'fft'; expected one of winograd, direct, im2col"):
        nb.set_conv_algorithm("fft")
    with pytest.raises(ValueError), nb.conv_algorithm("gemm"):
        pass
    assert nb.get_conv_algorithm() == "winograd"


# --- convolution ------------------------------------------------------------------------------------


@contextlib.contextmanager
def channel_lanes(every_strided_layer: bool):
    """With ``every_strided_layer``, the forward of every strided layer, whatever its taps and instruction
    set, goes channels along the lanes (conv_direct_channels), in bands of one output row; else the
    instruction set's own rule."""
    saved = conv_direct_channels.MIN_TAPS, conv_direct_channels.BAND_BYTES
    if every_strided_layer:
        conv_direct_channels.MIN_TAPS, conv_direct_channels.BAND_BYTES = -1, 1
    try:
        yield
    finally:
        conv_direct_channels.MIN_TAPS, conv_direct_channels.BAND_BYTES = saved


@contextlib.contextmanager
def chunking(chunk_bytes: int, weight_band: int, vectors_per_task: int):
    """Small im2col chunks, weight-gradient bands and tasks of vectors (so bands of the split input of few
    rows), so that the paths through several of them run on small inputs; Winograd on layers of any
    channel count and size."""
    settings = ((conv_im2col, "CHUNK_BYTES"), (conv_weight_grad, "WEIGHT_BAND"), (conv_tiles, "VECTORS_PER_TASK"),
                (nb_conv, "WINOGRAD_MIN_CHANNELS"), (nb_conv, "WINOGRAD_MIN_PAIRS"),
                (nb_conv, "WINOGRAD_WEIGHT_MIN_CHANNELS"), (nb_conv, "WINOGRAD_MIN_TILES"),
                (nb_conv, "TRANSPOSED_WINOGRAD_MIN_CHANNELS"), (nb_conv, "TRANSPOSED_WINOGRAD_MIN_VECTORS"))
    saved = [getattr(module, name) for module, name in settings]
    values = (chunk_bytes, weight_band, vectors_per_task, (1, 1), 1, 1, 1, 1, 0)
    for (module, name), value in zip(settings, values):
        setattr(module, name, value)
    try:
        yield
    finally:
        for (module, name), value in zip(settings, saved):
            setattr(module, name, value)


@pytest.fixture
def winograd_on_any_layer(monkeypatch):
    """Winograd on 3x3 stride-1 layers of any channel count and size (by default only on wide ones of
    enough tiles), so that the small layers of a test reach it."""
    monkeypatch.setattr(nb_conv, "WINOGRAD_MIN_CHANNELS", (1, 1))
    monkeypatch.setattr(nb_conv, "WINOGRAD_MIN_PAIRS", 1)
    monkeypatch.setattr(nb_conv, "WINOGRAD_WEIGHT_MIN_CHANNELS", 1)
    monkeypatch.setattr(nb_conv, "WINOGRAD_MIN_TILES", 1)


CONV_CASES = conv_cases(max_kernel=4, max_padding=3, max_extra=9, max_channels=6, fan_in_scaled=True)
# (im2col chunk bytes, direct weight-gradient band pixels, vectors per task)
CHUNKS = st.sampled_from([(1, 1, 1), (600, 5, 3), (2**24, 512, 8)])


@SETTINGS
@given(CONV_CASES, CHUNKS, st.booleans())
def test_conv2d_forward_and_backward_match_torch_and_spec(case, chunks, every_strided_layer):
    x, w, stride, padding, dilation, groups, _ = case
    hyper = (stride, padding, dilation, groups)
    y, gy, gx, gw = torch_conv(*case)
    spec_y = spec.conv2d_forward(x, w, y.shape[2:], *hyper)
    spec_gx = spec.conv2d_backward_input(gy, w, x.shape, *hyper)
    spec_gw = spec.conv2d_backward_weight(x, gy, w.shape, *hyper)
    for algorithm in nb_conv.ALGORITHMS:
        with nb.conv_algorithm(algorithm), chunking(*chunks), channel_lanes(every_strided_layer):
            assert_close(nb.conv2d_forward(x, w, y.shape[2:], *hyper), y, spec_y)
            assert_close(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx, spec_gx)
            assert_close(nb.conv2d_backward_weight(x, gy, w.shape, *hyper), gw, spec_gw)


@pytest.mark.parametrize("algorithm", nb_conv.ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hyper", [((1, 2), (1, 1), (1, 1), 1), ((1, 1), (2, 1), (2, 1), 1),
                                   ((2, 1), (0, 2), (1, 2), 2)], ids=["s12", "s1-dilated", "grouped"])
def test_conv2d_wide_layer_matches_torch_and_spec(algorithm, dtype, hyper, winograd_on_any_layer):
    """Enough channels and pixels for full and partial tiles of output channels and many tasks; rows
    wider than a vector (float64's 16 lanes, float32's 32: whole vectors along each row, the last one
    overlapping) and narrower (vectors across rows, lanes on padding columns dropped); the backward
    input's phases written through strided views. x is small: the weight gradient sums 1170 products,
    and PyTorch's float32 result must stay within the tolerance too."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 18, 13, 45)) / 8).astype(dtype)
    w = (rng.standard_normal((22, 18 // hyper[3], 3, 3)) / 13).astype(dtype)
    y, gy, gx, gw = torch_conv(x, w, *hyper, rng)
    with nb.conv_algorithm(algorithm):
        assert_close(nb.conv2d_forward(x, w, y.shape[2:], *hyper), y, spec.conv2d_forward(x, w, y.shape[2:], *hyper))
        assert_close(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx,
                     spec.conv2d_backward_input(gy, w, x.shape, *hyper))
        assert_close(nb.conv2d_backward_weight(x, gy, w.shape, *hyper), gw,
                     spec.conv2d_backward_weight(x, gy, w.shape, *hyper))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [2, 5, 8, 13, 17, 31])
def test_stride2_backward_input_interleaves_phases_on_rows_narrower_than_a_vector(width, dtype):
    """Stride 2 along w: the direct sum's two column phases interleaved into gx's rows also when a row has
    fewer phase columns than a vector has lanes (most widths here, on every ISA): each vector runs across rows of gy,
    its lanes past a row's end go on in gx's next row and those on the padding columns are dropped. Odd
    and even widths; kernels 3, 4 and 5, dilated, grouped."""
    rng = np.random.default_rng(23)
    for kernel, padding, dilation, groups in ((3, 1, 1, 1), (4, 1, 1, 2), (3, 2, 2, 1), (5, 2, 1, 1)):
        hyper = ((2, 2), (padding, padding), (dilation, dilation), groups)
        x = rng.standard_normal((2, 4, 9, width)).astype(dtype)
        w = (rng.standard_normal((6, 4 // groups, kernel, kernel)) / (2 * kernel)).astype(dtype)
        y, gy, gx, _ = torch_conv(x, w, *hyper, rng)
        with nb.conv_algorithm("direct"):
            assert_close(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx,
                         spec.conv2d_backward_input(gy, w, x.shape, *hyper))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c_in, c_out, hw, padding, groups, vectors_per_task", [
    (2, 18, 22, (13, 45), 1, 1, 8),  # odd sizes: the last row and column of 2x2 tiles half outside
    (1, 8, 17, (6, 70), 0, 1, 2),  # 35 tiles a row: whole vectors along rows (float32), the last overlapping
    (3, 6, 9, (9, 9), 2, 3, 1),  # grouped; vectors of tiles across rows
    (1, 3, 4, (1, 2), 3, 1, 8),  # padding 3: the transposed conv crops gy (padding -1)
    (2, 16, 16, (8, 8), 1, 2, 3),
])
def test_conv2d_winograd_matches_torch_and_spec(n, c_in, c_out, hw, padding, groups, vectors_per_task, dtype):
    """Winograd F(2x2, 3x3) forward and backward-input (a correlation of gy with the flipped kernel) on
    3x3 stride-1 layers of odd and even sizes, tiles in vectors along and across rows, grouped."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, c_in, *hw)).astype(dtype)
    w = (rng.standard_normal((c_out, c_in // groups, 3, 3)) / np.sqrt(9 * c_in // groups)).astype(dtype)
    hyper = ((1, 1), (padding, padding), (1, 1), groups)
    y, gy, gx, _ = torch_conv(x, w, *hyper, rng)
    with nb.conv_algorithm("winograd"), chunking(2**24, 256, vectors_per_task):
        assert_close(nb.conv2d_forward(x, w, y.shape[2:], *hyper), y, spec.conv2d_forward(x, w, y.shape[2:], *hyper))
        assert_close(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx,
                     spec.conv2d_backward_input(gy, w, x.shape, *hyper))


AVX2 = nb.code_generation()["layout"] == "avx2"  # the Winograd thresholds are per instruction set (conv.py)


@pytest.mark.parametrize(("c_in", "c_out", "forward", "backward_input"), [
    (3, 16, False, False),  # the localizer's first layer
    (3, 64, False, False),  # the segmenters' first layer
    (4, 64, False, False),
    (8, 8, AVX2, AVX2),  # AVX2: from 8 channels each way (and 64 pairs); else 16 -> 32 and 1024 pairs
    (16, 16, AVX2, AVX2),
    (16, 32, AVX2, AVX2),
    (24, 24, AVX2, AVX2),
    (16, 64, True, AVX2),  # backward-input correlates 64 -> 16 channels
    (64, 16, AVX2, True),
    (32, 32, True, True),
    (64, 64, True, True),
])
def test_conv2d_winograd_only_on_layers_wide_enough(monkeypatch, c_in, c_out, forward, backward_input):
    """Winograd's transforms cost per channel: 3x3 stride-1 layers with few input or output channels
    (per group, of the correlation computed) run the direct sum, with the same results."""
    monkeypatch.setattr(nb_conv, "WINOGRAD_MIN_TILES", 1)  # the rule of the tiles is the next test's
    calls = []
    winograd = nb_conv._conv_winograd

    def recording(src, w, out, padding, groups):
        calls.append(out.shape[1])
        return winograd(src, w, out, padding, groups)

    monkeypatch.setattr(nb_conv, "_conv_winograd", recording)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, c_in, 6, 7))
    w = rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)
    y, gy, gx, _ = torch_conv(x, w, (1, 1), (1, 1), (1, 1), 1, rng)
    hyper = ((1, 1), (1, 1), (1, 1), 1)
    assert_close(nb.conv2d_forward(x, w, y.shape[2:], *hyper), y, spec.conv2d_forward(x, w, y.shape[2:], *hyper))
    assert calls == ([c_out] if forward else [])
    calls.clear()
    assert_close(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx,
                 spec.conv2d_backward_input(gy, w, x.shape, *hyper))
    assert calls == ([c_in] if backward_input else [])


@pytest.mark.parametrize(("n", "hw", "winograd"), [
    (1, (8, 8), False),  # 16 tiles: a learner's single small image
    (31, (8, 8), False),  # 496 tiles
    (32, (8, 8), True),  # 512: the localizer's last layer at the demo's size
    (2, (31, 32), True),  # odd rows: 2 * 16 * 16 tiles
])
def test_conv2d_winograd_only_on_batches_of_enough_tiles(monkeypatch, n, hw, winograd):
    """Winograd's transforms and set-up cost per call whatever the batch: a wide 3x3 layer with fewer than
    WINOGRAD_MIN_TILES 2x2 output tiles in its batch runs the direct sum on all three passes, with the same
    results."""
    calls = []
    for name in ("_conv_winograd", "_conv_backward_weight_winograd"):
        monkeypatch.setattr(nb_conv, name, functools.partial(
            lambda original, name, *args: calls.append(name) or original(*args), getattr(nb_conv, name), name))
    rng = np.random.default_rng(9)
    x = rng.standard_normal((n, 32, *hw))  # float64: the weight gradient's sums of 2000 products cancel
    w = rng.standard_normal((32, 32, 3, 3)) / np.sqrt(9 * 32)
    hyper = ((1, 1), (1, 1), (1, 1), 1)
    y, gy, gx, gw = torch_conv(x, w, *hyper, rng)
    assert_close(nb.conv2d_forward(x, w, y.shape[2:], *hyper), y, spec.conv2d_forward(x, w, y.shape[2:], *hyper))
    assert_close(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx,
                 spec.conv2d_backward_input(gy, w, x.shape, *hyper))
    assert_close(nb.conv2d_backward_weight(x, gy, w.shape, *hyper), gw,
                 spec.conv2d_backward_weight(x, gy, w.shape, *hyper))
    expected = ["_conv_winograd", "_conv_winograd", "_conv_backward_weight_winograd"]
    assert calls == (expected if winograd else [])

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c_in, c_out, hw, stride, padding, dilation, groups", [
    (3, 3, 16, (64, 64), (1, 1), (1, 1), (1, 1), 1),  # the localizer's first layer (rows of whole vectors)
    (2, 3, 5, (9, 70), (1, 1), (1, 1), (1, 1), 1),  # odd channel count; 70 columns: whole vectors and a tail
    (2, 1, 4, (7, 37), (2, 1), (0, 2), (1, 2), 1),  # strided rows, dilated columns: other phases and offsets
    (2, 6, 4, (5, 40), (1, 1), (2, 1), (1, 1), 2),  # grouped, 3 channels per group
    (1, 2, 3, (5, 37), (1, 1), (0, 0), (2, 2), 1),  # dilated: one output row of 33
    (2, 16, 2, (6, 70), (1, 1), (1, 1), (1, 1), 1),  # 144 taps, 2 output channels: half a vector's lanes or less
])
def test_conv2d_weight_gradient_with_pixel_lanes_matches_torch_and_spec(n, c_in, c_out, hw, stride, padding,
                                                                         dilation, groups, dtype, monkeypatch):
    """Few taps per group or few output channels, and rows a vector wide: the weight gradient with pixels
    along the lanes (the first layers' path), any stride, dilation, padding and group count, against
    PyTorch's float64 answer (with the room its conditioning needs: the sums of 12288 products cancel in
    places) and the spec."""
    calls = []
    pixels = nb_conv._conv_backward_weight_pixels
    monkeypatch.setattr(nb_conv, "_conv_backward_weight_pixels", lambda *args: calls.append(1) or pixels(*args))
    rng = np.random.default_rng(17)
    x = rng.standard_normal((n, c_in, *hw)).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups, 3, 3)).astype(dtype)
    hyper = (stride, padding, dilation, groups)
    out_hw = conv_output_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    gy = rng.standard_normal((n, c_out, *out_hw)).astype(dtype)
    conv = functools.partial(F.conv2d, stride=stride, padding=padding, dilation=dilation, groups=groups)
    _, (gw, allowance) = float64_reference(conv, [x, w], dtype, grad=[False, True], upstream=gy)
    assert_close_to_float64(spec.conv2d_backward_weight(x, gy, w.shape, *hyper), gw, dtype, "spec", allowance)
    for algorithm in ("winograd", "direct"):
        with nb.conv_algorithm(algorithm):
            assert_close_to_float64(nb.conv2d_backward_weight(x, gy, w.shape, *hyper), gw, dtype, algorithm,
                                    allowance)
    # every case takes this path with the ISAs' own widths; 2 output channels fill more than half of a
    # 16-byte vector of float64 (MINICV_VECTOR_BYTES or MINICV_LAYOUT_ISA=generic), and go channels-last
    pixel_lanes = conv_weight_grad_pixels.uses_pixel_lanes(c_in // groups, (3, 3), c_out // groups, out_hw[1],
                                                           x.itemsize)
    assert pixel_lanes or (c_out, nb_conv.simd.VECTOR_BYTES // x.itemsize) == (2, 2)
    assert len(calls) == (2 if pixel_lanes else 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c_in, c_out, hw, stride, groups", [
    (1, 8, 40, (13, 45), (1, 1), 1),  # one image in 7 parts of 2 rows (the last one row); c_out past a vector
    (3, 12, 6, (10, 33), (2, 1), 2),  # grouped, strided: 2 parts of 3 rows an image and group
    (2, 6, 5, (1, 70), (1, 1), 1),  # one output row: one part
    (2, 4, 20, (40, 69), (1, 1), 1),  # 3 bands a part: each band's gy laid out over the last one's
])
def test_conv2d_direct_weight_gradient_in_parts_matches_torch_and_spec(n, c_in, c_out, hw, stride, groups, dtype):
    """The direct weight gradient splits a small batch's pixels into parts (MIN_TASKS tasks), each task laying
    its bands of gy out channels-last itself: PyTorch's float64 answer within the dtype's bound, and the spec's."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((n, c_in, *hw)).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups, 3, 3)).astype(dtype)
    hyper = (stride, (1, 1), (1, 1), groups)
    out_hw = conv_output_hw(x.shape[2:], w.shape[2:], *hyper[:3])
    gy = rng.standard_normal((n, c_out, *out_hw)).astype(dtype)
    conv = functools.partial(F.conv2d, stride=stride, padding=1, groups=groups)
    _, (gw, allowance) = float64_reference(conv, [x, w], dtype, grad=[False, True], upstream=gy)
    got = conv_weight_grad._conv_backward_weight_direct(x, gy, w.shape, *hyper)
    assert_close_to_float64(got, gw, dtype, "direct", allowance)
    assert_close_to_float64(spec.conv2d_backward_weight(x, gy, w.shape, *hyper), gw, dtype, "spec", allowance)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path, n, groups, min_task_pixels, images_per_task", [
    ("direct", 19, 1, 1, 2), ("direct", 16, 2, 1, 4), ("winograd", 19, 1, 1, 2), ("direct", 19, 1, 64, 4)])
def test_conv2d_weight_gradient_with_images_sharing_partials_matches_torch_and_spec(
        path, n, groups, min_task_pixels, images_per_task, dtype, monkeypatch):
    """Partial sums past SHARED_PARTIALS_BYTES: images share one (19 images: 9 tasks of 2 and one of 1; 16
    images in 2 groups: 4 images a task), MIN_TASKS tasks kept; direct (stride 2) and Winograd. And the
    direct sum's tasks of MIN_TASK_PIXELS pixels at least: images of 5 x 4 outputs share them by 4."""
    monkeypatch.setattr(conv_weight_grad, "SHARED_PARTIALS_BYTES", 1)
    monkeypatch.setattr(conv_weight_grad, "MIN_TASK_PIXELS", min_task_pixels)
    calls = []
    # the kernel, its stride, and where images_per_task is among its arguments
    name, stride, at = ("_weight_gradient_tiles", 2, 8) if path == "direct" else ("_winograd_weight_tiles", 1, 6)
    tiles, run_tasks = getattr(conv_weight_grad, name), conv_weight_grad.run_tasks

    def spy(kernel, count, *args):  # records the kernel's images_per_task
        calls.extend([args[at]] if kernel is tiles else [])
        run_tasks(kernel, count, *args)

    monkeypatch.setattr(conv_weight_grad, "run_tasks", spy)
    rng = np.random.default_rng(29)
    x = rng.standard_normal((n, 4, 9, 7)).astype(dtype)
    w = rng.standard_normal((10, 4 // groups, 3, 3)).astype(dtype)
    hyper = ((stride, stride), (1, 1), (1, 1), groups)
    out_hw = conv_output_hw(x.shape[2:], w.shape[2:], *hyper[:3])
    gy = rng.standard_normal((n, 10, *out_hw)).astype(dtype)
    conv = functools.partial(F.conv2d, stride=stride, padding=1, groups=groups)
    _, (gw, allowance) = float64_reference(conv, [x, w], dtype, grad=[False, True], upstream=gy)
    if path == "direct":
        got = conv_weight_grad._conv_backward_weight_direct(x, gy, w.shape, *hyper)
    else:
        got = conv_weight_grad._conv_backward_weight_winograd(x, gy, w.shape, (1, 1))
    assert calls == [images_per_task]
    assert_close_to_float64(got, gw, dtype, path, allowance)
    assert_close_to_float64(spec.conv2d_backward_weight(x, gy, w.shape, *hyper), gw, dtype, "spec", allowance)


def test_conv2d_weight_gradient_with_pixel_lanes_only_for_few_taps_or_channels_and_wide_rows():
    lanes32 = nb_conv.simd.VECTOR_BYTES // 4
    uses = conv_weight_grad_pixels.uses_pixel_lanes
    assert uses(3, (3, 3), lanes32, lanes32, 4)  # 27 taps
    assert not uses(3, (3, 3), lanes32, lanes32 - 1, 4)  # rows narrower than a vector
    assert not uses(16, (3, 3), lanes32, 64, 4)  # 144 taps, full lanes: the channels-last tiles
    assert uses(16, (3, 3), lanes32 // 2, 64, 4)  # output channels fill half the tiles' lanes
    assert not uses(16, (3, 3), lanes32 // 2 + 1, 64, 4)
    assert uses(16, (3, 3), lanes32 // 4, 64, 8)  # float64: half as many lanes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c_in, c_out, hw, kernel, stride, padding, dilation, groups, band_bytes", [
    (2, 16, 16, (16, 16), 3, (2, 2), (1, 1), (1, 1), 1, None),  # the learned segmenter's stride-2 layers
    (1, 8, 40, (13, 45), 3, (2, 1), (1, 2), (1, 1), 1, 1),  # a band a row; c_out past a vector, and a tail
    (3, 12, 9, (10, 10), 3, (2, 2), (0, 3), (2, 1), 3, None),  # grouped, dilated, padded past the input
    (2, 6, 5, (9, 11), 4, (2, 2), (1, 1), (1, 1), 1, 300),  # 4x4 kernel; bands of 2 rows, the last one short
    (2, 5, 7, (6, 7), 1, (3, 2), (0, 0), (1, 1), 1, None),  # 1x1, stride 3 rows: x's rows skipped
    (1, 4, 3, (5, 6), 3, (1, 1), (1, 1), (1, 1), 1, None),  # stride 1: the kernel takes any stride
])
def test_conv2d_forward_with_channel_lanes_matches_torch_and_spec(n, c_in, c_out, hw, kernel, stride, padding,
                                                                  dilation, groups, band_bytes, dtype, monkeypatch):
    """The forward with output channels along the lanes (conv_direct_channels) on any stride, dilation,
    padding and group count, in bands of one or a few output rows per task: PyTorch's float64 answer within
    the dtype's bound, and the spec's."""
    if band_bytes is not None:
        monkeypatch.setattr(conv_direct_channels, "BAND_BYTES", band_bytes)
    rng = np.random.default_rng(31)
    x = rng.standard_normal((n, c_in, *hw)).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups, kernel, kernel)).astype(dtype)
    hyper = (stride, padding, dilation, groups)
    out_hw = conv_output_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    conv = functools.partial(F.conv2d, stride=stride, padding=padding, dilation=dilation, groups=groups)
    [(y, allowance)] = float64_reference(conv, [x, w], dtype)
    got = nb_conv.simd.empty((n, c_out, *out_hw), dtype)
    conv_direct_channels._conv_direct_channels(x, w, got, *hyper)
    assert_close_to_float64(got, y, dtype, "channel lanes", allowance)
    assert_close_to_float64(spec.conv2d_forward(x, w, out_hw, *hyper), y, dtype, "spec", allowance)


def test_conv2d_forward_with_channel_lanes_only_for_strided_layers_of_many_taps(monkeypatch):
    """The rule, and conv2d_forward following it: strided layers of more than MIN_TAPS taps per group, on
    the instruction sets where it was measured (AVX2), go channels along the lanes, with the direct sum's
    results; 3-channel first layers (27 taps) and stride 1 keep the direct sum."""
    uses = conv_direct_channels.uses_channel_lanes
    measured = conv_direct_channels.MIN_TAPS is not None
    assert measured == AVX2
    assert uses((2, 2), 16 * 9) == measured and uses((1, 2), 33) == measured
    assert not uses((2, 2), 27) and not uses((2, 2), 32) and not uses((1, 1), 64 * 9)
    calls = []
    channels = nb_conv._conv_direct_channels
    monkeypatch.setattr(nb_conv, "_conv_direct_channels", lambda *args: calls.append(1) or channels(*args))
    rng = np.random.default_rng(37)
    for c_in, stride in ((16, 2), (3, 2), (16, 1)):
        x = rng.standard_normal((2, c_in, 9, 8))
        w = rng.standard_normal((18, c_in, 3, 3)) / np.sqrt(9 * c_in)
        hyper = ((stride, stride), (1, 1), (1, 1), 1)
        out_hw = conv_output_hw(x.shape[2:], w.shape[2:], *hyper[:3])
        y = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=1).numpy()
        with nb.conv_algorithm("direct"):
            assert_close(nb.conv2d_forward(x, w, out_hw, *hyper), y, spec.conv2d_forward(x, w, out_hw, *hyper))
    assert len(calls) == (1 if measured else 0)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_conv2d_winograd_non_finite_input_gives_torch_infinities_and_nans(value, winograd_on_any_layer):
    """Winograd's transforms subtract inputs from each other (inf - inf is NaN), so a layer with an
    infinite or NaN output is run again by the direct sum: the same infinities and NaNs as PyTorch, in
    the forward and in the backward-input."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 9, 8))
    x[0, 1, 4, 5] = x[0, 0, 0, 7] = x[0, 0, 8, 0] = value
    w = np.abs(rng.standard_normal((3, 2, 3, 3)))  # one sign: PyTorch's sums of infinities stay infinite
    gy = np.abs(rng.standard_normal((1, 3, 9, 8)))
    gy[0, 2, 3, 3] = value
    y = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    gx = F.conv_transpose2d(torch.from_numpy(gy), torch.from_numpy(w), padding=1).numpy()
    assert np.isnan(y).any() if np.isnan(value) else np.isinf(y).any() and not np.isnan(y).any()
    assert not conv_winograd._conv_winograd(x, w, np.empty_like(y), (1, 1), 1)  # the transforms' own answer: refused
    hyper = ((1, 1), (1, 1), (1, 1), 1)
    with nb.conv_algorithm("winograd"):
        # NaN and inf where torch's
        np.testing.assert_allclose(nb.conv2d_forward(x, w, y.shape[2:], *hyper), y, rtol=1e-10)
        np.testing.assert_allclose(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx, rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c_in, c_out, hw, padding", [
    (2, 18, 22, (13, 45), 1),  # odd sizes: the last row and column of 2x2 tiles half outside gy
    (1, 8, 40, (6, 70), 2),  # 36 tiles a row: bands across rows; one image split into parts; c_out > lanes
    (3, 5, 7, (9, 11), 0),  # input channels not a multiple of the tile's rows
    (1, 3, 4, (1, 2), 3),  # padding 3: a gy of 5 x 6, most of its tiles' patches padding
    (2, 1, 1, (3, 3), 0),  # one output pixel, one tile
    (9, 6, 3, (4, 4), 1),  # more images than MIN_TASKS: one part each
    (2, 6, 8, (29, 149), 1),  # 5 bands a part: each band's gy laid out over the last one's, odd edges zeroed
])
def test_conv2d_backward_weight_winograd_matches_torch_and_spec(n, c_in, c_out, hw, padding, dtype,
                                                               winograd_on_any_layer, monkeypatch):
    """The Winograd F(2x2, 3x3) weight gradient (G^T [sum over tiles of (A dY A^T) * (B^T d B)] G) on odd
    and even sizes, bands across rows, images split into parts, narrow layers let through: PyTorch's and
    the spec's within the dtype's tolerance, and within the conditioning-aware bound of the float64
    answer (tests/reference.py). The input split a band of tiles at a time (the least SPLIT_BAND_BYTES
    allows) gives the same bits: the split moves no sum."""
    rng = np.random.default_rng(17)
    x = (rng.standard_normal((n, c_in, *hw)) / 8).astype(dtype)  # small, as in the wide-layer test
    w = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(dtype)
    hyper = ((1, 1), (padding, padding), (1, 1), 1)
    _, gy, _, gw = torch_conv(x, w, *hyper, rng)
    assert conv_weight_grad._conv_backward_weight_winograd(x, gy, w.shape, hyper[1]) is not None  # the path taken
    with nb.conv_algorithm("winograd"):
        got = nb.conv2d_backward_weight(x, gy, w.shape, *hyper)
    assert_close(got, gw, spec.conv2d_backward_weight(x, gy, w.shape, *hyper))
    (expected, allowance), = float64_reference(
        lambda a, b: torch.nn.grad.conv2d_weight(a, w.shape, b, padding=padding), [x, gy], dtype)
    assert_close_to_float64(got, expected, dtype, "weight gradient", allowance)
    monkeypatch.setattr(conv_weight_grad, "SPLIT_BAND_BYTES", 1)
    np.testing.assert_array_equal(conv_weight_grad._conv_backward_weight_winograd(x, gy, w.shape, hyper[1]), got)


@pytest.mark.parametrize("partials_bytes", [1, 40_000])
def test_conv2d_backward_weight_winograd_bounds_its_partial_sums(partials_bytes, monkeypatch):
    """A batch whose partial sums would pass PARTIALS_BYTES sums several images into each (all 5 into one,
    or a few into each): the same gradient as PyTorch's."""
    monkeypatch.setattr(conv_weight_grad, "PARTIALS_BYTES", partials_bytes)
    rng = np.random.default_rng(29)
    x = (rng.standard_normal((5, 6, 7, 9)) / 8).astype(np.float32)
    w = (rng.standard_normal((5, 6, 3, 3)) / np.sqrt(54)).astype(np.float32)
    _, gy, _, gw = torch_conv(x, w, (1, 1), (1, 1), (1, 1), 1, rng)
    assert_close(conv_weight_grad._conv_backward_weight_winograd(x, gy, w.shape, (1, 1)), gw,
                 spec.conv2d_backward_weight(x, gy, w.shape, (1, 1), (1, 1), (1, 1), 1))


def test_conv2d_backward_weight_winograd_serves_the_wide_layers():
    """3x3 stride-1 ungrouped layers of WINOGRAD_WEIGHT_MIN_CHANNELS channels and more take the Winograd weight
    gradient; narrower, grouped, strided or dilated ones the direct sum; the result is PyTorch's."""
    assert nb_conv._uses_winograd_weight_gradient((3, 3), (1, 1), (1, 1), 1, 32, 64, 512)
    assert not nb_conv._uses_winograd_weight_gradient((3, 3), (1, 1), (1, 1), 1, 16, 64, 512)
    # 32 channels elsewhere
    assert nb_conv._uses_winograd_weight_gradient((3, 3), (1, 1), (1, 1), 1, 24, 24, 512) == AVX2
    assert not nb_conv._uses_winograd_weight_gradient((3, 3), (1, 1), (1, 1), 2, 64, 64, 512)
    assert not nb_conv._uses_winograd_weight_gradient((3, 3), (2, 2), (1, 1), 1, 64, 64, 512)
    assert not nb_conv._uses_winograd_weight_gradient((3, 3), (1, 1), (2, 2), 1, 64, 64, 512)
    assert not nb_conv._uses_winograd_weight_gradient((3, 3), (1, 1), (1, 1), 1, 64, 64, 511)  # too few tiles
    with nb.conv_algorithm("direct"):
        assert not nb_conv._uses_winograd_weight_gradient((3, 3), (1, 1), (1, 1), 1, 64, 64, 512)
    rng = np.random.default_rng(19)
    x = rng.standard_normal((2, 33, 10, 7)).astype(np.float32)
    w = (rng.standard_normal((40, 33, 3, 3)) / np.sqrt(9 * 33)).astype(np.float32)
    hyper = ((1, 1), (1, 1), (1, 1), 1)
    _, gy, _, gw = torch_conv(x, w, *hyper, rng)
    assert_close(nb.conv2d_backward_weight(x, gy, w.shape, *hyper), gw,
                 spec.conv2d_backward_weight(x, gy, w.shape, *hyper))


# (x shape, w shape, stride, groups) of a case of each weight-gradient path
WEIGHT_GRADIENT_SPLITS = {
    "direct, two parts an image": ((3, 12, 32, 32), (20, 6, 3, 3), 2, 2),
    "direct, images sharing a task": ((9, 12, 8, 8), (20, 12, 4, 4), 2, 1),  # 4x4 outputs: 4 images a task
    "winograd": ((3, 32, 28, 28), (32, 32, 3, 3), 1, 1),
    "pixel lanes": ((3, 3, 40, 40), (16, 3, 3, 3), 1, 1),
}


@pytest.mark.parametrize("path", WEIGHT_GRADIENT_SPLITS)
def test_conv2d_backward_weight_bits_do_not_depend_on_the_thread_count(path):
    """Each weight gradient splits the batch into tasks and partial sums by the shape alone and adds the
    partials up in a fixed order, so one thread and every thread give the same bits."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread here: nothing to compare it with")
    x_shape, w_shape, stride, groups = WEIGHT_GRADIENT_SPLITS[path]
    rng = np.random.default_rng(9)
    x = rng.standard_normal(x_shape).astype(np.float32)
    out_hw = conv_output_hw(x_shape[2:], w_shape[2:], (stride, stride), (1, 1), (1, 1))
    gy = rng.standard_normal((x_shape[0], w_shape[0], *out_hw)).astype(np.float32)
    winograd = nb_conv._uses_winograd_weight_gradient(w_shape[2:], (stride, stride), (1, 1), groups, w_shape[1],
                                                      w_shape[0], nb_conv._tiles(gy.shape))
    pixel_lanes = conv_weight_grad_pixels.uses_pixel_lanes(w_shape[1], w_shape[2:], w_shape[0] // groups, out_hw[1],
                                                           x.itemsize)
    assert (winograd, pixel_lanes) == (path == "winograd", path == "pixel lanes")  # the path the case names
    gradients = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        with numba_threads(threads):
            gradients.append(nb.conv2d_backward_weight(x, gy, w_shape, (stride, stride), (1, 1), (1, 1), groups))
    np.testing.assert_array_equal(gradients[0], gradients[1])


@pytest.mark.parametrize("algorithm", nb_conv.ALGORITHMS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_conv2d_backward_weight_non_finite_input_gives_torch_infinities_and_nans(algorithm, value,
                                                                                  winograd_on_any_layer):
    """Winograd's transforms subtract inputs from each other (inf - inf is NaN), and the direct sum
    multiplies the inputs read on the split's padding columns by zeros (x[0, 0, 0, 7] by tap (0, 0): 0 * inf
    is NaN where PyTorch has no product): a weight gradient with an infinite or NaN element is run again by
    im2col, whose infinities and NaNs are PyTorch's."""
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal((1, 2, 9, 8)))  # one sign: PyTorch's sums of infinities stay infinite
    x[0, 1, 4, 5] = x[0, 0, 0, 7] = value
    gy = np.abs(rng.standard_normal((1, 3, 9, 8)))
    gy[0, 2, 3, 3] = value
    gw = torch.nn.grad.conv2d_weight(torch.from_numpy(x), (3, 2, 3, 3), torch.from_numpy(gy), padding=1).numpy()
    assert np.isnan(gw).any() if np.isnan(value) else np.isinf(gw).any() and not np.isnan(gw).any()
    assert conv_weight_grad._conv_backward_weight_winograd(x, gy, (3, 2, 3, 3), (1, 1)) is None  # refused
    with nb.conv_algorithm(algorithm):
        np.testing.assert_allclose(nb.conv2d_backward_weight(x, gy, (3, 2, 3, 3), (1, 1), (1, 1), (1, 1), 1), gw,
                                   rtol=1e-10)


def test_conv2d_winograd_weight_gradient_passes_gradcheck(winograd_on_any_layer):
    """gradcheck in float64 of a 3x3 stride-1 conv2d on the numba device, its weight gradient by Winograd."""
    rng = np.random.default_rng(23)
    x = mc.tensor(rng.standard_normal((2, 3, 5, 6)), device="numba", requires_grad=True)
    w = mc.tensor(rng.standard_normal((4, 3, 3, 3)), device="numba", requires_grad=True)
    assert gradcheck(lambda a, b: minicv_conv2d(a, b, padding=1), [x, w])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c_x, c_gy, hw, groups, vectors_per_task", [
    (2, 18, 22, (13, 45), 1, 8),  # odd x: output_padding 1, the last 4x4 tiles partly outside gx
    (1, 9, 17, (12, 140), 1, 2),  # 35 tiles a row: whole vectors along rows (float32), the last overlapping
    (3, 6, 9, (18, 18), 3, 1),  # grouped; vectors of tiles across rows
    (1, 3, 4, (2, 3), 1, 8),  # gy of 1 x 2: one tile, most of its outputs outside gx
    (2, 16, 16, (16, 17), 2, 3),
])
def test_conv_transpose2d_winograd_matches_torch_and_spec(n, c_x, c_gy, hw, groups, vectors_per_task, dtype):
    """Winograd F(2x2, 2x2) on each output phase of the 4x4 stride-2 padding-1 transposed conv (the
    backward-input of a 4x4 stride-2 conv): even and odd sizes, tiles in vectors along and across rows,
    grouped."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((n, c_x, *hw)).astype(dtype)
    w = (rng.standard_normal((c_gy, c_x // groups, 4, 4)) / np.sqrt(4 * c_gy // groups)).astype(dtype)
    hyper = ((2, 2), (1, 1), (1, 1), groups)
    _, gy, gx, _ = torch_conv(x, w, *hyper, rng)
    with nb.conv_algorithm("winograd"), chunking(2**24, 256, vectors_per_task):
        assert nb_conv._uses_transposed_winograd((4, 4), *hyper[:3], c_x // groups, gy.shape[3],
                                                 nb_conv.simd.VECTOR_BYTES // gy.itemsize)
        assert_close(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx,
                     spec.conv2d_backward_input(gy, w, x.shape, *hyper))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["direct", "winograd"])
def test_conv_tiles_of_every_row_count_match_torch_and_spec(algorithm, dtype, winograd_on_any_layer):
    """1 to 2 * ROWS + 1 channels out of a correlation: its last tile of channels full, partly used
    through the ROWS micro-kernel, or short (SHORT_ROWS rows or fewer used: the SHORT_ROWS micro-kernel,
    its rows past them unwritten). The forward's tiles are over the layer's output channels, the
    backward-input's over its input channels: direct (one phase, and stride 2's two column phases
    interleaved) and Winograd's forward, backward-input and 4x4 stride-2 transposed tiles (rows of 65
    tiles: two vectors and more on every ISA)."""
    rng = np.random.default_rng(17)
    assert 0 < conv_tiles.SHORT_ROWS < conv_tiles.ROWS
    for channels in range(1, 2 * conv_tiles.ROWS + 2):
        for kernel, stride in ((3, 1), (4, 2)):
            hyper = ((stride, stride), (1, 1), (1, 1), 1)
            for c_in, c_out in ((5, channels), (channels, 5)):
                x = rng.standard_normal((2, c_in, 6, 130)).astype(dtype)
                w = (rng.standard_normal((c_out, c_in, kernel, kernel)) / np.sqrt(c_in * kernel ** 2)).astype(dtype)
                y, gy, gx, _ = torch_conv(x, w, *hyper, rng)
                with nb.conv_algorithm(algorithm):
                    assert_close(nb.conv2d_forward(x, w, y.shape[2:], *hyper), y,
                                 spec.conv2d_forward(x, w, y.shape[2:], *hyper))
                    assert_close(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx,
                                 spec.conv2d_backward_input(gy, w, x.shape, *hyper))


def test_transposed_convs_with_narrow_rows_go_by_the_direct_sum():
    """The rules of TRANSPOSED_WINOGRAD_MIN_VECTORS (rows narrower than a vector: direct, any channel count)
    and TRANSPOSED_WINOGRAD_MIN_CHANNELS (direct only where both hold, narrow and rows of 1-2 vectors)."""
    lanes, exact = nb_conv.simd.VECTOR_BYTES // 4, ((4, 4), (2, 2), (1, 1), (1, 1))
    with nb.conv_algorithm("winograd"):
        assert not nb_conv._uses_transposed_winograd(*exact, 16, lanes, lanes)
        assert not nb_conv._uses_transposed_winograd(*exact, 24, 2 * lanes - 1, lanes)
        assert not nb_conv._uses_transposed_winograd(*exact, 16, lanes - 1, lanes)
        assert not nb_conv._uses_transposed_winograd(*exact, 64, lanes - 1, lanes)
        assert nb_conv._uses_transposed_winograd(*exact, 16, 2 * lanes, lanes)
        assert nb_conv._uses_transposed_winograd(*exact, 32, lanes, lanes)
        assert not nb_conv._uses_transposed_winograd((4, 4), (2, 2), (0, 0), (1, 1), 64, 4 * lanes, lanes)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_conv_transpose2d_winograd_non_finite_input_gives_torch_infinities_and_nans(value):
    """As for F(2x2, 3x3): a transposed conv with an infinite or NaN output is run again by the direct sum."""
    rng = np.random.default_rng(3)
    gy = np.abs(rng.standard_normal((1, 3, 5, 4)))  # one sign: PyTorch's sums of infinities stay infinite
    gy[0, 2, 3, 3] = gy[0, 0, 0, 0] = value
    w = np.abs(rng.standard_normal((3, 2, 4, 4)))
    gx = F.conv_transpose2d(torch.from_numpy(gy), torch.from_numpy(w), stride=2, padding=1).numpy()
    assert np.isnan(gx).any() if np.isnan(value) else np.isinf(gx).any() and not np.isnan(gx).any()
    assert not conv_winograd._transposed_winograd(gy, w, np.empty_like(gx), 1)  # the transforms' own answer: refused
    with nb.conv_algorithm("winograd"):
        np.testing.assert_allclose(nb.conv2d_backward_input(gy, w, gx.shape, (2, 2), (1, 1), (1, 1), 1), gx,
                                   rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("top_left, stride, size", [
    ((1, 1), (1, 1), (13, 79)), ((0, -3), (2, 1), (9, 12)), ((2, 5), (1, 3), (4, 50)), ((3, 0), (2, 2), (2, 8)),
    # stride 2 along w deals x's column pairs to both phases, whole vectors then the rest one by one
    ((1, 1), (2, 2), (7, 39)), ((0, 0), (1, 2), (11, 38)), ((1, 2), (2, 2), (6, 20)), ((2, 3), (2, 2), (8, 41)),
    ((0, -1), (2, 2), (6, 40))])
def test_split_phases_places_x_among_zeros(top_left, stride, size, dtype):
    """The direct conv's input copy: x zero-padded (or cropped: negative offset, a small size), then split
    by row and column phase; rows of stride-2 columns a vector long and more dealt in registers."""
    x = np.random.default_rng(5).standard_normal((2, 3, 11, 75)).astype(dtype)
    top, left = top_left
    padded = np.zeros((2, 3, 60, 300), dtype)  # margins: x always fits
    padded[:, :, 20 + top:20 + top + 11, 50 + left:50 + left + 75] = x
    padded = padded[:, :, 20:, 50:]
    expected = np.stack([np.stack([padded[:, :, r_h::stride[0], r_w::stride[1]][:, :, :size[0], :size[1]]
                                   for r_w in range(stride[1])], 2) for r_h in range(stride[0])], 2)
    out = np.full((2, 3, *stride, *size), np.nan, dtype)  # NaN: an element the kernel skips shows
    run_tasks(conv_tiles._split_phases, 2 * 3, x, top, left, out)
    np.testing.assert_array_equal(out, expected)
    # any layout through _phase_split (the kernel reads C-contiguous x), and the zeros after the split
    split, image_stride = conv_tiles._phase_split(np.asfortranarray(x), top_left, stride, size)
    assert image_stride == expected[0].size
    np.testing.assert_array_equal(split[:expected.size].reshape(expected.shape), expected)
    assert not split[expected.size:].any()


def test_phase_split_reads_an_input_that_is_its_own_split_in_place():
    """Stride 1, no padding, nothing cut off: the split is x itself, read where it is (no copy); a copy
    (with its vector of zeros after it) otherwise, or when x is not C-contiguous."""
    x = np.random.default_rng(5).standard_normal((2, 3, 11, 75)).astype(np.float32)
    src, image_stride = conv_tiles._phase_split(x, (0, 0), (1, 1), (11, 75))
    assert np.shares_memory(src, x) and src.size == x.size and image_stride == 3 * 11 * 75
    for top_left, size in (((0, 0), (11, 74)), ((0, 1), (11, 75))):
        src, _ = conv_tiles._phase_split(x, top_left, (1, 1), size)
        assert not np.shares_memory(src, x) and src.size > math.prod((2, 3, *size))
    src, _ = conv_tiles._phase_split(np.asfortranarray(x), (0, 0), (1, 1), (11, 75))
    np.testing.assert_array_equal(src.reshape(x.shape), x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [3, 8, 15, 16, 17, 31, 32, 33, 64])
def test_convs_reading_their_input_in_place_match_torch_and_spec(width, dtype):
    """Layers whose split is their input (stride 1, no padding): 1x1 layers, valid 3x3 ones (outputs
    narrower than their input rows), a 2x2 stride-2 transposed conv (both column phases read gy as it
    is), around a vector's width on every ISA. The direct sums read x in place only where every vector
    of outputs lies inside a row: elsewhere a read would pass x's end (the bounds check fails)."""
    rng = np.random.default_rng(29)
    for kernel, stride in ((1, 1), (3, 1), (2, 2)):
        hyper = ((stride, stride), (0, 0), (1, 1), 1)
        x = rng.standard_normal((2, 5, 7, width)).astype(dtype)
        if x.shape[3] < kernel:
            continue
        w = (rng.standard_normal((6, 5, kernel, kernel)) / (3 * kernel)).astype(dtype)
        y, gy, gx, gw = torch_conv(x, w, *hyper, rng)
        for algorithm in ("direct", "winograd"):
            with nb.conv_algorithm(algorithm):
                assert_close(nb.conv2d_forward(x, w, y.shape[2:], *hyper), y,
                             spec.conv2d_forward(x, w, y.shape[2:], *hyper))
                assert_close(nb.conv2d_backward_input(gy, w, x.shape, *hyper), gx,
                             spec.conv2d_backward_input(gy, w, x.shape, *hyper))
                assert_close(nb.conv2d_backward_weight(x, gy, w.shape, *hyper), gw,
                             spec.conv2d_backward_weight(x, gy, w.shape, *hyper))


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_conv2d_backward_input_is_conv_transpose2d_with_output_padding(algorithm):
    rng = np.random.default_rng(3)
    gy = rng.standard_normal((2, 6, 5, 4))
    w = rng.standard_normal((6, 2, 4, 3))  # groups 2: conv_transpose2d weight (C_in=6, C_out/g=2, kH, kW)
    expected = F.conv_transpose2d(torch.from_numpy(gy), torch.from_numpy(w), stride=(2, 3), padding=(1, 0),
                                  output_padding=(1, 2), groups=2, dilation=(1, 2))
    x_shape = (2, 4, *expected.shape[2:])
    with nb.conv_algorithm(algorithm):
        gx = nb.conv2d_backward_input(gy, w, x_shape, (2, 3), (1, 0), (1, 2), 2)
    assert_close(gx, expected, spec.conv2d_backward_input(gy, w, x_shape, (2, 3), (1, 0), (1, 2), 2))


# --- max pooling and unpooling ----------------------------------------------------------------------


POOL_CASES = pool_cases(max_extra=9, windows_meet_input=True)


@SETTINGS
@given(POOL_CASES)
def test_max_pool2d_forward_matches_torch_and_spec(case):
    shape, *pool, dtype, rng = case
    check_max_pool(nb.max_pool2d_forward, distinct_values(rng, shape, dtype), *pool)


@SETTINGS
@given(POOL_CASES, st.floats(0.0, 0.5), st.floats(0.0, 0.5))
def test_max_pool2d_ties_nan_and_minus_inf_match_torch(case, nan_share, minus_inf_share):
    shape, *pool, dtype, rng = case
    check_max_pool(nb.max_pool2d_forward, ties_nan_and_minus_inf(rng, shape, dtype, nan_share, minus_inf_share),
                   *pool)


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 3), pairs(2, 11), st.booleans(), dtypes, seeds, st.floats(0.0, 0.5),
       st.floats(0.0, 0.5), st.sampled_from(["as drawn", "times 5", "plus 33"]))
def test_max_pool2d_2x2_fast_path_matches_torch(n, c, hw, ceil_mode, dtype, seed, nan_share, minus_inf_share, widen):
    """The 2x2 stride-2 pool has its own path (odd sizes leave a remainder, ceil mode a partial window
    that sends the plane to the general path): distinct values, then ties, NaN and -inf. Its rows run
    in scalars, short vectors or whole ones by their width: widths up to 11, times 5 or plus 33 (up to
    55: 27 outputs a row, more than a whole vector's lanes on AVX2 in float32, on AVX-512 in float64)."""
    hw = (hw[0], {"as drawn": hw[1], "times 5": 5 * hw[1], "plus 33": hw[1] + 33}[widen])
    out_hw = tuple(pool_out_size(size, 2, 2, 0, 1, ceil_mode) for size in hw)
    pool = ((2, 2), (2, 2), (0, 0), (1, 1), ceil_mode, out_hw)
    rng = np.random.default_rng(seed)
    check_max_pool(nb.max_pool2d_forward, distinct_values(rng, (n, c, *hw), dtype), *pool)
    check_max_pool(nb.max_pool2d_forward, ties_nan_and_minus_inf(rng, (n, c, *hw), dtype, nan_share, minus_inf_share),
                   *pool)


@SETTINGS
@given(unpool_cases(max_in=5, max_extra=4))
def test_unpool_scatter_and_gather_match_max_unpool2d(case):
    values, indices, out_hw, rng = case
    out, g, g_values = torch_max_unpool2d_gradient(values, indices, out_hw, rng)
    assert_same(nb.unpool_scatter(values, indices, out_hw), out, spec.unpool_scatter(values, indices, out_hw))
    assert_same(nb.unpool_gather(g, indices), g_values, spec.unpool_gather(g, indices))


@SETTINGS
@given(POOL_CASES)
def test_unpool_scatter_sum_matches_max_pool2d_backward(case):
    shape, kernel, stride, padding, dilation, ceil_mode, out_hw, dtype, rng = case
    gy, indices, gx = torch_max_pool2d_gradient(shape, kernel, stride, padding, dilation, ceil_mode, dtype, rng)
    pool = (kernel, stride, padding, dilation)
    assert_close(nb.unpool_scatter(gy, indices, shape[2:], pool), gx, spec.unpool_scatter(gy, indices, shape[2:], pool))


def test_unpool_scatter_overwrite_keeps_one_duplicate_and_sum_adds_them():
    values = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    indices = np.array([[[[3, 0], [3, 0]]]])
    np.testing.assert_array_equal(nb.unpool_scatter(values, indices, (2, 2)), [[[[4, 0], [0, 3]]]])
    pool = ((2, 2), (1, 1), (0, 0), (1, 1))
    np.testing.assert_array_equal(nb.unpool_scatter(values, indices, (2, 2), pool), [[[[6, 0], [0, 4]]]])


@pytest.mark.parametrize("bad_index", [16, 18, -1, 2**62, -(2**62)])
def test_unpool_out_of_range_index_raises_like_torch(bad_index):
    values = np.ones((1, 2, 2, 2))
    indices = np.zeros((1, 2, 2, 2), dtype=np.int64)
    indices[0, 1, 1, 0] = bad_index
    indices[0, 1, 1, 1] = 17  # a later bad index: the first one is named
    with pytest.raises(RuntimeError) as torch_error:
        F.max_unpool2d(torch.from_numpy(values), torch.from_numpy(indices), 2, output_size=(4, 4))
    message = f"Found an invalid max index: {bad_index} (output volumes are of size 4x4)"
    assert str(torch_error.value).splitlines()[0] in (message, message.replace(str(bad_index), "17"))
    for pool in (None, ((2, 2), (2, 2), (0, 0), (1, 1))):
        with pytest.raises(IndexError) as error:
            nb.unpool_scatter(values, indices, (4, 4), pool)
        assert str(error.value) == message
    with pytest.raises(IndexError) as error:
        nb.unpool_gather(np.ones((1, 2, 4, 4)), indices)
    assert str(error.value) == message


# --- nearest upsampling -----------------------------------------------------------------------------


INDEX_MAPS = index_maps(max_size=7, max_length=15)


@SETTINGS
@given(INDEX_MAPS, INDEX_MAPS, dtypes, seeds)
def test_upsample_nearest_matches_torch_gather_and_spec(rows, cols, dtype, seed):
    (in_h, src_h), (in_w, src_w) = rows, cols
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, in_h, in_w)).astype(dtype)
    y_t, gy, gx_t = torch_gather_upsample(x, src_h, src_w, rng)
    assert_same(nb.upsample_nearest_forward(x, src_h, src_w), y_t, spec.upsample_nearest_forward(x, src_h, src_w))
    assert_close(nb.upsample_nearest_backward(gy, src_h, src_w, (in_h, in_w)), gx_t,
                 spec.upsample_nearest_backward(gy, src_h, src_w, (in_h, in_w)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_upsample_nearest_2x_matches_interpolate(dtype):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(dtype)
    x_t = torch.from_numpy(x).requires_grad_()
    y_t = F.interpolate(x_t, scale_factor=2, mode="nearest")
    src_h, src_w = np.arange(10) // 2, np.arange(14) // 2
    assert_same(nb.upsample_nearest_forward(x, src_h, src_w), y_t, spec.upsample_nearest_forward(x, src_h, src_w))
    gy = np.random.default_rng(1).standard_normal(y_t.shape).astype(dtype)
    y_t.backward(torch.from_numpy(gy))
    assert_close(nb.upsample_nearest_backward(gy, src_h, src_w, (5, 7)), x_t.grad,
                 spec.upsample_nearest_backward(gy, src_h, src_w, (5, 7)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_w", [1, 8, 37])
def test_upsample_nearest_2x_loops_equal_the_general_ones_bit_for_bit(dtype, in_w):
    """Scale 2 along the rows has loops of its own (kernels/numba/upsample.py): the general gather's values,
    and the backward's sums in the general scatter's order."""
    from minicv.kernels.numba import upsample

    rng = np.random.default_rng(in_w)
    x, gy = rng.standard_normal((4, 3, in_w)).astype(dtype), rng.standard_normal((4, 6, 2 * in_w)).astype(dtype)
    src_h, src_w = np.arange(6) // 2, np.arange(2 * in_w) // 2
    assert upsample._doubled(src_w, in_w) and not upsample._doubled(src_w[:-1], in_w)
    ys, gxs = [np.empty((4, 6, 2 * in_w), dtype) for _ in range(2)], [np.empty((4, 3, in_w), dtype) for _ in range(2)]
    for doubled, y, gx in zip((True, False), ys, gxs):
        run_tasks(upsample._upsample_nearest_forward, 4, x, src_h, src_w, doubled, y)
        run_tasks(upsample._upsample_nearest_backward, 4, gy, src_h, src_w, doubled, gx)
    np.testing.assert_array_equal(ys[0], ys[1])
    np.testing.assert_array_equal(gxs[0], gxs[1])


def test_upsample_nearest_refuses_out_of_range_source_indices():
    x = np.ones((1, 1, 3, 3))
    with pytest.raises(IndexError, match="src_h"):
        nb.upsample_nearest_forward(x, np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(IndexError, match="src_w"):
        nb.upsample_nearest_backward(np.ones((1, 1, 2, 2)), np.array([0, 1]), np.array([-1, 0]), (3, 3))


# --- softmax cross-entropy --------------------------------------------------------------------------


# Large logits in both dtypes: the backward gets (max, log_sum) apart, so its log_softmax is as exact as
# PyTorch's (a float32 logsumexp of logits ~40 would be off by ulp(40) ~ 4e-6).
CROSS_ENTROPY_CASES = cross_entropy_cases(max_classes=7, max_side=25, scales=(3, 40))


def _check_cross_entropy(case, rng):
    """Both numba kernels against PyTorch and the spec on ``case`` (x, target, weight, ignore_index,
    label_smoothing), with the upstream gradient drawn from ``rng``."""
    loss_t, stats_t, g, gx_t = torch_cross_entropy_gradient(*case, rng)
    kernel = kernel_args(*case)
    loss, stats = nb.softmax_cross_entropy_forward(*kernel)
    spec_loss, spec_stats = spec.softmax_cross_entropy_forward(*kernel)
    assert_close(loss, loss_t, spec_loss)
    assert_close(stats, stats_t, spec_stats)
    assert_close(nb.softmax_cross_entropy_backward(*kernel, stats, g), gx_t,
                 spec.softmax_cross_entropy_backward(*kernel, spec_stats, g))


@SETTINGS
@given(CROSS_ENTROPY_CASES)
def test_softmax_cross_entropy_forward_and_backward_match_torch_and_spec(case):
    _check_cross_entropy(case[:-1], case[-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("literal_width", [False, True])
def test_softmax_cross_entropy_full_and_ragged_pixel_blocks_match_torch_and_spec(dtype, label_smoothing,
                                                                                  literal_width, monkeypatch):
    """Images larger than the kernels' pixel blocks (the drawn cases above stay below a backward block), in
    both kernels. With literal_width (AVX-512 code) full blocks run the literal-width code and the last one
    the ragged code; without it (AVX2 code) every block runs the ragged code. The one this CPU's code does
    not have is compiled here, with the module's flag switched, so that every CPU tests both."""
    from minicv.kernels.numba import loss
    from minicv.kernels.numba.loss import BACKWARD_BLOCK, FORWARD_BLOCK

    if literal_width != loss.LITERAL_WIDTH:
        monkeypatch.setattr(loss, "LITERAL_WIDTH", literal_width)  # read when the copies below compile
        for name in ("_forward", "_backward"):
            copy = njit(error_model="numpy", fastmath={"contract"})(getattr(loss, name).py_func)
            monkeypatch.setattr(loss, name, copy)
    rng = np.random.default_rng(5)
    classes, hw = 5, (67, 123)
    pixels = hw[0] * hw[1]
    assert pixels > 2 * BACKWARD_BLOCK and pixels % BACKWARD_BLOCK and pixels % FORWARD_BLOCK
    x = (3 * rng.standard_normal((2, classes, *hw))).astype(dtype)
    target = rng.integers(0, classes, (2, *hw))
    target[rng.random(target.shape) < 0.2] = -100
    weight = rng.uniform(0.1, 2.0, classes).astype(dtype)
    _check_cross_entropy((x, target, weight, -100, label_smoothing), rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_propagates_nan_and_handles_minus_inf(dtype):
    x = np.array([[[np.nan, 1.0], [0.0, -np.inf], [2.0, 3.0]]], dtype=dtype)  # (N=1, C=3, P=2)
    target = np.array([[1, 1]])
    x_t = torch.from_numpy(x).requires_grad_()
    loss_t = F.cross_entropy(x_t, torch.from_numpy(target), reduction="none")
    loss, stats = nb.softmax_cross_entropy_forward(x, target, np.ones(3, dtype), -100, 0.0)
    assert np.isnan(loss[0, 0]) and np.isnan(stats[:, 0, 0]).all()
    np.testing.assert_array_equal(loss, loss_t.detach().numpy())  # the -inf logit is the target: inf loss
    gx = nb.softmax_cross_entropy_backward(x, target, np.ones(3, dtype), -100, 0.0, stats, np.ones((1, 2), dtype))
    loss_t[:, 0].sum().backward()
    assert np.isnan(gx[0, :, 0]).all() and np.isnan(x_t.grad.numpy()[0, :, 0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_nan_and_minus_inf_in_full_vector_blocks(dtype):
    """The same in the vectorised full-block code (the test above runs the ragged code): a NaN logit in
    any class makes its pixel's loss, stats and gradient NaN and no other pixel's; a -inf logit is a zero
    probability (zero gradient), or an inf loss where it is the target."""
    from minicv.kernels.numba.loss import BACKWARD_BLOCK

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, BACKWARD_BLOCK)).astype(dtype)
    target = rng.integers(0, 3, (1, BACKWARD_BLOCK))
    x[0, 2, 5] = x[0, 0, 130] = np.nan  # a later class (the max's running NaN) and the first (its start)
    x[0, 1, 7], target[0, 7] = -np.inf, 0
    x[0, 1, 9], target[0, 9] = -np.inf, 1
    x_t = torch.from_numpy(x).requires_grad_()
    loss_t = F.cross_entropy(x_t, torch.from_numpy(target), reduction="none")
    loss_t.sum().backward()
    loss, stats = nb.softmax_cross_entropy_forward(x, target, np.ones(3, dtype), -100, 0.0)
    gx = nb.softmax_cross_entropy_backward(x, target, np.ones(3, dtype), -100, 0.0, stats, np.ones((1, BACKWARD_BLOCK),
                                                                                                    dtype))
    nan = np.isnan(loss[0])
    assert np.flatnonzero(nan).tolist() == [5, 130] and np.isnan(stats[:, 0, [5, 130]]).all()
    assert np.isnan(gx[0][:, nan]).all() and not np.isnan(gx[0][:, ~nan]).any()
    assert loss[0, 9] == np.inf and gx[0, 1, 7] == 0
    assert_close(loss, loss_t.detach().numpy())
    assert_close(gx, x_t.grad.numpy())


@pytest.mark.parametrize(("bad_target", "ignore_index"), [(3, -100), (-100, 1), (-1, -100), (7, 2)])
def test_softmax_cross_entropy_out_of_range_target_raises_like_torch(bad_target, ignore_index):
    check_out_of_range_target(nb.softmax_cross_entropy_forward, nb.softmax_cross_entropy_backward, bad_target,
                              ignore_index)


def test_softmax_cross_entropy_without_classes_reads_nothing(monkeypatch):
    """C = 0: no logit exists, so every target must be ignored; nothing is read, no kernel loop runs."""
    from minicv.kernels.numba import loss

    monkeypatch.setattr(loss, "run_tasks", lambda *args: pytest.fail("a cross-entropy kernel ran without classes"))
    x, weight, ignored = np.empty((2, 0, 3), np.float32), np.empty(0, np.float32), np.full((2, 3), -100)
    loss, stats = nb.softmax_cross_entropy_forward(x, ignored, weight, -100, 0.0)
    np.testing.assert_array_equal(loss, 0)
    assert stats.shape == (2, 2, 3)
    assert nb.softmax_cross_entropy_backward(x, ignored, weight, -100, 0.0, stats, loss).shape == x.shape
    target = ignored.copy()
    target[1, 2] = 0
    with pytest.raises(IndexError, match=r"^Target 0 is out of bounds\.$"):
        nb.softmax_cross_entropy_forward(x, target, weight, -100, 0.0)
    with pytest.raises(IndexError, match=r"^Target 0 is out of bounds\.$"):
        nb.softmax_cross_entropy_backward(x, target, weight, -100, 0.0, stats, loss)


def test_softmax_cross_entropy_backward_refuses_saved_arrays_of_another_shape():
    x, target = np.zeros((1, 3, 4)), np.zeros((1, 4), np.int64)
    _, stats = nb.softmax_cross_entropy_forward(x, target, np.ones(3), -100, 0.0)
    with pytest.raises(ValueError, match=r"stats has shape \(1, 4\), expected \(2, 1, 4\)"):
        nb.softmax_cross_entropy_backward(x, target, np.ones(3), -100, 0.0, stats[0], np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"g has shape \(4,\), expected \(1, 4\)"):
        nb.softmax_cross_entropy_backward(x, target, np.ones(3), -100, 0.0, stats, np.ones(4))



@njit(fastmath={"contract"})
def _exps_and_logs(x, y, constants):
    """The loss kernels' written-out exp of every x (<= 0) and log of every y (> 0), in their dtype."""
    exps, logs = np.empty_like(x), np.empty_like(y)
    for i in range(x.size):
        exps[i] = nb_loss._exp(x[i], constants)
    for i in range(y.size):
        logs[i] = nb_loss._log(y[i])
    return exps, logs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_written_out_exp_and_log_are_accurate_to_a_few_ulps_over_their_whole_range(dtype):
    """exp of every x above the lowest the kernels keep (-87 in float32, -708 in float64: a normal exp) up to
    0, densely, and log of positive normal floats (sums of exps lie in [1, C]) within 3 ulps of the exact
    value (float64's, or float128's for float64); exp is 0 from the lowest down; NaN passes through both."""
    lowest = -87.0 if dtype == np.float32 else -708.0
    x = np.concatenate([np.linspace(lowest, 0, 1_000_003)[1:], -np.geomspace(1e-30, 1, 100_003)]).astype(dtype)
    y = np.concatenate([np.linspace(1, 1000, 1_000_003), np.geomspace(1e-30, 1e30, 100_003)]).astype(dtype)
    exps, logs = _exps_and_logs(x, y, nb_loss._exp_constants(x.dtype))
    wide = np.longdouble if dtype == np.float64 else np.float64
    for got, want in ((exps, np.exp(x.astype(wide))), (logs, np.log(y.astype(wide)))):
        ulps = np.abs(got.astype(wide) - want) / np.spacing(want.astype(dtype)).astype(wide)
        assert ulps.max() <= 3, float(ulps.max())
    exps, logs = _exps_and_logs(np.array([lowest, -np.inf, np.nan], dtype), np.array([np.nan], dtype),
                                nb_loss._exp_constants(np.dtype(dtype)))
    assert exps[0] == exps[1] == 0 and np.isnan(exps[2]) and np.isnan(logs[0])

# --- batch norm -------------------------------------------------------------------------------------


@SETTINGS
@given(batch_norm_cases())
def test_batch_norm_forward_and_backward_match_torch_and_spec(case):
    check_batch_norm(nb.batch_norm_forward, nb.batch_norm_backward, *case)


def test_batch_norm_relu_masks_where_the_given_output_is_not_positive():
    check_relu_mask(nb.batch_norm_forward, nb.batch_norm_backward)




# --- cold start: one compile per dtype ---------------------------------------------------------------

ONE_OF_EACH_LAYER = """
import collections, sys
import numpy as np
from numba.core import event
import minicv.kernels.numba as nb
from minicv.kernels.numba import conv, conv_direct

compiles = collections.Counter()
class Count(event.Listener):
    def on_start(self, ev):
        compiles[ev.data["dispatcher"].py_func.__qualname__] += 1
    def on_end(self, ev):
        pass
event.register("numba:compile", Count())

conv.WINOGRAD_MIN_CHANNELS, conv.WINOGRAD_MIN_PAIRS, conv.WINOGRAD_MIN_TILES = (1, 1), 1, 1  # Winograd on these
conv.TRANSPOSED_WINOGRAD_MIN_CHANNELS, conv.TRANSPOSED_WINOGRAD_MIN_VECTORS = 1, 0  # small layers too, any width
rng = np.random.default_rng(0)
def f32(*shape):
    return rng.standard_normal(shape, np.float32)
x, one = f32(2, 4, 12, 12), (1, 1)
conv_direct._conv_direct(x, f32(8, 4, 3, 3), np.empty((2, 8, 6, 6), np.float32), (2, 2), one, one, 1)
nb.conv2d_backward_input(f32(2, 8, 6, 6), f32(8, 4, 3, 3), x.shape, (2, 2), one, one, 1)  # gx's row phases
nb.conv2d_backward_input(f32(2, 8, 6, 6), f32(8, 4, 4, 4), x.shape, (2, 2), one, one, 1)  # Winograd per phase
nb.conv2d_backward_input(f32(2, 8, 6, 6), f32(8, 1, 4, 4), x.shape, (2, 2), one, one, 4)  # grouped: sub-kernels F
nb.conv2d_backward_input(f32(2, 8, 12, 12), f32(8, 4, 3, 3), x.shape, one, one, one, 1)  # Winograd
planes = x.reshape(2, 4, -1)  # batch norm's kernels take (N, C, pixels)
for training, relu in ((True, False), (False, False), (True, True), (False, True)):  # the ReLU: a flag, no compile
    mean, var = (None, None) if training else (planes.mean((0, 2)), planes.var((0, 2)))
    y, mean, var = nb.batch_norm_forward(planes, mean, var, np.ones(4, np.float32), np.zeros(4, np.float32),
                                         1e-5, training, relu)
    nb.batch_norm_backward(y, planes, mean, var, np.ones(4, np.float32), 1e-5, training, y if relu else None)
print(dict(compiles))
"""


def test_kernels_compile_once_for_the_layouts_and_index_types_a_step_passes(tmp_path):
    """On an empty cache, a strided conv's forward (C-contiguous output) and backward-input (strided phases
    of gx, a transposed sub-kernel), Winograd's forward and transposed kernels and batch norm in training
    and eval compile each core once: one layout and index type reaches it (docs/kernels/cold_start.md),
    where each layout would cost a compile of its own (seconds each)."""
    import ast
    import os
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", ONE_OF_EACH_LAYER], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    compiles = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    cores = ["_correlate_tiles", "_weight_tiles", "_winograd_weights", "_winograd_tiles",
             "_winograd_transposed_tiles", "_sum", "_sum_squared_deviations", "_sums_of_gradient"]
    assert {name: compiles.get(name) for name in cores} == dict.fromkeys(cores, 1)
