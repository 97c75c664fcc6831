"""The CUDA convolution kernels (kernels/cuda/conv.cu through conv.py) against PyTorch.

They run on cudasim everywhere and on the GPU (cuda) where there is one. Every input sits inside a NaN
margin and every output buffer starts as NaN, so a read outside an operand or an element left unwritten
shows up as NaN in the comparison.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cases import ShapeOnly, assert_close, conv_cases, shape_only_backend, split_schedule, to_host, torch_conv
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from minicv.kernels.cuda import conv
from minicv.kernels.cudasim import runtime

SETTINGS = settings(max_examples=40, deadline=None)
DEVICES = ["cudasim", "cudasim-reverse", pytest.param("cuda", marks=pytest.mark.gpu)]
CONV_CU = Path(conv.__file__).with_name("conv.cu")

class NanEmpty:
    """An array module whose ``empty`` is filled with NaN, so that unwritten outputs cannot pass."""

    def __init__(self, xp) -> None:
        self._xp = xp

    def empty(self, shape, dtype):
        return self._xp.full(shape, np.nan, dtype=dtype)

    def __getattr__(self, name):
        return getattr(self._xp, name)


def backend_of(device: str):
    device, schedule = split_schedule(device)
    if device == "cudasim":
        from minicv.kernels.cudasim import backend
    else:
        from minicv.kernels.cuda import backend

    def kernel(source_file: str, name_expression: str):
        launch = backend.kernel(source_file, name_expression)

        def scheduled(*args, **kwargs):
            with runtime.schedule(schedule):
                launch(*args, **kwargs)

        return scheduled

    return SimpleNamespace(xp=NanEmpty(backend.xp), kernel=kernel, max_blocks=backend.max_blocks)


def on_device(backend, a: np.ndarray):
    """a on the backend, as a contiguous view into a NaN-filled buffer twice its size."""
    margin = max(a.size, 64)
    buffer = backend.xp.full(a.size + 2 * margin, np.nan, dtype=a.dtype)
    buffer[margin : margin + a.size] = backend.xp.asarray(a.ravel())
    return buffer[margin : margin + a.size].reshape(a.shape)


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(conv_cases())
def test_conv2d_forward_matches_torch(device, case):
    x, w, stride, padding, dilation, groups, rng = case
    y, *_ = torch_conv(*case)
    backend = backend_of(device)
    assert_close(conv.conv2d_forward(backend, on_device(backend, x), on_device(backend, w), y.shape[2:], stride,
                                     padding, dilation, groups), y)


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(conv_cases())
def test_conv2d_backward_input_matches_torch_autograd(device, case):
    x, w, stride, padding, dilation, groups, rng = case
    _, gy, gx, _ = torch_conv(*case)
    backend = backend_of(device)
    assert_close(conv.conv2d_backward_input(backend, on_device(backend, gy), on_device(backend, w), x.shape,
                                            stride, padding, dilation, groups), gx)


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(conv_cases(), st.one_of(st.none(), st.integers(1, 6)))
def test_conv2d_backward_weight_matches_torch_autograd(device, case, k_splits):
    """Also with the reduction split over 1 to 6 blocks per tile: more splits than slices of 16 pixels
    leaves some splits empty, whose partial sums must be zeros."""
    x, w, stride, padding, dilation, groups, rng = case
    _, gy, _, gw = torch_conv(*case)
    backend = backend_of(device)
    assert_close(conv.conv2d_backward_weight(backend, on_device(backend, x), on_device(backend, gy), w.shape,
                                             stride, padding, dilation, groups, k_splits=k_splits), gw)


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(conv_cases(), st.data())
def test_conv2d_backward_input_is_conv_transpose2d(device, case, data):
    """With x_shape carrying output_padding, backward-input is the forward of conv_transpose2d; output
    padding may reach past the stride when the dilation allows it (op < s or op < d)."""
    x_t, w, stride, padding, dilation, groups, rng = case  # x_t: the transposed conv's input, w its weight
    w = rng.standard_normal((x_t.shape[1], w.shape[0] // groups, *w.shape[2:])).astype(x_t.dtype)
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True))
    out_hw = [(size - 1) * s - 2 * p + d * (k - 1) + op + 1
              for size, k, s, p, d, op in zip(x_t.shape[2:], w.shape[2:], stride, padding, dilation, output_padding,
                                              strict=True)]
    assume(min(out_hw) >= 1)  # PyTorch rejects smaller sizes, so they never reach a kernel
    y = F.conv_transpose2d(torch.from_numpy(x_t), torch.from_numpy(w), stride=stride, padding=padding,
                           output_padding=output_padding, groups=groups, dilation=dilation)
    backend = backend_of(device)
    assert_close(conv.conv2d_backward_input(backend, on_device(backend, x_t), on_device(backend, w), y.shape,
                                            stride, padding, dilation, groups), y)


@pytest.mark.parametrize("device", DEVICES)
def test_several_tiles_in_every_direction(device):
    """C_out and C_in above one 64-row tile, pixels and taps above one 64-column tile, a ragged edge in
    each, and a reduction of 512 pixels that backward-weight splits in two by itself (and in three, none
    of them empty, when asked)."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 67, 16, 16)), rng.standard_normal((70, 67, 3, 3))
    y, gy, gx, gw = torch_conv(x, w, (1, 1), (1, 1), (1, 1), 1, rng)
    backend = backend_of(device)
    x_d, w_d, gy_d = (on_device(backend, a) for a in (x, w, gy))
    assert_close(conv.conv2d_forward(backend, x_d, w_d, (16, 16), (1, 1), (1, 1), (1, 1), 1), y)
    assert_close(conv.conv2d_backward_input(backend, gy_d, w_d, x.shape, (1, 1), (1, 1), (1, 1), 1), gx)
    for k_splits in (None, 3):
        assert_close(conv.conv2d_backward_weight(backend, x_d, gy_d, w.shape, (1, 1), (1, 1), (1, 1), 1,
                                                 k_splits=k_splits), gw)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_operands_are_read_correctly(device):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3))
    y, *_ = torch_conv(x, w, (2, 1), (1, 0), (1, 2), 2, rng)
    backend = backend_of(device)
    x_view = backend.xp.asarray(x.transpose(0, 1, 3, 2).copy()).transpose(0, 1, 3, 2)  # a strided view
    assert not x_view.flags.c_contiguous
    assert_close(conv.conv2d_forward(backend, x_view, backend.xp.asarray(w), y.shape[2:], (2, 1), (1, 0), (1, 2), 2),
                 y)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    """No launch for an empty output; an empty reduction gives a zero weight gradient."""
    backend = backend_of(device)
    x, w = backend.xp.zeros((0, 4, 5, 5)), backend.xp.ones((6, 2, 3, 3))
    y = conv.conv2d_forward(backend, x, w, (3, 3), (1, 1), (0, 0), (1, 1), 2)
    assert y.shape == (0, 6, 3, 3)
    assert conv.conv2d_backward_input(backend, y, w, x.shape, (1, 1), (0, 0), (1, 1), 2).shape == x.shape
    gw = to_host(conv.conv2d_backward_weight(backend, x, y, w.shape, (1, 1), (0, 0), (1, 1), 2))
    np.testing.assert_array_equal(gw, np.zeros((6, 2, 3, 3)))


