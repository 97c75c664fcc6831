"""The NumPy specification kernels (minicv.kernels.numpy) against PyTorch, kernel by kernel.

Configurations are drawn by hypothesis; array contents come from a drawn seed. Max ops use tie-free
inputs (a permutation of distinct values) unless a test is about ties, NaN or -inf.
"""

import minicv.kernels.numpy as spec
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
    every_window_meets_input,
    index_maps,
    kernel_args,
    pool_cases,
    seeds,
    torch_conv,
    torch_cross_entropy_gradient,
    torch_max_pool2d_gradient,
    torch_max_unpool2d,
    torch_max_unpool2d_gradient,
    unpool_cases,
    with_nan_and_minus_inf,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minicv.ops import kernel_table

SETTINGS = settings(max_examples=40, deadline=None)
def test_has_every_kernel_of_the_registry():
    assert all(callable(getattr(spec, name)) for name in kernel_table())


# --- convolution ------------------------------------------------------------------------------------

CONV_CASES = conv_cases(max_kernel=4, max_dilation=3, max_extra=6, max_batch=2)


@SETTINGS
@given(CONV_CASES)
def test_conv2d_forward_matches_torch(case):
    x, w, stride, padding, dilation, groups, rng = case
    y, *_ = torch_conv(*case)
    assert_close(spec.conv2d_forward(x, w, y.shape[2:], stride, padding, dilation, groups), y)


@SETTINGS
@given(CONV_CASES)
def test_conv2d_backward_input_matches_torch_autograd(case):
    x, w, stride, padding, dilation, groups, rng = case
    _, gy, gx, _ = torch_conv(*case)
    assert_close(spec.conv2d_backward_input(gy, w, x.shape, stride, padding, dilation, groups), gx)


@SETTINGS
@given(CONV_CASES)
def test_conv2d_backward_weight_matches_torch_autograd(case):
    x, w, stride, padding, dilation, groups, rng = case
    _, gy, _, gw = torch_conv(*case)
    assert_close(spec.conv2d_backward_weight(x, gy, w.shape, stride, padding, dilation, groups), gw)


# --- max pooling and unpooling ----------------------------------------------------------------------


@SETTINGS
@given(pool_cases())
def test_max_pool2d_forward_matches_torch(case):
    shape, *pool, dtype, rng = case
    check_max_pool(spec.max_pool2d_forward, distinct_values(rng, shape, dtype), *pool)


@SETTINGS
@given(pool_cases(), st.sampled_from([2, 3]))
def test_max_pool2d_ties_match_torch(case, levels):
    shape, *pool, dtype, rng = case
    x = rng.integers(0, levels, shape).astype(dtype)  # few levels: most windows hold tied maxima
    check_max_pool(spec.max_pool2d_forward, x, *pool)


@SETTINGS
@given(pool_cases(), st.floats(0.1, 0.6), st.floats(0.0, 0.6))
def test_max_pool2d_nan_and_minus_inf_match_torch(case, nan_share, minus_inf_share):
    shape, *pool, dtype, rng = case
    x = with_nan_and_minus_inf(distinct_values(rng, shape, dtype), rng, nan_share, minus_inf_share)
    check_max_pool(spec.max_pool2d_forward, x, *pool)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_first_maximum_wins_and_last_nan_wins(dtype):
    x = np.array([[[[1, 3, 3], [3, 0, np.nan], [np.nan, 2, np.nan]]]], dtype=dtype)
    y, indices = spec.max_pool2d_forward(x, (2, 2), (1, 1), (0, 0), (1, 1), (2, 2))
    # Window (0, 0) ties three 3s: the first, at (0, 1), wins. The others hold NaNs: the last one wins.
    np.testing.assert_array_equal(y, [[[[3, np.nan], [np.nan, np.nan]]]])
    np.testing.assert_array_equal(indices, [[[[1, 5], [6, 8]]]])
    assert_same(indices, F.max_pool2d(torch.from_numpy(x), 2, 1, return_indices=True)[1])


UNPOOL_CASES = unpool_cases(max_in=4, max_extra=5)


