"""What the kernel tests share: hypothesis case builders, tie-free inputs, PyTorch references and asserts.

Imported by the tests of this folder as ``from cases import ...`` (pytest puts a test file's folder on
sys.path: the tests are not a package). Each builder takes the size limits its tests want; the defaults
are the small ones (cudasim runs CUDA threads as fibers on the CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import minicv.kernels.numpy as spec
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume
from hypothesis import strategies as st

from tests.reference import assert_close as assert_near
from tests.reference import float64_reference

DTYPES = (np.float32, np.float64)
# float64 also gets a tiny atol: sums that cancel to ~0 have no meaningful relative error.
TOLERANCE = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}

seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(DTYPES)


def pairs(low: int, high: int) -> st.SearchStrategy:
    return st.tuples(st.integers(low, high), st.integers(low, high))


def split_schedule(device: str) -> tuple[str, str]:
    """("cudasim", "reverse") for the test device "cudasim-reverse", (device, "forward") for any other.

    On "cudasim-reverse" the blocks, and the threads of a block between barriers, run last to first, so a
    kernel whose result depends on that order (a race on a GPU) fails its test there."""
    name, _, schedule = device.partition("-")
    return name, schedule or "forward"


class ShapeOnly:
    """An array's shape and dtype without its memory: for launchers that must refuse a size before they
    allocate or launch anything (sizes near 2**31 elements, which no test machine holds)."""

    def __init__(self, shape: tuple[int, ...], dtype) -> None:
        self.shape, self.dtype, self.size = tuple(shape), np.dtype(dtype), math.prod(shape)


def shape_only_backend():
    """A CUDA backend stand-in whose arrays are ShapeOnly and whose kernels must never launch."""

    def kernel(source_file: str, name_expression: str):
        raise AssertionError(f"{name_expression} was launched")

    xp = SimpleNamespace(ascontiguousarray=lambda a: a, empty=ShapeOnly, zeros=ShapeOnly)
    return SimpleNamespace(xp=xp, kernel=kernel, max_blocks=2**31 - 1)


def to_host(a) -> np.ndarray:
    """A NumPy array from a NumPy array, a PyTorch tensor or a CuPy array."""
    if isinstance(a, torch.Tensor):
        return a.detach().numpy()
    return a if isinstance(a, np.ndarray) else a.get()


def assert_close(actual, *expected) -> None:
    """Equal to each expected array (PyTorch's or the spec's) within the tolerance of the dtype, which all
    share: for computed values."""
    actual = to_host(actual)
    for e in map(to_host, expected):
        assert actual.dtype == e.dtype and actual.shape == e.shape
        np.testing.assert_allclose(actual, e, **TOLERANCE[actual.dtype])


def assert_same(actual, *expected) -> None:
    """Exactly equal (NaN equals NaN) to each expected array: for values that are selected or moved."""
    actual = to_host(actual)
    for e in map(to_host, expected):
        assert actual.dtype == e.dtype and actual.shape == e.shape
        np.testing.assert_array_equal(actual, e)


def distinct_values(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Tie-free input: a random permutation of distinct values (exact in float32), centred on zero."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size / 2) / 4).reshape(shape).astype(dtype)


def with_nan_and_minus_inf(x: np.ndarray, rng: np.random.Generator, nan_share: float,
                           minus_inf_share: float) -> np.ndarray:
    """x with about these shares of its elements set to -inf and NaN (in place)."""
    special = rng.random(x.shape)
    x[special < minus_inf_share] = -np.inf  # windows of only -inf (and padding) report their first input tap
    x[special > 1 - nan_share] = np.nan  # windows with several NaNs report the last one
    return x


def ties_nan_and_minus_inf(rng: np.random.Generator, shape: tuple[int, ...], dtype, nan_share: float,
                           minus_inf_share: float) -> np.ndarray:
    """Few levels (ties everywhere: the first maximum wins), then some -inf and NaN."""
    return with_nan_and_minus_inf(rng.integers(0, 3, shape).astype(dtype), rng, nan_share, minus_inf_share)


def _minimal_hw(draw, kernel, padding, dilation, max_extra: int) -> tuple[int, ...]:
    """The smallest input holding one window, d*(k-1) + 1 - 2p, plus extra rows the stride may leave
    uncovered (the output_padding of conv_transpose2d)."""
    return tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, max_extra))
                 for k, p, d in zip(kernel, padding, dilation, strict=True))


# --- convolution ------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw, max_kernel: int = 3, max_dilation: int = 2, max_padding: int = 2, max_extra: int = 5,
               max_batch: int = 3, max_channels: int = 3, fan_in_scaled: bool = False):
    """(x, w, stride, padding, dilation, groups, rng); ``fan_in_scaled`` divides w by sqrt(fan_in), so
    that outputs stay O(1) with many channels."""
    groups = draw(st.integers(1, 3))
    kernel, stride, dilation = draw(pairs(1, max_kernel)), draw(pairs(1, 3)), draw(pairs(1, max_dilation))
    padding = draw(pairs(0, max_padding))
    hw = _minimal_hw(draw, kernel, padding, dilation, max_extra)
    rng = np.random.default_rng(draw(seeds))
    dtype = draw(dtypes)
    c_in, c_out = groups * draw(st.integers(1, max_channels)), groups * draw(st.integers(1, max_channels))
    x = rng.standard_normal((draw(st.integers(1, max_batch)), c_in, *hw)).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups, *kernel))
    if fan_in_scaled:
        w /= np.sqrt(c_in // groups * kernel[0] * kernel[1])
    return x, w.astype(dtype), stride, padding, dilation, groups, rng


def torch_conv(x, w, stride, padding, dilation, groups, rng):
    """(y, gy, gx, gw) from PyTorch: conv2d forward, and autograd's gradients for a random gy."""
    x_t, w_t = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = F.conv2d(x_t, w_t, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    y.backward(torch.from_numpy(gy))
    return y, gy, x_t.grad, w_t.grad


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
def pool_cases(draw, max_dilation: int = 3, max_extra: int = 6, windows_meet_input: bool = False):
    """(shape, kernel, stride, padding, dilation, ceil_mode, out_hw, dtype, rng), overlapping windows
    (kernel > stride) included; ``windows_meet_input`` leaves out windows of padding only."""
    kernel, stride, dilation = draw(pairs(1, 4)), draw(pairs(1, 3)), draw(pairs(1, max_dilation))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)  # PyTorch allows pad <= k // 2
    hw = _minimal_hw(draw, kernel, padding, dilation, max_extra)
    ceil_mode = draw(st.booleans())
    out_hw = tuple(pool_out_size(*a, ceil_mode) for a in zip(hw, kernel, stride, padding, dilation, strict=True))
    if windows_meet_input:
        assume(every_window_meets_input(hw, kernel, stride, padding, dilation, out_hw))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *hw)
    return shape, kernel, stride, padding, dilation, ceil_mode, out_hw, draw(dtypes), np.random.default_rng(draw(seeds))


