"""The NumPy specification kernels (minicv.kernels.numpy) against PyTorch, kernel by kernel.

Configurations are drawn by hypothesis; array contents come from a drawn seed. Max ops use tie-free
inputs (a permutation of distinct values) unless a test is about ties, NaN or -inf.
"""

import math

import minicv.kernels.numpy as spec
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from minicv.kernels import KERNEL_TABLE

DTYPES = (np.float32, np.float64)
# float64 also gets a tiny atol: sums that cancel to ~0 have no meaningful relative error.
TOLERANCE = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}
SETTINGS = settings(max_examples=40, deadline=None)

seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(DTYPES)


def pairs(low: int, high: int) -> st.SearchStrategy:
    return st.tuples(st.integers(low, high), st.integers(low, high))


def assert_close(actual: np.ndarray, expected: torch.Tensor) -> None:
    """Equal within the tolerance of the dtype, which both share."""
    expected = expected.detach().numpy()
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **TOLERANCE[actual.dtype])


def assert_same(actual: np.ndarray, expected: torch.Tensor) -> None:
    """Exact equality (NaN equals NaN): for values that are selected or moved, never computed."""
    expected = expected.detach().numpy()
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


def distinct_values(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Tie-free input: a random permutation of distinct values (exact in float32), centred on zero."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size / 2) / 4).reshape(shape).astype(dtype)


def test_exports_exactly_the_kernel_table():
    assert tuple(spec.__all__) == KERNEL_TABLE
    assert all(callable(getattr(spec, name)) for name in KERNEL_TABLE)


# --- convolution ------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    kernel, stride, dilation = draw(pairs(1, 4)), draw(pairs(1, 3)), draw(pairs(1, 3))
    padding = draw(pairs(0, 2))
    # The smallest input holding one window is d*(k-1) + 1 - 2p; any extra rows may be left uncovered.
    hw = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 6))
        for k, p, d in zip(kernel, padding, dilation, strict=True)
    )
    rng = np.random.default_rng(draw(seeds))
    dtype = draw(dtypes)
    x = rng.standard_normal((draw(st.integers(1, 2)), groups * draw(st.integers(1, 3)), *hw)).astype(dtype)
    w = rng.standard_normal((groups * draw(st.integers(1, 3)), x.shape[1] // groups, *kernel)).astype(dtype)
    return x, w, stride, padding, dilation, groups, rng


def torch_conv(x, w, stride, padding, dilation, groups, rng):
    """(y, gy, gx, gw) from PyTorch: conv2d forward, and autograd's gradients for a random gy."""
    x_t, w_t = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = F.conv2d(x_t, w_t, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    y.backward(torch.from_numpy(gy))
    return y, gy, x_t.grad, w_t.grad


@SETTINGS
@given(conv_cases())
def test_conv2d_forward_matches_torch(case):
    x, w, stride, padding, dilation, groups, rng = case
    y, *_ = torch_conv(*case)
    assert_close(spec.conv2d_forward(x, w, stride, padding, dilation, groups), y)


@SETTINGS
@given(conv_cases())
def test_conv2d_backward_input_matches_torch_autograd(case):
    x, w, stride, padding, dilation, groups, rng = case
    _, gy, gx, _ = torch_conv(*case)
    assert_close(spec.conv2d_backward_input(gy, w, x.shape, stride, padding, dilation, groups), gx)


@SETTINGS
@given(conv_cases())
def test_conv2d_backward_weight_matches_torch_autograd(case):
    x, w, stride, padding, dilation, groups, rng = case
    _, gy, _, gw = torch_conv(*case)
    assert_close(spec.conv2d_backward_weight(x, gy, w.shape, stride, padding, dilation, groups), gw)


# --- max pooling and unpooling ----------------------------------------------------------------------


def pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape: a ceil_mode window must start inside the input or left padding."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    return out - 1 if ceil_mode and (out - 1) * s >= size + p else out


def every_window_meets_input(in_hw, kernel, stride, padding, dilation, out_hw) -> bool:
    """False when dilation lets some window hold padding only (e.g. k=2, d=2, p=1 over H=1): PyTorch then
    reports an index outside the plane, and its max_pool2d backward writes there (out of bounds)."""
    for size, k, s, p, d, out in zip(in_hw, kernel, stride, padding, dilation, out_hw, strict=True):
        taps = np.arange(out)[:, None] * s - p + np.arange(k) * d
        if not ((taps >= 0) & (taps < size)).any(axis=1).all():
            return False
    return True


@st.composite
def pool_cases(draw):
    kernel, stride, dilation = draw(pairs(1, 4)), draw(pairs(1, 3)), draw(pairs(1, 3))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)  # PyTorch allows pad <= k // 2
    hw = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 6))
        for k, p, d in zip(kernel, padding, dilation, strict=True)
    )
    ceil_mode = draw(st.booleans())
    out_hw = tuple(
        pool_out_size(*args, ceil_mode) for args in zip(hw, kernel, stride, padding, dilation, strict=True)
    )
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *hw)
    rng = np.random.default_rng(draw(seeds))
    return shape, kernel, stride, padding, dilation, ceil_mode, out_hw, draw(dtypes), rng