@SETTINGS
@given(UNPOOL_CASES)
def test_unpool_scatter_overwrite_matches_max_unpool2d(case):
    values, indices, out_hw, _ = case
    expected = torch_max_unpool2d(torch.from_numpy(values), indices, out_hw)
    assert_same(spec.unpool_scatter(values, indices, out_hw), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unpool_scatter_overwrite_keeps_the_last_duplicate(dtype):
    values = np.array([[[[1, 2], [3, 4]]]], dtype=dtype)
    indices = np.array([[[[3, 0], [3, 0]]]])
    out = spec.unpool_scatter(values, indices, (2, 2))
    np.testing.assert_array_equal(out, [[[[4, 0], [0, 3]]]])


@SETTINGS
@given(pool_cases())
def test_unpool_scatter_sum_matches_max_pool2d_backward(case):
    shape, kernel, stride, padding, dilation, ceil_mode, out_hw, dtype, rng = case
    assume(every_window_meets_input(shape[2:], kernel, stride, padding, dilation, out_hw))
    gy, indices, gx = torch_max_pool2d_gradient(shape, kernel, stride, padding, dilation, ceil_mode, dtype, rng)
    assert_close(spec.unpool_scatter(gy, indices, shape[2:], pool=(kernel, stride, padding, dilation)), gx)


@SETTINGS
@given(UNPOOL_CASES)
def test_unpool_gather_matches_max_unpool2d_backward(case):
    values, indices, out_hw, rng = case
    _, g, g_values = torch_max_unpool2d_gradient(values, indices, out_hw, rng)
    assert_same(spec.unpool_gather(g, indices), g_values)


@pytest.mark.parametrize("bad_index", [16, 18, -1])
def test_unpool_out_of_range_index_raises_like_torch(bad_index):
    values = np.ones((1, 2, 2, 2))
    indices = np.zeros((1, 2, 2, 2), dtype=np.int64)
    indices[0, 1, 1, 0] = bad_index
    with pytest.raises(RuntimeError) as torch_error:
        F.max_unpool2d(torch.from_numpy(values), torch.from_numpy(indices), 2, output_size=(4, 4))
    message = str(torch_error.value).splitlines()[0]
    assert message == f"Found an invalid max index: {bad_index} (output volumes are of size 4x4)"
    with pytest.raises(IndexError) as error:
        spec.unpool_scatter(values, indices, (4, 4))
    assert str(error.value) == message
    with pytest.raises(IndexError) as error:
        spec.unpool_gather(np.ones((1, 2, 4, 4)), indices)
    assert str(error.value) == message


# --- nearest upsampling -----------------------------------------------------------------------------


def nearest_src(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """Source index of each destination: floor(dst * in / out) ('nearest') or floor((dst + 0.5) * in / out)
    ('nearest-exact'), clipped to in - 1, in exact integer arithmetic."""
    dst = np.arange(out_size)
    src = dst * in_size // out_size if mode == "nearest" else (2 * dst + 1) * in_size // (2 * out_size)
    return np.minimum(src, in_size - 1)


@st.composite
def upsample_cases(draw):
    """Integer scale factors given as sizes (up: out = in * f, down: in = out * f), where PyTorch's
    floating-point index formula is exact."""
    in_hw, out_hw = [], []
    for _ in range(2):
        size, factor = draw(st.integers(1, 6)), draw(st.integers(1, 4))
        small_big = (size, size * factor)
        in_size, out_size = small_big if draw(st.booleans()) else small_big[::-1]
        in_hw.append(in_size)
        out_hw.append(out_size)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *in_hw)
    mode = draw(st.sampled_from(["nearest", "nearest-exact"]))
    return shape, tuple(out_hw), mode, draw(dtypes), draw(seeds)


@SETTINGS
@given(upsample_cases())
def test_upsample_nearest_forward_and_backward_match_torch(case):
    shape, out_hw, mode, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    src_h, src_w = (nearest_src(size, out, mode) for size, out in zip(shape[2:], out_hw, strict=True))
    x_t = torch.from_numpy(x).requires_grad_()
    y_t = F.interpolate(x_t, size=out_hw, mode=mode)
    assert_same(spec.upsample_nearest_forward(x, src_h, src_w), y_t)

    gy = rng.standard_normal(y_t.shape).astype(dtype)
    y_t.backward(torch.from_numpy(gy))
    assert_close(spec.upsample_nearest_backward(gy, src_h, src_w, shape[2:]), x_t.grad)


@SETTINGS
@given(index_maps(max_length=8), index_maps(max_length=8), seeds)
def test_upsample_nearest_backward_is_the_adjoint_of_forward(rows, cols, seed):
    (in_h, src_h), (in_w, src_w) = rows, cols
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, in_h, in_w))
    gy = rng.standard_normal((2, 3, src_h.size, src_w.size))
    y = spec.upsample_nearest_forward(x, src_h, src_w)
    gx = spec.upsample_nearest_backward(gy, src_h, src_w, x.shape[2:])
    assert y.shape == gy.shape and gx.shape == x.shape
    # <A x, gy> == <x, A^T gy>, and pixels nobody copied get no gradient.
    np.testing.assert_allclose(np.vdot(y, gy), np.vdot(x, gx), rtol=1e-10)
    assert not gx[:, :, np.setdiff1d(np.arange(in_h), src_h)].any()
    assert not gx[:, :, :, np.setdiff1d(np.arange(in_w), src_w)].any()