def check_max_pool(max_pool2d_forward: Callable, x, kernel, stride, padding, dilation, ceil_mode, out_hw) -> None:
    """A device's max_pool2d_forward against PyTorch's max_pool2d and the spec: values and indices exactly."""
    y, indices = max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw)
    y_t, indices_t = F.max_pool2d(torch.from_numpy(x), kernel, stride, padding, dilation, ceil_mode,
                                  return_indices=True)
    y_spec, indices_spec = spec.max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw)
    assert_same(y, y_t, y_spec)
    assert_same(indices, indices_t, indices_spec)


def torch_max_pool2d_gradient(shape, kernel, stride, padding, dilation, ceil_mode, dtype, rng):
    """(gy, indices, gx) from PyTorch: max_pool2d of tie-free input, and autograd's gradient for a random gy."""
    x = torch.from_numpy(distinct_values(rng, shape, dtype)).requires_grad_()
    y, indices = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(torch.from_numpy(gy))
    return gy, indices.numpy(), x.grad


@st.composite
def unpool_cases(draw, max_in: int = 4, max_extra: int = 3):
    """(values, indices, out_hw, rng): random indices into out_hw planes, duplicates included.

    A duplicate index always carries the same value (as from overlapping pooling windows), since
    PyTorch's max_unpool2d is nondeterministic for duplicates with different values.
    """
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    in_hw = draw(pairs(1, max_in))
    out_hw = tuple(size + extra for size, extra in zip(in_hw, draw(pairs(0, max_extra)), strict=True))
    rng = np.random.default_rng(draw(seeds))
    dtype = draw(dtypes)
    indices = rng.integers(0, out_hw[0] * out_hw[1], (n, c, *in_hw))
    value_at = rng.standard_normal((n, c, out_hw[0] * out_hw[1])).astype(dtype)
    values = np.take_along_axis(value_at, indices.reshape(n, c, -1), axis=2).reshape(indices.shape)
    return values, indices, out_hw, rng


