"""The CUDA kernel table (kernels/cuda) against PyTorch and the NumPy specification: on cudasim everywhere,
on cuda where CuPy sees a GPU. Also: every .cu compiles to PTX with nvcc, and the cuda device imports
without CuPy.

The memory-bound kernels (pool.cu, upsample.cu, loss.cu) are tested here; conv.cu has its own tests.
Max ops get tie-free inputs (a permutation of distinct values) unless a test is about ties, NaN or -inf.
"""

from __future__ import annotations

import functools
import importlib
import shutil

import minicv.kernels.numpy as spec
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cases import (
    DTYPES,
    ShapeOnly,
    assert_close,
    assert_same,
    batch_norm_cases,
    check_batch_norm,
    check_max_pool,
    check_out_of_range_target,
    check_relu_mask,
    cross_entropy_cases,
    distinct_values,
    dtypes,
    every_window_meets_input,
    index_maps,
    kernel_args,
    pairs,
    pool_cases,
    seeds,
    shape_only_backend,
    split_schedule,
    ties_nan_and_minus_inf,
    torch_cross_entropy_gradient,
    torch_gather_upsample,
    torch_max_pool2d_gradient,
    torch_max_unpool2d,
    torch_max_unpool2d_gradient,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from minicv.kernels.cuda import check_ptx
from minicv.kernels.cuda import table as cuda_table
from minicv.kernels.cuda.launch import NO_CUDA_MESSAGE
from minicv.kernels.cudasim import runtime as cudasim_runtime

from minicv.ops import kernel_table

SETTINGS = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module",
                params=["cudasim", "cudasim-reverse", pytest.param("cuda", marks=pytest.mark.gpu)])