def test_shapes_that_would_leave_the_buffers_are_rejected():
    backend = backend_of("cudasim")
    x, w, gy = np.zeros((2, 4, 5, 5)), np.zeros((6, 2, 3, 3)), np.zeros((2, 6, 3, 3))
    with pytest.raises(ValueError, match="groups=1 do not fit"):
        conv.conv2d_forward(backend, x, w, (3, 3), (1, 1), (0, 0), (1, 1), 1)  # w holds 2 of the 4 channels
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv2d_backward_input(backend, gy[:1], w, x.shape, (1, 1), (0, 0), (1, 1), 2)
    with pytest.raises(ValueError, match="must be positive"):
        conv.conv2d_backward_input(backend, gy, w, x.shape, (0, 1), (0, 0), (1, 1), 2)
    with pytest.raises(TypeError, match="one dtype"):
        conv.conv2d_backward_weight(backend, x.astype(np.float32), gy, w.shape, (1, 1), (0, 0), (1, 1), 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        conv.conv2d_forward(backend, x.astype(np.int64), w.astype(np.int64), (3, 3), (1, 1), (0, 0), (1, 1), 2)


def test_sizes_near_the_int32_limit_are_refused_before_anything_is_allocated():
    """GEMM indices are ints in conv.cu, and the weight gradient's splits reach up to k_splits * TILE_K past
    the last pixel: 524287 images of 64x64 through a 1x1 conv (2**31 - 8193 pixels) used to pass the check
    and give a weight gradient of zeros, each split's range having wrapped negative."""
    limit = np.iinfo(np.int32).max - conv.MAX_GRID_Z * conv.TILE_K
    args = ((1, 1), (0, 0), (1, 1), 1)
    assert conv._conv_args((1, 1, 1, limit), (1, 1, 1, 1), (1, 1, 1, limit), *args)[3] == limit
    with pytest.raises(ValueError, match="int32 indexing"):
        conv._conv_args((1, 1, 1, limit + 1), (1, 1, 1, 1), (1, 1, 1, limit + 1), *args)
    x = ShapeOnly((524287, 1, 64, 64), np.float32)
    with pytest.raises(ValueError, match="int32 indexing"):
        conv.conv2d_backward_weight(shape_only_backend(), x, x, (1, 1, 1, 1), *args)


def test_launch_geometry_matches_conv_cu():
    source = CONV_CU.read_text(encoding="utf-8")
    constant = {name: int(value) for name, value in re.findall(r"constexpr int (\w+) = (\d+);", source)}
    assert (constant["TILE_M"], constant["TILE_N"], constant["TILE_K"]) == (conv.TILE_M, conv.TILE_N, conv.TILE_K)
    assert (constant["BLOCK_X"], constant["BLOCK_Y"], 1) == conv.BLOCK


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH: cannot compile for sm_90")
def test_conv_cu_compiles_for_sm90_without_atomics():
    from minicv.kernels.cuda.check_ptx import compile_ptx

    ptx = compile_ptx("conv.cu")
    for kernel in ("conv2d_forward_kernel", "conv2d_backward_input_kernel", "conv2d_backward_weight_kernel",
                   "sum_k_splits_kernel"):
        assert kernel in ptx
    assert not re.search(r"\b(atom|red)\.", ptx), "conv.cu must be deterministic: no atomic instructions"
