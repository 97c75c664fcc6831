"""The CUDA kernel table (kernels/cuda) against PyTorch and the NumPy specification: on cudasim everywhere,
on cuda where CuPy sees a GPU. Also: every .cu compiles to PTX with nvcc, and the cuda device imports
without CuPy.

The memory-bound kernels (pool.cu, upsample.cu, loss.cu) are tested here; conv.cu has its own tests.
Max ops get tie-free inputs (a permutation of distinct values) unless a test is about ties, NaN or -inf.
"""

from __future__ import annotations

import importlib
import shutil

import minicv.kernels.numpy as spec
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from minicv.kernels import KERNEL_TABLE
from minicv.kernels.cuda import check_ptx
from minicv.kernels.cuda.launch import NO_CUDA_MESSAGE

SETTINGS = settings(max_examples=25, deadline=None)
TOLERANCE = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}
seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from([np.float32, np.float64])


@pytest.fixture(scope="module", params=["cudasim", pytest.param("cuda", marks=pytest.mark.gpu)])
def table(request: pytest.FixtureRequest):
    """The device's kernel table module; results come back as NumPy arrays through ``table.run``."""
    module = importlib.import_module(f"minicv.kernels.{request.param}")
    xp = module.backend.xp

    def run(name: str, *args):
        to_device = [xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        result = getattr(module, name)(*to_device)
        to_host = np.asarray if xp is np else xp.asnumpy
        return tuple(map(to_host, result)) if isinstance(result, tuple) else to_host(result)

    return run


def pairs(low: int, high: int) -> st.SearchStrategy:
    return st.tuples(st.integers(low, high), st.integers(low, high))


def distinct_values(rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
    """Tie-free input: a random permutation of distinct values (exact in float32), centred on zero."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size / 2) / 4).reshape(shape).astype(dtype)


def assert_same(actual: np.ndarray, *expected) -> None:
    """Exactly equal (NaN equals NaN) to each expected array (torch tensors or numpy): moved values."""
    for e in expected:
        e = e.detach().numpy() if isinstance(e, torch.Tensor) else e
        assert actual.dtype == e.dtype and actual.shape == e.shape
        np.testing.assert_array_equal(actual, e)


def assert_close(actual: np.ndarray, *expected) -> None:
    """Equal within the project's tolerance of the dtype to each expected array: computed values."""
    for e in expected:
        e = e.detach().numpy() if isinstance(e, torch.Tensor) else e
        assert actual.dtype == e.dtype and actual.shape == e.shape
        np.testing.assert_allclose(actual, e, **TOLERANCE[actual.dtype])


def test_both_devices_export_the_kernel_table() -> None:
    for device in ("cudasim", "cuda"):
        module = importlib.import_module(f"minicv.kernels.{device}")
        assert all(callable(getattr(module, name)) for name in KERNEL_TABLE)


def test_cuda_device_without_cupy_raises_a_clear_error() -> None:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("CuPy sees a GPU here: the cuda device works")
    except Exception:  # no CuPy, or CuPy without a driver
        pass
    import minicv.kernels.cuda as cuda

    with pytest.raises(RuntimeError, match=r"needs CuPy and an NVIDIA GPU: pip install minicv\[cuda\]") as error:
        cuda.max_pool2d_forward(np.zeros((1, 1, 2, 2)), (2, 2), (2, 2), (0, 0), (1, 1), (1, 1))
    assert str(error.value) == NO_CUDA_MESSAGE


@pytest.mark.parametrize("source_file", check_ptx.cuda_sources())
def test_every_cu_file_compiles_to_ptx(source_file: str) -> None:
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH")
    assert ".entry" in check_ptx.compile_ptx(source_file)


# --- max pooling and unpooling ----------------------------------------------------------------------


def pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape: a ceil_mode window must start inside the input or left padding."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    return out - 1 if ceil_mode and (out - 1) * s >= size + p else out


@st.composite
def pool_cases(draw):
    """(shape, kernel, stride, padding, dilation, ceil_mode, out_hw, dtype, rng), overlapping windows
    (kernel > stride) included."""
    kernel, stride, dilation = draw(pairs(1, 4)), draw(pairs(1, 3)), draw(pairs(1, 2))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    hw = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 5))
               for k, p, d in zip(kernel, padding, dilation, strict=True))
    ceil_mode = draw(st.booleans())
    out_hw = tuple(pool_out_size(*a, ceil_mode) for a in zip(hw, kernel, stride, padding, dilation, strict=True))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *hw)
    return shape, kernel, stride, padding, dilation, ceil_mode, out_hw, draw(dtypes), np.random.default_rng(draw(seeds))