def pool_both(x, kernel, stride, padding, dilation, ceil_mode, out_hw):
    """(spec (y, indices), torch (y, indices)) for the same max pool."""
    x_t = torch.from_numpy(x)
    expected = F.max_pool2d(x_t, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    return spec.max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw), expected


@SETTINGS
@given(pool_cases())
def test_max_pool2d_forward_matches_torch(case):
    shape, *pool, dtype, rng = case
    (y, indices), (y_t, indices_t) = pool_both(distinct_values(rng, shape, dtype), *pool)
    assert_same(y, y_t)
    assert_same(indices, indices_t)


@SETTINGS
@given(pool_cases(), st.sampled_from([2, 3]))
def test_max_pool2d_ties_match_torch(case, levels):
    shape, *pool, dtype, rng = case
    x = rng.integers(0, levels, shape).astype(dtype)  # few levels: most windows hold tied maxima
    (y, indices), (y_t, indices_t) = pool_both(x, *pool)
    assert_same(y, y_t)
    assert_same(indices, indices_t)


@SETTINGS
@given(pool_cases(), st.floats(0.1, 0.6), st.floats(0.0, 0.6))
def test_max_pool2d_nan_and_minus_inf_match_torch(case, nan_share, minus_inf_share):
    shape, *pool, dtype, rng = case
    x = distinct_values(rng, shape, dtype)
    special = rng.random(shape)
    x[special < minus_inf_share] = -np.inf  # windows of only -inf (and padding) report their first input tap
    x[special > 1 - nan_share] = np.nan  # windows with several NaNs report the last one
    (y, indices), (y_t, indices_t) = pool_both(x, *pool)
    assert_same(y, y_t)
    assert_same(indices, indices_t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_first_maximum_wins_and_last_nan_wins(dtype):
    x = np.array([[[[1, 3, 3], [3, 0, np.nan], [np.nan, 2, np.nan]]]], dtype=dtype)
    y, indices = spec.max_pool2d_forward(x, (2, 2), (1, 1), (0, 0), (1, 1), (2, 2))
    # Window (0, 0) ties three 3s: the first, at (0, 1), wins. The others hold NaNs: the last one wins.
    np.testing.assert_array_equal(y, [[[[3, np.nan], [np.nan, np.nan]]]])
    np.testing.assert_array_equal(indices, [[[[1, 5], [6, 8]]]])
    assert_same(indices, F.max_pool2d(torch.from_numpy(x), 2, 1, return_indices=True)[1])


@st.composite
def unpool_cases(draw):
    """(values, indices, out_hw): random indices into out_hw planes, duplicates included.

    A duplicate index always carries the same value (as from overlapping pooling windows), since
    PyTorch's max_unpool2d is nondeterministic for duplicates with different values.
    """
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    in_hw, out_hw = draw(pairs(1, 4)), draw(pairs(1, 6))
    rng = np.random.default_rng(draw(seeds))
    dtype = draw(dtypes)
    indices = rng.integers(0, out_hw[0] * out_hw[1], (n, c, *in_hw))
    value_at = rng.standard_normal((n, c, out_hw[0] * out_hw[1])).astype(dtype)
    values = np.take_along_axis(value_at, indices.reshape(n, c, -1), axis=2).reshape(indices.shape)
    return values, indices, out_hw, rng


def torch_max_unpool2d(values: torch.Tensor, indices: np.ndarray, out_hw) -> torch.Tensor:
    # max_unpool2d's default size (in - 1) * stride + kernel - 2 * padding must be near output_size:
    # stride 1 and kernel out - in + 1 make it exactly out_hw.
    kernel = tuple(max(1, out - size + 1) for out, size in zip(out_hw, indices.shape[2:], strict=True))
    return F.max_unpool2d(values, torch.from_numpy(indices), kernel, stride=1, output_size=out_hw)


@SETTINGS
@given(unpool_cases())
def test_unpool_scatter_overwrite_matches_max_unpool2d(case):
    values, indices, out_hw, _ = case
    out_hw = tuple(max(out, size) for out, size in zip(out_hw, indices.shape[2:], strict=True))
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
    x = torch.from_numpy(distinct_values(rng, shape, dtype)).requires_grad_()
    y, indices = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(torch.from_numpy(gy))
    gx = spec.unpool_scatter(gy, indices.numpy(), shape[2:], pool=(kernel, stride, padding, dilation))
    assert_close(gx, x.grad)


@SETTINGS
@given(unpool_cases())
def test_unpool_gather_matches_max_unpool2d_backward(case):
    values, indices, out_hw, rng = case
    out_hw = tuple(max(out, size) for out, size in zip(out_hw, indices.shape[2:], strict=True))
    values_t = torch.from_numpy(values).requires_grad_()
    out = torch_max_unpool2d(values_t, indices, out_hw)
    g = rng.standard_normal(out.shape).astype(values.dtype)
    out.backward(torch.from_numpy(g))
    assert_same(spec.unpool_gather(g, indices), values_t.grad)


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


@st.composite
def sorted_indices(draw):
    """(size, src): a non-decreasing index map into [0, size), which may skip or repeat entries."""
    size = draw(st.integers(1, 6))
    return size, np.array(sorted(draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=8))))