def torch_max_unpool2d(values: torch.Tensor, indices: np.ndarray, out_hw) -> torch.Tensor:
    # max_unpool2d's default size (in - 1) * stride + kernel - 2 * padding must be near output_size:
    # stride 1 and kernel out - in + 1 make it exactly out_hw.
    kernel = tuple(out - size + 1 for out, size in zip(out_hw, indices.shape[2:], strict=True))
    return F.max_unpool2d(values, torch.from_numpy(indices), kernel, stride=1, output_size=out_hw)


def torch_max_unpool2d_gradient(values: np.ndarray, indices: np.ndarray, out_hw, rng):
    """(out, g, g_values) from PyTorch: max_unpool2d, and autograd's gradient for a random g."""
    values_t = torch.from_numpy(values).requires_grad_()
    out = torch_max_unpool2d(values_t, indices, out_hw)
    g = rng.standard_normal(out.shape).astype(values.dtype)
    out.backward(torch.from_numpy(g))
    return out, g, values_t.grad


# --- nearest upsampling -----------------------------------------------------------------------------


@st.composite
def index_maps(draw, max_size: int = 6, max_length: int = 9):
    """(size, src): a non-decreasing map into [0, size) that may skip or repeat entries, as the engine's
    'nearest' and 'nearest-exact' maps (up or down) do."""
    size = draw(st.integers(1, max_size))
    return size, np.array(sorted(draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=max_length))))


def torch_gather_upsample(x: np.ndarray, src_h: np.ndarray, src_w: np.ndarray, rng):
    """(y, gy, gx) from PyTorch: x indexed by the maps, and autograd's gradient for a random gy."""
    x_t = torch.from_numpy(x).requires_grad_()
    y = x_t[:, :, torch.from_numpy(src_h)][:, :, :, torch.from_numpy(src_w)]
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    y.backward(torch.from_numpy(gy))
    return y, gy, x_t.grad


# --- softmax cross-entropy --------------------------------------------------------------------------


@st.composite
def cross_entropy_cases(draw, max_classes: int = 5, max_side: int = 4, scales: tuple[float, ...] = (3,)):
    """(x (N, C, H, W), target, weight or None, ignore_index, label_smoothing, rng). The logits are
    standard normal times one of ``scales``: large ones test stability and precision."""
    n, c, hw = draw(st.integers(1, 3)), draw(st.integers(1, max_classes)), draw(pairs(1, max_side))
    ignore_index = draw(st.sampled_from([-100, draw(st.integers(0, c - 1)), c + 2]))
    label_smoothing = draw(st.sampled_from([0.0, draw(st.floats(0.0, 1.0))]))
    dtype = draw(dtypes)
    rng = np.random.default_rng(draw(seeds))
    scale = draw(st.sampled_from(scales))
    x = (scale * rng.standard_normal((n, c, *hw))).astype(dtype)
    target = rng.integers(0, c, (n, *hw))
    target[rng.random(target.shape) < draw(st.floats(0.0, 1.0))] = ignore_index
    weight = rng.uniform(0.1, 2.0, c).astype(dtype) if draw(st.booleans()) else None
    return x, target, weight, ignore_index, label_smoothing, rng