# --- softmax cross-entropy --------------------------------------------------------------------------


CROSS_ENTROPY_CASES = cross_entropy_cases(scales=(3, 100))  # 100: stability


@SETTINGS
@given(CROSS_ENTROPY_CASES)
def test_softmax_cross_entropy_forward_matches_torch(case):
    loss_t, stats_t, _, _ = torch_cross_entropy_gradient(*case)
    loss, stats = spec.softmax_cross_entropy_forward(*kernel_args(*case[:-1]))
    assert_close(loss, loss_t)
    assert_close(stats, stats_t)


@SETTINGS
@given(CROSS_ENTROPY_CASES)
def test_softmax_cross_entropy_backward_matches_torch_autograd(case):
    _, _, g, gx = torch_cross_entropy_gradient(*case)
    args = kernel_args(*case[:-1])
    _, stats = spec.softmax_cross_entropy_forward(*args)
    assert_close(spec.softmax_cross_entropy_backward(*args, stats, g), gx)


@pytest.mark.parametrize(("bad_target", "ignore_index"), [(3, -100), (-100, 1), (-1, -100), (7, 2)])
def test_softmax_cross_entropy_out_of_range_target_raises_like_torch(bad_target, ignore_index):
    check_out_of_range_target(spec.softmax_cross_entropy_forward, spec.softmax_cross_entropy_backward, bad_target,
                              ignore_index)


# --- empty batch ------------------------------------------------------------------------------------


def test_empty_batch_gives_empty_results_and_a_zero_weight_gradient():
    x, w = np.zeros((0, 2, 5, 5)), np.ones((4, 2, 3, 3))
    x_t = torch.from_numpy(x)
    y = spec.conv2d_forward(x, w, (5, 5), (1, 1), (1, 1), (1, 1), 1)
    assert_same(y, F.conv2d(x_t, torch.from_numpy(w), padding=1))
    assert spec.conv2d_backward_input(y, w, x.shape, (1, 1), (1, 1), (1, 1), 1).shape == x.shape
    gw = spec.conv2d_backward_weight(x, y, w.shape, (1, 1), (1, 1), (1, 1), 1)
    assert_same(gw, torch.zeros(w.shape, dtype=x_t.dtype))

    pooled, indices = spec.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), (2, 2))
    pooled_t, indices_t = F.max_pool2d(x_t, 2, return_indices=True)
    assert_same(pooled, pooled_t)
    assert_same(indices, indices_t)
    assert spec.unpool_scatter(pooled, indices, (5, 5)).shape == x.shape
    assert spec.unpool_scatter(pooled, indices, (5, 5), ((2, 2), (2, 2), (0, 0), (1, 1))).shape == x.shape
    assert spec.unpool_gather(x, indices).shape == indices.shape

    src = nearest_src(5, 10, "nearest")
    assert_same(spec.upsample_nearest_forward(x, src, src), F.interpolate(x_t, size=(10, 10)))
    assert spec.upsample_nearest_backward(np.zeros((0, 2, 10, 10)), src, src, (5, 5)).shape == x.shape

    args = kernel_args(x, np.zeros((0, 5, 5), dtype=np.int64), None, -100, 0.1)
    loss, stats = spec.softmax_cross_entropy_forward(*args)
    assert loss.shape == (0, 25) and stats.shape == (2, 0, 25)
    assert spec.softmax_cross_entropy_backward(*args, stats, loss).shape == (0, 2, 25)


# --- batch norm -------------------------------------------------------------------------------------


@SETTINGS
@given(batch_norm_cases())
def test_batch_norm_forward_and_backward_match_torch_and_spec(case):
    check_batch_norm(spec.batch_norm_forward, spec.batch_norm_backward, *case)


def test_batch_norm_relu_masks_where_the_given_output_is_not_positive():
    check_relu_mask(spec.batch_norm_forward, spec.batch_norm_backward)