def check_max_pool(table, x, kernel, stride, padding, dilation, ceil_mode, out_hw) -> None:
    y, indices = table("max_pool2d_forward", x, kernel, stride, padding, dilation, out_hw)
    y_t, indices_t = F.max_pool2d(torch.from_numpy(x), kernel, stride, padding, dilation, ceil_mode,
                                  return_indices=True)
    y_spec, indices_spec = spec.max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw)
    assert_same(y, y_t, y_spec)
    assert_same(indices, indices_t, indices_spec)


@SETTINGS
@given(pool_cases())
def test_max_pool2d_forward(table, case) -> None:
    shape, *pool, dtype, rng = case
    check_max_pool(table, distinct_values(rng, shape, dtype), *pool)


@SETTINGS
@given(pool_cases(), st.floats(0.1, 0.6), st.floats(0.0, 0.6))
def test_max_pool2d_forward_ties_nan_and_minus_inf(table, case, nan_share, minus_inf_share) -> None:
    shape, *pool, dtype, rng = case
    x = rng.integers(0, 3, shape).astype(dtype)  # few levels: ties
    special = rng.random(shape)
    x[special < minus_inf_share] = -np.inf
    x[special > 1 - nan_share] = np.nan
    check_max_pool(table, x, *pool)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_first_maximum_wins_and_last_nan_wins(table, dtype) -> None:
    x = np.array([[[[1, 3, 3], [3, 0, np.nan], [np.nan, 2, np.nan]]]], dtype=dtype)
    y, indices = table("max_pool2d_forward", x, (2, 2), (1, 1), (0, 0), (1, 1), (2, 2))
    np.testing.assert_array_equal(y, [[[[3, np.nan], [np.nan, np.nan]]]])
    np.testing.assert_array_equal(indices, [[[[1, 5], [6, 8]]]])


def window_misses_input(in_hw, kernel, stride, padding, dilation, out_hw) -> bool:
    """True when dilation lets a window hold padding only (k=2, d=2, p=1 over H=1): its index then lies
    outside the plane (as in PyTorch), so it cannot feed the max-pool backward."""
    for size, k, s, p, d, out in zip(in_hw, kernel, stride, padding, dilation, out_hw, strict=True):
        taps = np.arange(out)[:, None] * s - p + np.arange(k) * d
        if not ((taps >= 0) & (taps < size)).any(axis=1).all():
            return True
    return False


@SETTINGS
@given(pool_cases())
def test_max_pool2d_backward_gathers_like_torch_autograd(table, case) -> None:
    shape, kernel, stride, padding, dilation, ceil_mode, out_hw, dtype, rng = case
    assume(not window_misses_input(shape[2:], kernel, stride, padding, dilation, out_hw))
    x = torch.from_numpy(distinct_values(rng, shape, dtype)).requires_grad_()
    y, indices = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(torch.from_numpy(gy))
    pool = (kernel, stride, padding, dilation)
    gx = table("unpool_scatter", gy, indices.numpy(), shape[2:], pool)
    assert_close(gx, x.grad, spec.unpool_scatter(gy, indices.numpy(), shape[2:], pool))