def table(request: pytest.FixtureRequest):
    """``table(name, *args)`` calls kernel ``name`` of the device's table; results come back as NumPy arrays."""
    device, schedule = split_schedule(request.param)
    module = importlib.import_module(f"minicv.kernels.{device}")
    xp = module.backend.xp

    def run(name: str, *args):
        to_device = [xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        with cudasim_runtime.schedule(schedule):
            result = getattr(module, name)(*to_device)
        to_host = np.asarray if xp is np else xp.asnumpy
        return tuple(map(to_host, result)) if isinstance(result, tuple) else to_host(result)

    return run


def test_both_devices_export_the_kernel_table() -> None:
    for device in ("cudasim", "cuda"):
        module = importlib.import_module(f"minicv.kernels.{device}")
        assert all(callable(getattr(module, name)) for name in kernel_table())


def test_cuda_device_without_cupy_raises_a_clear_error() -> None:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("CuPy sees a GPU here: the cuda device works")
    except Exception:  # no CuPy, or CuPy without a driver
        pass
    import minicv.kernels.cuda as cuda

    with pytest.raises(RuntimeError, match=r'needs CuPy and an NVIDIA GPU: pip install -e "\.\[cuda\]"') as error:
        cuda.max_pool2d_forward(np.zeros((1, 1, 2, 2)), (2, 2), (2, 2), (0, 0), (1, 1), (1, 1))
    assert str(error.value) == NO_CUDA_MESSAGE


@pytest.mark.parametrize("source_file", check_ptx.cuda_sources())
def test_every_cu_file_compiles_to_ptx(source_file: str) -> None:
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH")
    assert ".entry" in check_ptx.compile_ptx(source_file)


@pytest.mark.parametrize("source_file", check_ptx.cuda_sources())
def test_every_cu_file_compiles_with_nvrtc_as_cupy_does(source_file: str) -> None:
    """NVRTC, not nvcc, builds the kernels on a GPU: no host headers, name expressions for the templates."""
    library = check_ptx.find_nvrtc()
    if library is None:
        pytest.skip("no libnvrtc here (pip install nvidia-cuda-nvrtc-cu12 runs this check without a GPU)")
    ptx = check_ptx.compile_nvrtc(source_file, library)
    assert ptx.count(".entry") == len(check_ptx.kernel_names(check_ptx.read_source(source_file)))


def test_nvrtc_reports_a_compile_error_with_its_log(tmp_path, monkeypatch) -> None:
    library = check_ptx.find_nvrtc()
    if library is None:
        pytest.skip("no libnvrtc here (pip install nvidia-cuda-nvrtc-cu12 runs this check without a GPU)")
    monkeypatch.setattr(check_ptx, "read_source", lambda name: "__global__ void broken(float* x) { x[0] = y; }")
    with pytest.raises(RuntimeError, match=r"(?s)NVRTC could not compile broken\.cu.*identifier \"y\" is undefined"):
        check_ptx.compile_nvrtc("broken.cu", library)


# --- max pooling and unpooling ----------------------------------------------------------------------


POOL_CASES = pool_cases(max_dilation=2, max_extra=5)


@SETTINGS
@given(POOL_CASES)
def test_max_pool2d_forward(table, case) -> None:
    shape, *pool, dtype, rng = case
    check_max_pool(functools.partial(table, "max_pool2d_forward"), distinct_values(rng, shape, dtype), *pool)


@SETTINGS
@given(POOL_CASES, st.floats(0.1, 0.6), st.floats(0.0, 0.6))
def test_max_pool2d_forward_ties_nan_and_minus_inf(table, case, nan_share, minus_inf_share) -> None:
    shape, *pool, dtype, rng = case
    x = ties_nan_and_minus_inf(rng, shape, dtype, nan_share, minus_inf_share)
    check_max_pool(functools.partial(table, "max_pool2d_forward"), x, *pool)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_first_maximum_wins_and_last_nan_wins(table, dtype) -> None:
    x = np.array([[[[1, 3, 3], [3, 0, np.nan], [np.nan, 2, np.nan]]]], dtype=dtype)
    y, indices = table("max_pool2d_forward", x, (2, 2), (1, 1), (0, 0), (1, 1), (2, 2))
    np.testing.assert_array_equal(y, [[[[3, np.nan], [np.nan, np.nan]]]])
    np.testing.assert_array_equal(indices, [[[[1, 5], [6, 8]]]])


@SETTINGS
@given(POOL_CASES)
def test_max_pool2d_backward_gathers_like_torch_autograd(table, case) -> None:
    shape, kernel, stride, padding, dilation, ceil_mode, out_hw, dtype, rng = case
    assume(every_window_meets_input(shape[2:], kernel, stride, padding, dilation, out_hw))
    gy, indices, gx = torch_max_pool2d_gradient(shape, kernel, stride, padding, dilation, ceil_mode, dtype, rng)
    pool = (kernel, stride, padding, dilation)
    assert_close(table("unpool_scatter", gy, indices, shape[2:], pool), gx,
                 spec.unpool_scatter(gy, indices, shape[2:], pool))


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
    _, g, g_values = torch_max_unpool2d_gradient(values, indices, out_hw, rng)
    assert_same(table("unpool_gather", g, indices), g_values, spec.unpool_gather(g, indices))


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


def test_max_pool_backward_refuses_pooled_planes_beyond_int32() -> None:
    """The gather forms oh * W_out + ow as an int: 46340 x 46340 planes pooled 2x2 with stride 1 and padding 1
    have 46341 x 46341 windows (2**31 + 4634 offsets), refused rather than wrapped into reads before gy."""
    values, indices = ShapeOnly((1, 1, 46341, 46341), np.float32), ShapeOnly((1, 1, 46341, 46341), np.int64)
    with pytest.raises(ValueError, match="int32 range"):
        cuda_table.unpool_scatter(shape_only_backend(), values, indices, (46340, 46340),
                                  ((2, 2), (1, 1), (1, 1), (1, 1)))


# --- nearest upsampling -----------------------------------------------------------------------------


@SETTINGS
@given(index_maps(), index_maps(), dtypes, seeds)
def test_upsample_nearest_forward_and_backward(table, rows, cols, dtype, seed) -> None:
    (in_h, src_h), (in_w, src_w) = rows, cols
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, in_h, in_w)).astype(dtype)
    y_t, gy, gx_t = torch_gather_upsample(x, src_h, src_w, rng)
    y = table("upsample_nearest_forward", x, src_h, src_w)
    assert_same(y, y_t, spec.upsample_nearest_forward(x, src_h, src_w))
    gx = table("upsample_nearest_backward", gy, src_h, src_w, (in_h, in_w))
    assert_close(gx, gx_t, spec.upsample_nearest_backward(gy, src_h, src_w, (in_h, in_w)))


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


