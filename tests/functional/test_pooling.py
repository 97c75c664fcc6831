"""minicv.functional.max_pool2d and max_unpool2d against PyTorch, on every device.

Values, indices and gradients are compared with torch on hypothesis-drawn tie-free configurations and
on PyTorch's own OpInfo samples; every validation error of the reference (torch_semantics.md sections 2
and 3) is raised with PyTorch's wording; gradcheck runs in float64. The helpers at the top are shared
with the upsample and loss tests.
"""

import re
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import minicv as mc
import minicv.functional as F
from minicv.errors import ArgumentError, DtypeError, OutOfRangeError
from minicv.gradcheck import gradcheck
from tests.reference import assert_close, float64_reference

# The device fixture is a plain string: hypothesis may reuse it across examples.
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------- shared helpers
def as_numpy(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else value


def to_minicv(value, device: str, requires_grad: bool = False):
    """A torch tensor (or a numpy array) as a minicv tensor on ``device``; anything else unchanged."""
    array = as_numpy(value)
    if not isinstance(array, np.ndarray):
        return value
    return mc.tensor(array, device=device, requires_grad=requires_grad and array.dtype.kind == "f")


def opinfo(name: str, variant: str = ""):
    from torch.testing._internal.common_methods_invocations import op_db

    return next(o for o in op_db if o.name == name and o.variant_test_name == variant)


def opinfo_samples(name: str, variant: str = "") -> list:
    samples = opinfo(name, variant).sample_inputs(device="cpu", dtype=torch.float64, requires_grad=True)
    return [(s.input, s.args, s.kwargs) for s in samples]


def compare_with_torch(ours: Callable, theirs: Callable, arrays: list, device: str, seed: int,
                       grad: tuple[bool, ...] | None = None) -> None:
    """ours(*minicv tensors) equals theirs(*torch tensors) in value (every output) and in the gradient of
    every float array marked in ``grad`` (default: all), for a random upstream gradient of output 0; the
    reference is PyTorch in float64 (tests/reference.py)."""
    grad = grad or tuple(a.dtype.kind == "f" for a in arrays)
    dtype = arrays[0].dtype
    mine = [to_minicv(a, device, g) for a, g in zip(arrays, grad, strict=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        y = ours(*mine)
        ys = y if isinstance(y, tuple) else (y,)
        gy = np.random.default_rng(seed).standard_normal(ys[0].shape).astype(dtype) if any(grad) else None
        expected = float64_reference(theirs, arrays, dtype, grad, gy)
    for i, (a, (e, allowance)) in enumerate(zip(ys, expected, strict=False)):
        assert a.device.name == device
        expected_dtype = dtype if e.dtype.kind == "f" else e.dtype
        assert a.dtype == expected_dtype, f"output {i}: dtype {a.dtype} != {expected_dtype}"
        assert_close(a.detach().numpy(), e, dtype, f"output {i}", allowance)
    if gy is None:
        return
    ys[0].backward(gy)
    expected_grads = iter(expected[len(ys):])
    for i, m in enumerate(mine):
        if grad[i]:
            assert m.grad is not None, f"no gradient for input {i}"
            expected_grad, allowance = next(expected_grads)
            assert_close(m.grad.numpy(), expected_grad, dtype, f"gradient of input {i}", allowance)


def bind(fn: Callable, *args, **kwargs) -> Callable:
    """fn with every argument but the first fixed (loop-safe, unlike a lambda)."""
    return lambda first: fn(first, *args, **kwargs)


def distinct(shape: tuple[int, ...], dtype, seed: int) -> np.ndarray:
    """Tie-free values (a random permutation), so that every window has one maximum."""
    values = np.random.default_rng(seed).permutation(int(np.prod(shape))).astype(dtype)
    return (values / max(values.size, 1) - 0.5).reshape(shape)


def int_or_pair(low: int, high: int) -> st.SearchStrategy:
    return st.one_of(st.integers(low, high), st.tuples(st.integers(low, high), st.integers(low, high)))


def as_pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


# --------------------------------------------------------------------------- max_pool2d against torch
@st.composite
def pool_cases(draw):
    """(shape, kwargs): any max_pool2d configuration PyTorch accepts, small enough for cudasim."""
    kernel = draw(int_or_pair(1, 4))
    kh, kw = as_pair(kernel)
    kwargs = {
        "kernel_size": kernel,
        "stride": draw(st.one_of(st.none(), int_or_pair(1, 3))),
        "padding": draw(st.tuples(st.integers(0, kh // 2), st.integers(0, kw // 2))),
        "dilation": draw(int_or_pair(1, 3)),
        "ceil_mode": draw(st.booleans()),
    }
    batch = draw(st.sampled_from([(), (1,), (2,)]))
    shape = (*batch, draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    return shape, kwargs


def torch_accepts(fn: Callable) -> bool:
    try:
        fn()
    except RuntimeError:
        return False
    return True


@SETTINGS
@given(case=pool_cases(), dtype=dtypes, seed=seeds)
def test_max_pool2d_matches_torch(device, case, dtype, seed):
    shape, kwargs = case
    x = distinct(shape, dtype, seed)
    assume(torch_accepts(lambda: TF.max_pool2d(torch.from_numpy(x), **kwargs)))
    # The input is finite, so -inf marks a window of padding only, whose gradient PyTorch misroutes
    # (test_max_pool2d_padding_only_windows); elsewhere the gradients must agree.
    padding_only = bool(torch.isinf(TF.max_pool2d(torch.from_numpy(x), **kwargs)).any())
    compare_with_torch(lambda a: F.max_pool2d(a, **kwargs, return_indices=True),
                       lambda a: TF.max_pool2d(a, **kwargs, return_indices=True), [x], device, seed,
                       grad=(not padding_only,))
    y = F.max_pool2d(mc.tensor(x, device=device), **kwargs)  # return_indices=False: the values alone
    assert_close(y.numpy(), TF.max_pool2d(torch.from_numpy(x), **kwargs), dtype)


def test_max_pool2d_ties_nan_and_inf(device):
    """Ties go to the first maximum, NaN propagates (the last NaN wins), an all -inf window keeps its
    first in-input tap, and the gradient follows the indices, exactly as PyTorch."""
    x = np.array([[[[1, 1, 2, 2, -np.inf],
                    [1, 1, 2, 2, -np.inf],
                    [np.nan, 0, np.nan, 3, 3],
                    [0, np.nan, 0, 3, 3]]]])
    for kwargs in ({"kernel_size": 2}, {"kernel_size": 3, "stride": 1, "padding": 1},
                   {"kernel_size": 2, "stride": 2, "ceil_mode": True, "padding": 1}):
        compare_with_torch(lambda a, kw=kwargs: F.max_pool2d(a, **kw, return_indices=True),
                           lambda a, kw=kwargs: TF.max_pool2d(a, **kw, return_indices=True), [x], device, 0)


def test_max_pool2d_padding_only_windows(device):
    """With dilation a window may hold padding only: its value is -inf and its index PyTorch's (which may
    leave the plane, or wrap onto the next row); it sends no gradient (PyTorch's goes to that index)."""
    for shape, kwargs in (((1, 1, 1), {"kernel_size": 2, "padding": 1, "dilation": 2}),
                          ((1, 3, 1), {"kernel_size": (1, 2), "padding": (0, 1), "dilation": (1, 2)}),
                          ((2, 7, 8), {"kernel_size": 3, "stride": 1, "padding": 1, "dilation": 3})):
        x = distinct(shape, np.float64, 0)
        compare_with_torch(lambda a, kw=kwargs: F.max_pool2d(a, **kw, return_indices=True),
                           lambda a, kw=kwargs: TF.max_pool2d(a, **kw, return_indices=True), [x], device, 0,
                           grad=(False,))
        t = mc.tensor(x, device=device, requires_grad=True)
        y = F.max_pool2d(t, **kwargs)
        y.backward(np.ones(y.shape))
        # Expected: PyTorch's gradient when only the windows that see the input send one.
        expected = torch.from_numpy(x).requires_grad_()
        expected_y = TF.max_pool2d(expected, **kwargs)
        expected_y.backward(torch.isfinite(expected_y).double())
        np.testing.assert_array_equal(t.grad.numpy(), expected.grad.numpy())


def test_max_pool2d_overlapping_windows_accumulate(device):
    """k > s: a spike chosen by four windows receives the sum of their gradients."""
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0
    t = mc.tensor(x, device=device, requires_grad=True)
    F.max_pool2d(t, 2, 1).sum().backward()
    assert t.grad.numpy()[0, 0, 1, 1] == 4.0


def test_max_pool2d_empty_batch(device):
    x = mc.zeros(0, 2, 5, 5, dtype=np.float64, device=device, requires_grad=True)
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    assert y.shape == indices.shape == (0, 2, 2, 2) and indices.dtype == np.int64
    y.sum().backward()
    assert x.grad.shape == (0, 2, 5, 5)


def test_max_pool2d_gradcheck(device):
    x = mc.tensor(distinct((2, 2, 5, 6), np.float64, 1), device=device, requires_grad=True)
    assert gradcheck(lambda a: F.max_pool2d(a, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True),
                     [x])


def test_max_pool2d_opinfo_samples(device):
    """All of PyTorch's OpInfo samples (values, indices, gradients) on numpy; every 7th elsewhere (the
    kernels are the same, and cudasim runs CUDA threads as fibers on the CPU)."""
    samples = opinfo_samples("nn.functional.max_pool2d")
    assert samples
    for i, (x, args, kwargs) in enumerate(samples[:: 1 if device == "numpy" else 7]):
        compare_with_torch(bind(F.max_pool2d, *args, **kwargs), bind(TF.max_pool2d, *args, **kwargs),
                           [as_numpy(x)], device, i)


def test_max_pool2d_opinfo_error_inputs():
    errors = list(opinfo("nn.functional.max_pool2d").error_inputs(device="cpu"))
    assert errors
    for error in errors:
        sample = error.sample_input
        with pytest.raises(error.error_type, match=error.error_regex):
            F.max_pool2d(to_minicv(sample.input, "numpy"), *sample.args, **sample.kwargs)


# --------------------------------------------------------------------------- max_pool2d errors
def z(*shape, dtype=np.float64):
    return mc.zeros(*shape, dtype=dtype)


POOL_ERRORS = {
    "kernel_size length": (lambda: F.max_pool2d(z(1, 1, 4, 4), (1, 2, 3)), ArgumentError,
                           "max_pool2d: kernel_size must either be a single int, or a tuple of two ints"),
    "empty kernel_size": (lambda: F.max_pool2d(z(1, 1, 4, 4), []), ArgumentError, "kernel_size must either"),
    "stride length": (lambda: F.max_pool2d(z(1, 1, 4, 4), 2, (1, 2, 3)), ArgumentError,
                      "stride must either be omitted, a single int, or a tuple of two ints"),
    "padding length": (lambda: F.max_pool2d(z(1, 1, 4, 4), 2, padding=(1, 2, 3)), ArgumentError,
                       "padding must either be a single int, or a tuple of two ints"),
    "dilation length": (lambda: F.max_pool2d(z(1, 1, 4, 4), 2, dilation=(1, 2, 3)), ArgumentError,
                        "dilation must be either a single int, or a tuple of two ints"),
    "float kernel_size": (lambda: F.max_pool2d(z(1, 1, 4, 4), 2.0), TypeError, "kernel_size"),
    "rank 2": (lambda: F.max_pool2d(z(4, 4), 2), ArgumentError,
               re.escape("non-empty 3D or 4D (batch mode) tensor expected for input")),
    "rank 5": (lambda: F.max_pool2d(z(1, 1, 1, 4, 4), 2), ArgumentError, "3D or 4D"),
    "kernel 0, default stride": (lambda: F.max_pool2d(z(1, 1, 4, 4), 0), ArgumentError, "stride should not be zero"),
    "stride 0": (lambda: F.max_pool2d(z(1, 1, 4, 4), (2, 3), (0, 1)), ArgumentError, "stride should not be zero"),
    "negative pad": (lambda: F.max_pool2d(z(1, 1, 4, 4), 2, padding=-1), ArgumentError,
                     "pad must be non-negative, but got pad: -1"),
    "pad over effective half": (lambda: F.max_pool2d(z(1, 1, 4, 4), 2, padding=4), ArgumentError,
                                "pad should be at most half of effective kernel size, but got pad=4, "
                                "kernel_size=2 and dilation=1"),
    "negative kernel": (lambda: F.max_pool2d(z(1, 1, 4, 4), -2, 1), ArgumentError,
                        "pad should be at most half of effective kernel size, but got pad=0, kernel_size=-2"),
    "kernel 0": (lambda: F.max_pool2d(z(1, 1, 4, 4), 0, 1), ArgumentError,
                 "kernel size should be greater than zero, but got kH: 0 kW: 0"),
    "negative stride": (lambda: F.max_pool2d(z(1, 1, 4, 4), 2, -1), ArgumentError,
                        "stride should be greater than zero, but got dH: -1 dW: -1"),
    "dilation 0": (lambda: F.max_pool2d(z(1, 1, 4, 4), 2, dilation=0), ArgumentError,
                   "dilation should be greater than zero, but got dilationH: 0 dilationW: 0"),
    "empty channels": (lambda: F.max_pool2d(z(1, 0, 4, 4), 2), ArgumentError,
                       re.escape("Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
                                 "but got:[1, 0, 4, 4]")),
    "empty unbatched channels": (lambda: F.max_pool2d(z(0, 4, 4), 2), ArgumentError, re.escape("but got:[0, 4, 4]")),
    "pad over raw kernel half": (lambda: F.max_pool2d(z(1, 1, 9, 9), 3, padding=2, dilation=2), ArgumentError,
                                 "pad should be smaller than or equal to half of kernel size, but got padW = 2, "
                                 "padH = 2, kW = 3, kH = 3"),
    "output too small": (lambda: F.max_pool2d(z(1, 1, 4), 2), ArgumentError,
                         re.escape("Given input size: (1x1x4). Calculated output size: (1x0x2). Output size is too "
                                   "small")),
    "integer input": (lambda: F.max_pool2d(mc.tensor(np.zeros((1, 1, 4, 4), np.int64)), 2), DtypeError, "max_pool2d"),
    "not a tensor": (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 2), TypeError, "must be a Tensor"),
}


@pytest.mark.parametrize("name", list(POOL_ERRORS))
def test_max_pool2d_errors(name):
    call, error, pattern = POOL_ERRORS[name]
    with pytest.raises(error, match=pattern):
        call()


# --------------------------------------------------------------------------- max_unpool2d against torch
@st.composite
def unpool_cases(draw):
    """(shape, pool kwargs, output_size): a pool PyTorch accepts, and how its output is unpooled."""
    kernel = draw(int_or_pair(1, 4))
    kh, kw = as_pair(kernel)
    kwargs = {"kernel_size": kernel, "stride": draw(st.one_of(st.none(), int_or_pair(1, 3))),
              "padding": draw(st.tuples(st.integers(0, kh // 2), st.integers(0, kw // 2)))}
    batch = draw(st.sampled_from([(), (2,)]))
    shape = (*batch, draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    output_size = draw(st.sampled_from([None, "input", "input4"]))
    return shape, kwargs, output_size


@SETTINGS
@given(case=unpool_cases(), dtype=dtypes, seed=seeds)
def test_max_unpool2d_matches_torch(device, case, dtype, seed):
    shape, kwargs, output_size = case
    x = torch.from_numpy(distinct(shape, dtype, seed))
    assume(torch_accepts(lambda: TF.max_pool2d(x, **kwargs)))
    pooled, indices = TF.max_pool2d(x, **kwargs, return_indices=True)
    size = {None: None, "input": shape[-2:], "input4": (1, 1, *shape[-2:])}[output_size]
    assume(torch_accepts(lambda: TF.max_unpool2d(pooled, indices, **kwargs, output_size=size)))
    # An empty output is tested on its own: PyTorch's backward fails on it.
    assume(TF.max_unpool2d(pooled, indices, **kwargs, output_size=size).numel() > 0)
    mine_indices = mc.tensor(indices.numpy(), device=device)
    compare_with_torch(lambda a: F.max_unpool2d(a, mine_indices, **kwargs, output_size=size),
                       lambda a: TF.max_unpool2d(a, indices, **kwargs, output_size=size),
                       [pooled.numpy()], device, seed)


def test_max_unpool2d_moves_indices_to_a_larger_plane(device):
    """Indices are re-read with the output's width (issue #36710): [0, 2, 8, 10] from a 4x4 pool land on
    (0,0), (0,2), (1,3), (2,0) of a 5x5 output."""
    indices = torch.tensor([[[[0, 2], [8, 10]]]])
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    compare_with_torch(lambda a: F.max_unpool2d(a, mc.tensor(indices.numpy(), device=device), 2, output_size=(5, 5)),
                       lambda a: TF.max_unpool2d(a, indices, 2, output_size=(5, 5)), [x], device, 0)


def test_max_unpool2d_duplicates_keep_one_of_their_values(device):
    """The last one on the CPU devices, as PyTorch's CPU loop; on the CUDA kernels whichever thread writes
    last, as PyTorch on a GPU (cudasim's reverse schedule keeps the first)."""
    indices = mc.tensor(np.array([[[[3, 3], [0, 3]]]]), device=device)
    out = F.max_unpool2d(mc.tensor(np.array([[[[1.0, 2.0], [5.0, 7.0]]]]), device=device), indices, 2)
    out = out.numpy()[0, 0].ravel().tolist()
    assert out[3] in ([7.0] if device in ("numpy", "numba") else [1.0, 2.0, 7.0])
    assert out[:3] + out[4:] == [5.0, 0, 0] + [0.0] * 12


def test_max_unpool2d_empty_output_and_batch(device):
    x = mc.zeros(1, 1, 2, 2, dtype=np.float64, device=device)
    indices = mc.tensor(np.arange(4).reshape(1, 1, 2, 2), device=device)
    assert F.max_unpool2d(x, indices, 1, padding=1).shape == (1, 1, 0, 0)  # default size 0: no index read
    empty = mc.zeros(0, 1, 2, 2, dtype=np.float64, device=device)
    assert F.max_unpool2d(empty, mc.tensor(np.zeros((0, 1, 2, 2), np.int64), device=device), 2).shape == (0, 1, 4, 4)


def test_max_unpool2d_gradcheck(device):
    x = torch.from_numpy(distinct((2, 2, 6, 5), np.float64, 3))
    # Windows that do not overlap give unique indices: then the backward (a gather) is the derivative.
    pooled, indices = TF.max_pool2d(x, (2, 3), (2, 3), 1, return_indices=True)
    a = mc.tensor(pooled.numpy(), device=device, requires_grad=True)
    idx = mc.tensor(indices.numpy(), device=device)
    assert gradcheck(lambda t: F.max_unpool2d(t, idx, (2, 3), (2, 3), 1, output_size=(6, 5)), [a])


@pytest.mark.parametrize("variant", ["", "grad"])
def test_max_unpool2d_opinfo_samples(device, variant):
    samples = opinfo_samples("nn.functional.max_unpool2d", variant)
    assert samples
    for i, (x, args, kwargs) in enumerate(samples[:: 1 if device == "numpy" else 5]):
        indices, *rest = args
        mine = to_minicv(indices, device)
        # Only the 'grad' samples have unique indices; elsewhere PyTorch's backward is not the derivative.
        compare_with_torch(bind(F.max_unpool2d, mine, *rest, **kwargs), bind(TF.max_unpool2d, indices, *rest, **kwargs),
                           [as_numpy(x)], device, i, grad=(variant == "grad",))


def test_max_unpool2d_opinfo_error_inputs():
    errors = list(opinfo("nn.functional.max_unpool2d").error_inputs(device="cpu"))
    assert errors
    for error in errors:
        sample = error.sample_input
        args = [to_minicv(a, "numpy") for a in sample.args]
        with pytest.raises(error.error_type, match=error.error_regex):
            F.max_unpool2d(to_minicv(sample.input, "numpy"), *args, **sample.kwargs)


# --------------------------------------------------------------------------- max_unpool2d errors
def idx(*shape, value=0):
    return mc.tensor(np.full(shape, value, dtype=np.int64))


UNPOOL_ERRORS = {
    "output_size length 3": (lambda: F.max_unpool2d(z(1, 1, 2, 2), idx(1, 1, 2, 2), 2, output_size=(1, 4, 4)),
                             ArgumentError, "output_size should be a sequence containing 2 or 4 elements, but it has "
                             "a length of '3'"),
    "output_size out of range": (lambda: F.max_unpool2d(z(1, 1, 2, 2), idx(1, 1, 2, 2), 2, output_size=(6, 5)),
                                 ArgumentError,
                                 re.escape('invalid output_size "(6, 5)" (dim 0 must be between 2 and 6)')),
    "output_size at the strict bound": (lambda: F.max_unpool2d(z(1, 1, 2, 2), idx(1, 1, 2, 2), 2, output_size=(4, 2)),
                                        ArgumentError, re.escape("(dim 1 must be between 2 and 6)")),
    "negative default size": (lambda: F.max_unpool2d(z(1, 1, 2, 2), idx(1, 1, 2, 2), 0, stride=1, padding=1),
                              ArgumentError, re.escape("output_size must contain non-negative spatial dimensions, "
                                                       "but got output_size[0]=-1")),
    "kernel_size length": (lambda: F.max_unpool2d(z(1, 1, 2, 2), idx(1, 1, 2, 2), (2, 2, 2)), ArgumentError,
                           "kernel_size must be a single int or a tuple of two ints"),
    "float output_size": (lambda: F.max_unpool2d(z(1, 1, 2, 2), idx(1, 1, 2, 2), 2, output_size=(4.0, 4)), TypeError,
                          "output_size"),
    "indices dtype": (lambda: F.max_unpool2d(z(1, 1, 2, 2), mc.tensor(np.zeros((1, 1, 2, 2))), 2), DtypeError,
                      "elements in indices should be type int64"),
    "rank 5": (lambda: F.max_unpool2d(z(1, 1, 1, 2, 2), idx(1, 1, 1, 2, 2), 2), ArgumentError,
               "Input to max_unpooling2d should be a 3d or 4d Tensor, but got a tensor with 5 dimensions."),
    "rank 2": (lambda: F.max_unpool2d(z(2, 2), idx(2, 2), 2), ArgumentError, "but got a tensor with 2 dimensions"),
    "shape mismatch": (lambda: F.max_unpool2d(z(1, 1, 4, 4), idx(1, 1, 4, 1), 3, 2), ArgumentError,
                       re.escape("Expected shape of indices to be same as that of the input tensor ([1, 1, 4, 4]) but "
                                 "got indices tensor with shape: [1, 1, 4, 1]")),
    "empty channels": (lambda: F.max_unpool2d(z(1, 0, 2, 2), idx(1, 0, 2, 2), 2), ArgumentError,
                       re.escape("Expected input to have non-zero size for non-batch dimensions, but got [1, 0, 2, 2] "
                                 "with dimension 1 being empty.")),
    "index too large": (lambda: F.max_unpool2d(z(1, 1, 2, 2), mc.tensor(np.array([[[[0, 3], [18, 15]]]])), 2),
                        OutOfRangeError, re.escape("Found an invalid max index: 18 (output volumes are of size 4x4)")),
    "negative index": (lambda: F.max_unpool2d(z(1, 1, 2, 2), mc.tensor(np.array([[[[0, -1], [8, 15]]]])), 2),
                       OutOfRangeError, re.escape("Found an invalid max index: -1 (output volumes are of size 4x4)")),
    "integer input": (lambda: F.max_unpool2d(mc.tensor(np.zeros((1, 1, 2, 2), np.int64)), idx(1, 1, 2, 2), 2),
                      DtypeError, "max_unpool2d"),
}


@pytest.mark.parametrize("name", list(UNPOOL_ERRORS))
def test_max_unpool2d_errors(name):
    call, error, pattern = UNPOOL_ERRORS[name]
    with pytest.raises(error, match=pattern):
        call()


def test_error_types_are_pytorch_compatible():
    """PyTorch raises RuntimeError (and ValueError in Python code); ours are both where PyTorch's are."""
    with pytest.raises(RuntimeError):
        F.max_pool2d(z(1, 1, 4), 2)
    with pytest.raises(ValueError):
        F.max_unpool2d(z(1, 1, 2, 2), idx(1, 1, 2, 2), 2, output_size=(6, 5))
    with pytest.raises(IndexError):
        F.max_unpool2d(z(1, 1, 2, 2), idx(1, 1, 2, 2, value=16), 2)