@st.composite
def unpool_cases(draw):
    """(values, indices, out_hw, rng): indices into out_hw planes, each at most once, so that PyTorch's
    max_unpool2d (nondeterministic for duplicates) has one answer."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    in_hw = draw(pairs(1, 4))
    out_hw = tuple(size + draw(st.integers(0, 3)) for size in in_hw)
    rng = np.random.default_rng(draw(seeds))
    planes = [rng.permutation(out_hw[0] * out_hw[1])[: in_hw[0] * in_hw[1]] for _ in range(n * c)]
    indices = np.array(planes).reshape(n, c, *in_hw)
    values = rng.standard_normal(indices.shape).astype(draw(dtypes))
    return values, indices, out_hw, rng


def torch_max_unpool2d(values: torch.Tensor, indices: np.ndarray, out_hw) -> torch.Tensor:
    # Stride 1 and kernel out - in + 1 make max_unpool2d's default size exactly out_hw.
    kernel = tuple(out - size + 1 for out, size in zip(out_hw, indices.shape[2:], strict=True))
    return F.max_unpool2d(values, torch.from_numpy(indices), kernel, stride=1, output_size=out_hw)


@SETTINGS
@given(unpool_cases())
def test_unpool_scatter_is_max_unpool2d(table, case) -> None:
    values, indices, out_hw, _ = case
    out = table("unpool_scatter", values, indices, out_hw)
    assert_same(out, torch_max_unpool2d(torch.from_numpy(values), indices, out_hw),
                spec.unpool_scatter(values, indices, out_hw))


@SETTINGS
@given(unpool_cases())
def test_unpool_gather_is_max_unpool2d_backward(table, case) -> None:
    values, indices, out_hw, rng = case
    values_t = torch.from_numpy(values).requires_grad_()
    out = torch_max_unpool2d(values_t, indices, out_hw)
    g = rng.standard_normal(out.shape).astype(values.dtype)
    out.backward(torch.from_numpy(g))
    assert_same(table("unpool_gather", g, indices), values_t.grad, spec.unpool_gather(g, indices))


@pytest.mark.parametrize("bad_index", [16, 18, -1])
def test_out_of_range_pool_indices_raise_like_torch(table, bad_index) -> None:
    values = np.ones((1, 2, 2, 2))
    indices = np.zeros((1, 2, 2, 2), dtype=np.int64)
    indices[0, 1, 0, 1] = bad_index
    indices[0, 1, 1, 0] = 99  # a later bad index: the message names the first one, in row-major order
    message = f"Found an invalid max index: {bad_index} (output volumes are of size 4x4)"
    with pytest.raises(IndexError) as error:
        table("unpool_scatter", values, indices, (4, 4))
    assert str(error.value) == message
    with pytest.raises(IndexError) as error:
        table("unpool_gather", np.ones((1, 2, 4, 4)), indices)
    assert str(error.value) == message


# --- nearest upsampling -----------------------------------------------------------------------------


@st.composite
def index_maps(draw):
    """(size, src): a non-decreasing map into [0, size) that may skip or repeat entries, as the engine's
    'nearest' and 'nearest-exact' maps (up or down) do."""
    size = draw(st.integers(1, 6))
    return size, np.array(sorted(draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=9))))


@SETTINGS
@given(index_maps(), index_maps(), dtypes, seeds)
def test_upsample_nearest_forward_and_backward(table, rows, cols, dtype, seed) -> None:
    (in_h, src_h), (in_w, src_w) = rows, cols
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, in_h, in_w)).astype(dtype)
    x_t = torch.from_numpy(x).requires_grad_()
    y_t = x_t[:, :, torch.from_numpy(src_h)][:, :, :, torch.from_numpy(src_w)]
    y = table("upsample_nearest_forward", x, src_h, src_w)
    assert_same(y, y_t, spec.upsample_nearest_forward(x, src_h, src_w))

    gy = rng.standard_normal(y.shape).astype(dtype)
    y_t.backward(torch.from_numpy(gy))
    gx = table("upsample_nearest_backward", gy, src_h, src_w, (in_h, in_w))
    assert_close(gx, x_t.grad, spec.upsample_nearest_backward(gy, src_h, src_w, (in_h, in_w)))


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_upsample_nearest_matches_interpolate(table, mode) -> None:
    rng = np.random.default_rng(3)
    x_t = torch.from_numpy(rng.standard_normal((2, 3, 5, 4))).requires_grad_()
    y_t = F.interpolate(x_t, size=(10, 2), mode=mode)  # up by 2 in h, down by 2 in w: exact index maps
    src_h = np.arange(10) // 2
    src_w = np.arange(2) * 2 + (1 if mode == "nearest-exact" else 0)
    assert_same(table("upsample_nearest_forward", x_t.detach().numpy(), src_h, src_w), y_t)
    gy = rng.standard_normal(y_t.shape)
    y_t.backward(torch.from_numpy(gy))
    assert_close(table("upsample_nearest_backward", gy, src_h, src_w, (5, 4)), x_t.grad)


def test_upsample_source_index_out_of_range_raises(table) -> None:
    with pytest.raises(IndexError, match=r"src_w must lie in \[0, 4\)"):
        table("upsample_nearest_forward", np.zeros((1, 1, 3, 4)), np.array([0, 1]), np.array([0, 4]))


# --- softmax cross-entropy --------------------------------------------------------------------------


@st.composite
def cross_entropy_cases(draw):
    """(x (N, C, H, W), target, weight or None, ignore_index, label_smoothing, rng)."""
    n, c, hw = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(pairs(1, 4))
    ignore_index = draw(st.sampled_from([-100, draw(st.integers(0, c - 1)), c + 2]))
    label_smoothing = draw(st.sampled_from([0.0, draw(st.floats(0.0, 1.0))]))
    rng = np.random.default_rng(draw(seeds))
    x = (3 * rng.standard_normal((n, c, *hw))).astype(draw(dtypes))
    target = rng.integers(0, c, (n, *hw))
    target[rng.random(target.shape) < draw(st.floats(0.0, 1.0))] = ignore_index
    weight = rng.uniform(0.1, 2.0, c).astype(x.dtype) if draw(st.booleans()) else None
    return x, target, weight, ignore_index, label_smoothing, rng


def kernel_args(x, target, weight, ignore_index, label_smoothing) -> tuple:
    """The kernels' (N, C, P) layout; weight None is all ones."""
    n, c = x.shape[:2]
    weight = np.ones(c, dtype=x.dtype) if weight is None else weight
    return x.reshape(n, c, -1), target.reshape(n, -1), weight, ignore_index, label_smoothing