@SETTINGS
@given(cross_entropy_cases())
def test_softmax_cross_entropy_forward_and_backward(table, case) -> None:
    loss_t, stats_t, g, gx_t = torch_cross_entropy_gradient(*case)
    args = kernel_args(*case[:-1])
    loss, stats = table("softmax_cross_entropy_forward", *args)
    loss_spec, stats_spec = spec.softmax_cross_entropy_forward(*args)
    assert_close(loss, loss_t, loss_spec)
    assert_close(stats, stats_t, stats_spec)
    gx = table("softmax_cross_entropy_backward", *args, stats, g)
    assert_close(gx, gx_t, spec.softmax_cross_entropy_backward(*args, stats_spec, g))


def test_softmax_cross_entropy_ignored_pixels_get_exactly_zero_gradient(table) -> None:
    x = np.zeros((1, 3, 2))
    target = np.array([[-100, 1]])
    _, stats = table("softmax_cross_entropy_forward", x, target, np.ones(3), -100, 0.0)
    gx = table("softmax_cross_entropy_backward", x, target, np.ones(3), -100, 0.0, stats, np.array([[np.inf, 1.0]]))
    np.testing.assert_array_equal(gx[:, :, 0], 0)  # 'mean' over no valid pixel sends g = inf: still 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_nan_logit_makes_the_maximum_nan(table, dtype) -> None:
    """stats holds the spec's maximum: NaN where a logit is (first, middle or last), not the largest of the
    others, which CUDA's max() would give."""
    x = np.array([[[np.nan, 1.0, 2.0, 0.0], [0.5, np.nan, 1.0, 3.0], [1.0, 0.0, np.nan, -1.0]]], dtype=dtype)
    args = (x, np.array([[0, 1, 2, 0]]), np.ones(3, dtype=dtype), -100, 0.0)
    loss, stats = table("softmax_cross_entropy_forward", *args)
    loss_spec, stats_spec = spec.softmax_cross_entropy_forward(*args)
    assert_same(stats[0], stats_spec[0])
    assert_close(stats, stats_spec)
    assert_close(loss, loss_spec)
    assert np.isnan(stats[0, 0, :3]).all() and stats[0, 0, 3] == 3.0


@pytest.mark.parametrize(("bad_target", "ignore_index"), [(3, -100), (-100, 1), (-1, -100), (7, 2)])
def test_out_of_range_target_raises_like_torch(table, bad_target, ignore_index) -> None:
    check_out_of_range_target(functools.partial(table, "softmax_cross_entropy_forward"),
                              functools.partial(table, "softmax_cross_entropy_backward"), bad_target, ignore_index)


# --- batch norm -------------------------------------------------------------------------------------


@SETTINGS
@given(batch_norm_cases(max_pixels=300))
def test_batch_norm_forward_and_backward(table, case) -> None:
    check_batch_norm(functools.partial(table, "batch_norm_forward"), functools.partial(table, "batch_norm_backward"),
                     *case)


def test_batch_norm_relu_masks_where_the_given_output_is_not_positive(table) -> None:
    check_relu_mask(functools.partial(table, "batch_norm_forward"), functools.partial(table, "batch_norm_backward"))


def test_batch_norm_sums_do_not_depend_on_the_schedule_or_the_grid() -> None:
    """One block per channel sums in a fixed order (a shared-memory tree, no atomics): the result is the same
    to the bit in both schedules and whether a block takes one channel or several (the grid-stride loop
    over channels that cudasim's capped grid uses)."""
    import minicv.kernels.cudasim as cudasim

    rng = np.random.default_rng(5)
    x, gy = (rng.standard_normal((3, 11, 700)) for _ in range(2))
    weight, bias = rng.standard_normal(11), rng.standard_normal(11)
    results = []
    for schedule in ("forward", "reverse"):
        for max_blocks in (1, 3, 10_000):
            cudasim.backend.max_blocks = max_blocks
            try:
                with cudasim_runtime.schedule(schedule):
                    y, mean, var = cudasim.batch_norm_forward(x, None, None, weight, bias, 1e-5, True, True)
                    results.append((y, mean, var,
                                    *cudasim.batch_norm_backward(gy, x, mean, var, weight, 1e-5, True, y)))
            finally:
                del cudasim.backend.max_blocks  # back to the class default
    for result in results[1:]:
        for a, b in zip(result, results[0], strict=True):
            assert_same(a, b)
    assert_close(results[0][1], spec.batch_norm_forward(x, None, None, weight, bias, 1e-5, True, True)[1])


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