def kernel_args(x, target, weight, ignore_index, label_smoothing) -> tuple:
    """The kernels' (N, C, P) layout; weight None is all ones."""
    n, c, *hw = x.shape
    weight = np.ones(c, dtype=x.dtype) if weight is None else weight
    pixels = math.prod(hw)  # not -1: an empty batch has no size to infer it from
    return x.reshape(n, c, pixels), target.reshape(n, pixels), weight, ignore_index, label_smoothing


def torch_cross_entropy(x: torch.Tensor, target, weight, ignore_index, label_smoothing) -> torch.Tensor:
    weight = None if weight is None else torch.from_numpy(weight)
    return F.cross_entropy(x, torch.from_numpy(target), weight, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)


def torch_cross_entropy_gradient(x: np.ndarray, target, weight, ignore_index, label_smoothing, rng):
    """(loss, stats, g, gx) from PyTorch in the kernels' layout: per-pixel loss (N, P), stats (2, N, P) =
    (max over classes, log sum exp(x - max)), a random upstream gradient g (N, P), and autograd's
    gradient of sum(g * loss) (N, C, P)."""
    x_t = torch.from_numpy(x).requires_grad_()
    loss = torch_cross_entropy(x_t, target, weight, ignore_index, label_smoothing)
    g = rng.standard_normal(loss.shape).astype(x.dtype)
    (torch.from_numpy(g) * loss).sum().backward()
    with torch.no_grad():
        largest = x_t.amax(dim=1)
        stats = torch.stack([largest, torch.logsumexp(x_t - largest[:, None], dim=1)]).flatten(2)
    return loss.flatten(1), stats, g.reshape(g.shape[0], -1), x_t.grad.flatten(2)


def check_out_of_range_target(forward: Callable, backward: Callable, bad_target: int, ignore_index: int) -> None:
    """A device's cross-entropy kernels raise IndexError with PyTorch's message, naming the first bad
    target (not a later one)."""
    x = np.zeros((2, 3, 4))
    target = np.array([[0, 1, ignore_index, 2], [1, bad_target, 0, 9]])  # 9: a later bad target
    with pytest.raises(IndexError) as torch_error:
        torch_cross_entropy(torch.from_numpy(x[:, :, :2]), target[:, :2], None, ignore_index, 0.0)
    message = str(torch_error.value).splitlines()[0]
    assert message == f"Target {bad_target} is out of bounds."
    args = kernel_args(x, target, None, ignore_index, 0.1)
    with pytest.raises(IndexError) as error:
        forward(*args)
    assert str(error.value) == message
    with pytest.raises(IndexError) as error:
        backward(*args, np.zeros((2, 2, 4)), np.ones((2, 4)))
    assert str(error.value) == message


# --- batch norm -------------------------------------------------------------------------------------