@SETTINGS
@given(sorted_indices(), sorted_indices(), seeds)
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


@st.composite
def cross_entropy_cases(draw):
    n, c, hw = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(pairs(1, 4))
    ignore_index = draw(st.sampled_from([-100, draw(st.integers(0, c - 1)), c + 2]))
    label_smoothing = draw(st.sampled_from([0.0, draw(st.floats(0.0, 1.0))]))
    dtype = draw(dtypes)
    rng = np.random.default_rng(draw(seeds))
    x = (draw(st.sampled_from([3, 100])) * rng.standard_normal((n, c, *hw))).astype(dtype)  # 100: stability
    target = rng.integers(0, c, (n, *hw))
    target[rng.random(target.shape) < draw(st.floats(0.0, 1.0))] = ignore_index
    weight = rng.uniform(0.1, 2.0, c).astype(dtype) if draw(st.booleans()) else None
    return x, target, weight, ignore_index, label_smoothing, rng


def spec_args(x, target, weight, ignore_index, label_smoothing):
    """The kernels' (N, C, P) layout; weight None is all ones."""
    n, c, *hw = x.shape
    weight = np.ones(c, dtype=x.dtype) if weight is None else weight
    pixels = math.prod(hw)
    return x.reshape(n, c, pixels), target.reshape(n, pixels), weight, ignore_index, label_smoothing


def torch_cross_entropy(x, target, weight, ignore_index, label_smoothing):
    weight = None if weight is None else torch.from_numpy(weight)
    return F.cross_entropy(x, torch.from_numpy(target), weight, ignore_index=ignore_index,
                           reduction="none", label_smoothing=label_smoothing)


@SETTINGS
@given(cross_entropy_cases())
def test_softmax_cross_entropy_forward_matches_torch(case):
    *args, _ = case
    x = torch.from_numpy(args[0])
    loss, lse = spec.softmax_cross_entropy_forward(*spec_args(*args))
    assert_close(loss, torch_cross_entropy(x, *args[1:]).flatten(1))
    assert_close(lse, torch.logsumexp(x, dim=1).flatten(1))


@SETTINGS
@given(cross_entropy_cases())
def test_softmax_cross_entropy_backward_matches_torch_autograd(case):
    *args, rng = case
    x = torch.from_numpy(args[0]).requires_grad_()
    loss = torch_cross_entropy(x, *args[1:])
    g = rng.standard_normal(loss.shape).astype(args[0].dtype)
    (torch.from_numpy(g) * loss).sum().backward()

    kernel_args = spec_args(*args)
    _, lse = spec.softmax_cross_entropy_forward(*kernel_args)
    gx = spec.softmax_cross_entropy_backward(*kernel_args, lse, g.reshape(g.shape[0], -1))
    assert_close(gx, x.grad.flatten(2))


@pytest.mark.parametrize(("bad_target", "ignore_index"), [(3, -100), (-100, 1), (-1, -100), (7, 2)])
def test_softmax_cross_entropy_out_of_range_target_raises_like_torch(bad_target, ignore_index):
    x = np.zeros((2, 3, 4))
    target = np.array([[0, 1, ignore_index, 2], [1, bad_target, 0, ignore_index]])
    with pytest.raises(IndexError) as torch_error:
        torch_cross_entropy(torch.from_numpy(x), target, None, ignore_index, 0.0)
    message = str(torch_error.value).splitlines()[0]
    assert message == f"Target {bad_target} is out of bounds."
    args = spec_args(x, target, None, ignore_index, 0.1)
    with pytest.raises(IndexError) as error:
        spec.softmax_cross_entropy_forward(*args)
    assert str(error.value) == message
    with pytest.raises(IndexError) as error:
        spec.softmax_cross_entropy_backward(*args, np.zeros((2, 4)), np.ones((2, 4)))
    assert str(error.value) == message


# --- empty batch ------------------------------------------------------------------------------------


def test_empty_batch_gives_empty_results_and_a_zero_weight_gradient():
    x, w = np.zeros((0, 2, 5, 5)), np.ones((4, 2, 3, 3))
    x_t = torch.from_numpy(x)
    y = spec.conv2d_forward(x, w, (1, 1), (1, 1), (1, 1), 1)
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

    args = spec_args(x, np.zeros((0, 5, 5), dtype=np.int64), None, -100, 0.1)
    loss, lse = spec.softmax_cross_entropy_forward(*args)
    assert loss.shape == lse.shape == (0, 25)
    assert spec.softmax_cross_entropy_backward(*args, lse, loss).shape == (0, 2, 25)