def torch_cross_entropy(x: torch.Tensor, target, weight, ignore_index, label_smoothing) -> torch.Tensor:
    weight = None if weight is None else torch.from_numpy(weight)
    return F.cross_entropy(x, torch.from_numpy(target), weight, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)


@SETTINGS
@given(cross_entropy_cases())
def test_softmax_cross_entropy_forward_and_backward(table, case) -> None:
    *case_args, rng = case
    args = kernel_args(*case_args)
    x_t = torch.from_numpy(case_args[0]).requires_grad_()
    loss_t = torch_cross_entropy(x_t, *case_args[1:])
    loss, lse = table("softmax_cross_entropy_forward", *args)
    loss_spec, lse_spec = spec.softmax_cross_entropy_forward(*args)
    assert_close(loss, loss_t.flatten(1), loss_spec)
    assert_close(lse, torch.logsumexp(x_t, dim=1).flatten(1), lse_spec)

    g = rng.standard_normal(loss_t.shape).astype(case_args[0].dtype)
    (torch.from_numpy(g) * loss_t).sum().backward()
    g = g.reshape(g.shape[0], -1)
    gx = table("softmax_cross_entropy_backward", *args, lse, g)
    assert_close(gx, x_t.grad.flatten(2), spec.softmax_cross_entropy_backward(*args, lse_spec, g))


def test_softmax_cross_entropy_ignored_pixels_get_exactly_zero_gradient(table) -> None:
    x = np.zeros((1, 3, 2))
    target = np.array([[-100, 1]])
    _, lse = table("softmax_cross_entropy_forward", x, target, np.ones(3), -100, 0.0)
    gx = table("softmax_cross_entropy_backward", x, target, np.ones(3), -100, 0.0, lse, np.array([[np.inf, 1.0]]))
    np.testing.assert_array_equal(gx[:, :, 0], 0)  # 'mean' over no valid pixel sends g = inf: still 0


@pytest.mark.parametrize(("bad_target", "ignore_index"), [(3, -100), (-100, 1), (-1, -100), (7, 2)])
def test_out_of_range_target_raises_like_torch(table, bad_target, ignore_index) -> None:
    x = np.zeros((2, 3, 4))
    target = np.array([[0, 1, ignore_index, 2], [1, bad_target, 0, 9]])  # 9: a later bad target
    args = kernel_args(x, target, None, ignore_index, 0.1)
    message = f"Target {bad_target} is out of bounds."
    with pytest.raises(IndexError) as error:
        table("softmax_cross_entropy_forward", *args)
    assert str(error.value) == message
    with pytest.raises(IndexError) as error:
        table("softmax_cross_entropy_backward", *args, np.zeros((2, 4)), np.ones((2, 4)))
    assert str(error.value) == message


# --- the launch code --------------------------------------------------------------------------------


def test_grid_stride_kernels_cover_every_element_with_any_number_of_blocks(table) -> None:
    """cudasim caps the grid (max_blocks), the GPU does not: both must give the same result."""
    import minicv.kernels.cudasim as cudasim

    x = distinct_values(np.random.default_rng(4), (3, 4, 33, 17), np.float64)
    expected = table("max_pool2d_forward", x, (3, 3), (2, 2), (1, 1), (1, 1), (17, 9))
    for max_blocks in (1, 3, 10_000):
        cudasim.backend.max_blocks = max_blocks
        try:
            result = cudasim.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1), (1, 1), (17, 9))
        finally:
            del cudasim.backend.max_blocks  # back to the class default
        assert_same(result[0], expected[0])
        assert_same(result[1], expected[1])