@st.composite
def batch_norm_cases(draw, max_batch: int = 3, max_channels: int = 4, max_pixels: int = 40):
    """(x (N, C, P), mean, var, weight, bias, eps, training, relu, gy): the kernels' arguments and an
    upstream gradient. relu (the fused ReLU of batch_norm_relu) is drawn; with it, bias 0 and, in eval,
    some values equal to the mean make outputs of exactly 0, where the ReLU's gradient is 0. N = 1 and
    P = 1 are drawn; training needs M = N * P >= 2. (With M = 2, x_hat = +-1 whatever x, so moving the
    inputs shows no conditioning: a float32 kernel that centred x on the rounded mean alone, as PyTorch's
    does, would fail here when the two values nearly agree; minicv's also subtract what rounding the mean
    dropped.) mean and var are None in training (the kernels must not read them). The values are an
    offset plus a spread: a large offset over a small spread gives nearly equal values, whose variance
    is ill-conditioned. weight and bias are random, or the ones and zeros the engine passes for None."""
    n, c, p = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)), draw(st.integers(1, max_pixels))
    training = draw(st.booleans())
    assume(not training or n * p >= 2)
    dtype, rng = draw(dtypes), np.random.default_rng(draw(seeds))
    offset, spread = draw(st.sampled_from([0.0, 3.0, 300.0])), draw(st.sampled_from([1.0, 0.01]))
    x = (offset + spread * rng.standard_normal((n, c, p))).astype(dtype)
    mean, var = None, None
    if not training:
        mean, var = rng.standard_normal(c).astype(dtype), rng.uniform(0.01, 3.0, c).astype(dtype)
    if draw(st.booleans()):
        weight, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    else:
        weight, bias = np.ones(c, dtype), np.zeros(c, dtype)
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.5]))
    relu = draw(st.booleans())
    if relu and not training and draw(st.booleans()):
        bias[:] = 0
        x[:, :, 0] = mean  # x - mean = 0 exactly: y = 0
    return x, mean, var, weight, bias, eps, training, relu, rng.standard_normal((n, c, p)).astype(dtype)


def torch_batch_norm(x, mean, var, weight, bias, eps, training) -> tuple:
    """(y, mean, var) of PyTorch, the kernels' outputs: the statistics used (the batch's, var biased)."""
    y = F.batch_norm(x, mean, var, weight, bias, training=training, eps=eps)
    if training:
        return y, x.mean(dim=(0, 2)), x.var(dim=(0, 2), unbiased=False)
    return y, mean.clone(), var.clone()


def _gx_rounding(x, gy, weight, mean, var, eps) -> np.ndarray:
    """What rounding the last step of the training gradient, gx = weight * inv_std * (gy - mean(gy) -
    x_hat * mean(gy * x_hat)), leaves in gx: a few ulps of its terms. With M = 2 values per channel and a
    small eps, gx is nearly zero whatever the inputs, so moving them (the reference's allowance) does not
    show this. mean, var: the float64 statistics."""
    x64, gy64 = x.astype(np.float64), gy.astype(np.float64)
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x64 - mean[:, None]) * inv_std[:, None]
    per_channel_terms = np.abs(gy64.mean(axis=(0, 2)))[:, None], np.abs((gy64 * x_hat).mean(axis=(0, 2)))[:, None]
    terms = np.abs(gy64) + per_channel_terms[0] + np.abs(x_hat) * per_channel_terms[1]
    return 8 * np.finfo(x.dtype).eps * np.abs(weight * inv_std)[:, None] * terms


def check_batch_norm(forward: Callable, backward: Callable, x, mean, var, weight, bias, eps, training, relu,
                     gy) -> None:
    """A device's batch-norm kernels (y, mean, var, then gx, gweight, gbias) against PyTorch's float64
    answer and against the spec, within the dtype's tolerance plus what the conditioning of the inputs
    allows (tests/reference.py): a float32 variance of nearly equal values is only so exact.

    With relu: y against torch.relu of PyTorch's batch norm, and the gradients, given the device's y as
    relu_output, against PyTorch's batch-norm gradients for gy masked where that y is not positive (the
    mask is the device's own output's: a reference y may round to the other side of 0)."""
    args = (x, mean, var, weight, bias, eps, training, relu)
    y, mean_used, var_used = map(to_host, forward(*args))
    relu_output = y if relu else None
    masked_gy = np.where(y > 0, gy, 0).astype(gy.dtype) if relu else gy
    grad = [True, False, False, True, True]
    expected = float64_reference(lambda *a: torch_batch_norm(*a, eps, training), [x, mean, var, weight, bias],
                                 x.dtype, grad, masked_gy)
    if relu:  # ReLU moves no value further than the batch norm's own allowance
        expected[0] = (np.maximum(expected[0][0], 0), expected[0][1])
    gradients = map(to_host, backward(gy, x, mean_used, var_used, weight, eps, training, relu_output))
    y_spec, mean_spec, var_spec = spec.batch_norm_forward(*args)
    spec_gradients = spec.batch_norm_backward(gy, x, mean_spec, var_spec, weight, eps, training, relu_output)
    names = ("y", "mean", "var", "gx", "gweight", "gbias")
    expected[3] = (expected[3][0],
                   expected[3][1] + _gx_rounding(x, masked_gy, weight, expected[1][0], expected[2][0], eps))
    for name, actual, (e, allowance), s in zip(names, (y, mean_used, var_used, *gradients), expected,
                                               (y_spec, mean_spec, var_spec, *spec_gradients), strict=True):
        assert actual.dtype == x.dtype, name
        assert_near(actual, e, x.dtype, name, allowance)
        assert_near(actual, s, x.dtype, f"{name} (against the spec)", 2 * allowance)


def check_relu_mask(forward: Callable, backward: Callable) -> None:
    """A device's batch-norm backward with relu_output masks gy exactly where relu_output <= 0 or NaN, in
    gbias, gweight and gx alike (the plain backward of the masked gy, to the bit: the masked values are
    exact zeros either way), whatever the forward would have computed: the mask is the given output's.
    Its forward with relu is max(y, 0), NaN kept."""
    rng = np.random.default_rng(7)
    for dtype in DTYPES:
        x, gy = (rng.standard_normal((2, 3, 10)).astype(dtype) for _ in range(2))
        weight, bias = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
        relu_output = rng.standard_normal(x.shape).astype(dtype)  # not the forward's: the mask is read, not recomputed
        relu_output.flat[:4] = [0.0, -0.0, np.nan, np.finfo(dtype).tiny]  # masked, masked, masked, kept
        masked = np.where(relu_output > 0, gy, 0).astype(dtype)
        for training in (True, False):
            mean, var = (None, None) if training else (rng.standard_normal(3).astype(dtype),
                                                       rng.uniform(0.5, 2.0, 3).astype(dtype))
            y, mean_used, var_used = map(to_host, forward(x, mean, var, weight, bias, 1e-5, training, False))
            y_relu, *stats = map(to_host, forward(x, mean, var, weight, bias, 1e-5, training, True))
            np.testing.assert_array_equal(y_relu, np.maximum(y, 0))
            for a, b in zip(stats, (mean_used, var_used), strict=True):
                np.testing.assert_array_equal(a, b)
            fused = backward(gy, x, mean_used, var_used, weight, 1e-5, training, relu_output)
            plain = backward(masked, x, mean_used, var_used, weight, 1e-5, training, None)
            for name, a, b in zip(("gx", "gweight", "gbias"), fused, plain, strict=True):
                np.testing.assert_array_equal(to_host(a), to_host(b), err_msg=f"{name}, training={training}")
            unmasked = to_host(backward(gy, x, mean_used, var_used, weight, 1e-5, training, None)[2])
            assert not np.array_equal(to_host(fused[2]), unmasked)  # the mask changed gbias
        nan_x = x.copy()
        nan_x[0, 0, 0] = np.nan  # eval: only that output is NaN, and the ReLU keeps it
        y_nan = to_host(forward(nan_x, np.zeros(3, dtype), np.ones(3, dtype), weight, bias, 1e-5, False, True)[0])
        assert np.isnan(y_nan[0, 0, 0]) and not np.isnan(y_nan.flat[1:]).any()
