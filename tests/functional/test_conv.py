"""minicv.functional.conv2d and conv_transpose2d against PyTorch, on every device.

Forward values and the gradients of input, weight and bias are compared with torch on hypothesis-drawn
configurations and on PyTorch's own OpInfo samples; every validation error of the reference
(torch_semantics.md sections 1 and 5) is raised with PyTorch's wording; gradcheck runs in float64.
"""

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from minicv.kernels.numba import conv as nb_conv

import minicv as mc
import minicv.functional as F
from minicv.errors import ArgumentError, DtypeError
from minicv.functional.conv import conv_transpose2d_output_padding
from minicv.gradcheck import gradcheck
from tests.conftest import tolerances
from tests.reference import assert_close, float64_reference

# The device fixture is a plain string: hypothesis may reuse it across examples.
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
OPS = {"conv2d": (F.conv2d, TF.conv2d), "conv_transpose2d": (F.conv_transpose2d, TF.conv_transpose2d)}

seeds = st.integers(0, 2**32 - 1)


def pairs(low: int, high: int) -> st.SearchStrategy:
    return st.tuples(st.integers(low, high), st.integers(low, high))


def int_or_pair(low: int, high: int) -> st.SearchStrategy:
    """An int, a 1-element list (broadcast) or a pair, as PyTorch accepts them."""
    return st.one_of(st.integers(low, high), st.integers(low, high).map(lambda v: [v]), pairs(low, high))


def as_pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return (value[0], value[0]) if len(value) == 1 else tuple(value)


# --------------------------------------------------------------------------- comparison with torch
def assert_matches_torch(op: str, arrays: list, args: tuple, kwargs: dict, device: str, seed: int) -> None:
    """minicv's op on ``device`` equals torch's (in float64, tests/reference.py) in value and in the
    gradient of every array."""
    dtype = arrays[0].dtype
    tensors = [None if a is None else mc.tensor(a, device=device, requires_grad=True) for a in arrays]
    y = OPS[op][0](*tensors, *args, **kwargs)
    assert y.dtype == dtype and y.device.name == device
    gy = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)

    def theirs(*torch_tensors):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # 'same' with even kernels: "zero-padded copy"
            return OPS[op][1](*torch_tensors, *args, **kwargs)

    (expected_y, allowance), *expected_grads = float64_reference(theirs, arrays, dtype, upstream=gy)
    assert_close(y.detach().numpy(), expected_y, dtype, "output", allowance)
    y.backward(gy)
    present = [(name, t) for name, t in zip(("input", "weight", "bias"), tensors, strict=False) if t is not None]
    for (name, t), (expected, allowance) in zip(present, expected_grads, strict=True):
        assert t.grad is not None, f"no gradient for {name}"
        assert t.grad.shape == t.shape and t.grad.dtype == dtype, name
        assert_close(t.grad.numpy(), expected, dtype, name, allowance)


@st.composite
def conv2d_cases(draw):
    """(arrays, kwargs, seed): any valid conv2d configuration, small enough for cudasim."""
    groups = draw(st.integers(1, 3))
    kernel, dilation = draw(pairs(1, 4)), draw(int_or_pair(1, 3))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), int_or_pair(0, 2)))
    stride = 1 if padding == "same" else draw(int_or_pair(1, 3))
    numeric_padding = (0, 0) if isinstance(padding, str) else as_pair(padding)
    if padding == "same":
        numeric_padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, as_pair(dilation), strict=True))
    # the padded input must hold one dilated window: H + 2p >= d(k-1) + 1
    hw = [
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4))
        for k, p, d in zip(kernel, numeric_padding, as_pair(dilation), strict=True)
    ]
    rng = np.random.default_rng(draw(seeds))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    c_in = groups * draw(st.integers(1, 2))
    batch = [] if draw(st.booleans()) else [draw(st.integers(1, 2))]  # [] is an unbatched input
    x = rng.standard_normal((*batch, c_in, *hw)).astype(dtype)
    w = rng.standard_normal((groups * draw(st.integers(1, 2)), c_in // groups, *kernel)).astype(dtype)
    b = rng.standard_normal(w.shape[0]).astype(dtype) if draw(st.booleans()) else None
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return [x, w, b], kwargs, draw(seeds)


@st.composite
def conv_transpose2d_cases(draw):
    """(arrays, kwargs, seed): any valid conv_transpose2d configuration, output_padding included."""
    groups = draw(st.integers(1, 3))
    kernel, stride, padding, dilation = draw(pairs(1, 4)), draw(int_or_pair(1, 3)), draw(pairs(0, 2)), draw(
        int_or_pair(1, 3)
    )
    # output_padding below the stride or below the dilation (so it may reach the stride when d > s)
    output_padding = tuple(
        draw(st.integers(0, max(s, d) - 1)) for s, d in zip(as_pair(stride), as_pair(dilation), strict=True)
    )
    # the output must have a row: (H-1)s - 2p + d(k-1) + op + 1 >= 1
    hw = [
        max(1, 1 + -(-(2 * p - d * (k - 1) - op) // s)) + draw(st.integers(0, 3))
        for k, s, p, d, op in zip(kernel, as_pair(stride), padding, as_pair(dilation), output_padding, strict=True)
    ]
    rng = np.random.default_rng(draw(seeds))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    c_in = groups * draw(st.integers(1, 2))
    batch = [] if draw(st.booleans()) else [draw(st.integers(1, 2))]
    x = rng.standard_normal((*batch, c_in, *hw)).astype(dtype)
    w = rng.standard_normal((c_in, draw(st.integers(1, 2)), *kernel)).astype(dtype)
    b = rng.standard_normal(groups * w.shape[1]).astype(dtype) if draw(st.booleans()) else None
    kwargs = {"stride": stride, "padding": padding, "output_padding": output_padding, "groups": groups,
              "dilation": dilation}
    return [x, w, b], kwargs, draw(seeds)


@SETTINGS
@given(case=conv2d_cases())
def test_conv2d_matches_torch(device, case):
    arrays, kwargs, seed = case
    assert_matches_torch("conv2d", arrays, (), kwargs, device, seed)


@SETTINGS
@given(case=conv_transpose2d_cases())
def test_conv_transpose2d_matches_torch(device, case):
    arrays, kwargs, seed = case
    assert_matches_torch("conv_transpose2d", arrays, (), kwargs, device, seed)


@pytest.mark.parametrize(
    "op, shapes, kwargs",
    [
        ("conv2d", [(0, 4, 5, 6), (6, 2, 3, 2), (6,)], {"groups": 2, "padding": 1}),
        ("conv2d", [(0, 2, 5, 5), (3, 2, 2, 2), None], {"padding": "same"}),
        ("conv_transpose2d", [(0, 4, 3, 2), (4, 3, 3, 3), (6,)], {"stride": 2, "output_padding": 1, "groups": 2}),
    ],
)
def test_empty_batch_matches_torch(device, op, shapes, kwargs):
    rng = np.random.default_rng(0)
    arrays = [None if s is None else rng.standard_normal(s) for s in shapes]
    assert_matches_torch(op, arrays, (), kwargs, device, seed=1)


@pytest.mark.parametrize("op", list(OPS))
def test_positional_arguments_follow_torch(device, op):
    """conv2d: stride, padding, dilation, groups; conv_transpose2d: stride, padding, output_padding, groups,
    dilation (groups before dilation)."""
    rng = np.random.default_rng(2)
    shapes = [(1, 4, 6, 7), (4, 2, 3, 2), (4,)] if op == "conv2d" else [(1, 4, 5, 6), (4, 1, 3, 2), (2,)]
    args = (2, 1, 2, 2) if op == "conv2d" else (3, 1, 1, 2, 2)
    assert_matches_torch(op, [rng.standard_normal(s) for s in shapes], args, {}, device, seed=3)


@pytest.mark.parametrize("op", list(OPS))
def test_non_contiguous_operands(device, op):
    """Inputs that are views (a permuted input, a transposed weight) give the same results."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 5, 3))
    w = rng.standard_normal((3, 3, 2, 2))
    expected = OPS[op][1](torch.from_numpy(x).permute(0, 3, 2, 1), torch.from_numpy(w).transpose(2, 3))
    actual = OPS[op][0](mc.tensor(x, device=device).permute(0, 3, 2, 1), mc.tensor(w, device=device).transpose(2, 3))
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), **tolerances(np.float64))


# --------------------------------------------------------------------------- PyTorch's OpInfo suite
def opinfo(name: str):
    from torch.testing._internal.common_methods_invocations import op_db

    return next(o for o in op_db if o.name == name and o.variant_test_name == "")


def opinfo_samples(op: str) -> list:
    samples = opinfo(f"nn.functional.{op}").sample_inputs(device="cpu", dtype=torch.float64, requires_grad=True)
    return [(s.input, s.args, s.kwargs) for s in samples]


def as_numpy(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("op", list(OPS))
def test_opinfo_samples(device, op):
    samples = opinfo_samples(op)
    assert samples
    for i, (x, args, kwargs) in enumerate(samples):
        weight, *rest = args
        bias, hyper = (rest[0], tuple(rest[1:])) if rest else (kwargs.get("bias"), ())
        kwargs = {k: v for k, v in kwargs.items() if k != "bias"}
        assert_matches_torch(op, [as_numpy(x), as_numpy(weight), as_numpy(bias)], hyper, kwargs, device, seed=i)


def test_opinfo_error_inputs():
    """Every error input of conv2d's OpInfo raises, with a compatible type and the same text (torch 2.13's
    conv_transpose2d OpInfo has no error inputs)."""
    errors = list(opinfo("nn.functional.conv2d").error_inputs(device="cpu"))
    assert errors
    for error in errors:
        sample = error.sample_input
        tensors = [mc.tensor(as_numpy(a)) if isinstance(a, torch.Tensor) else a for a in (sample.input, *sample.args)]
        with pytest.raises(error.error_type, match=error.error_regex):
            F.conv2d(*tensors, **sample.kwargs)


# --------------------------------------------------------------------------- errors, one per condition
def t(*shape, dtype=np.float64, device="numpy"):
    return mc.zeros(*shape, dtype=dtype, device=device)


CONV2D_ERRORS = {
    "input rank": (lambda: F.conv2d(t(5, 5), t(2, 1, 3, 3)), ArgumentError,
                   re.escape("Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [5, 5]")),
    "weight 3-D with 'same'": (lambda: F.conv2d(t(1, 4, 5, 5), t(3, 4, 3), padding="same"), ArgumentError,
                               re.escape("Expected 3-dimensional input for 3-dimensional weight[3, 4, 3], but got "
                                         "4-dimensional input of size [1, 4, 5, 5] instead")),
    "weight 3-D, numeric padding": (lambda: F.conv2d(t(1, 4, 5, 5), t(3, 4, 3)), ArgumentError,
                                    re.escape("expected stride to be a single integer value or a list of 1 values to "
                                              "match the convolution dimensions, but got stride=[1, 1]")),
    "weight 2-D": (lambda: F.conv2d(t(1, 4, 5, 5), t(3, 4)), ArgumentError,
                   "weight should have at least three dimensions"),
    "stride 0": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), stride=0), ArgumentError,
                 "non-positive stride is not supported"),
    "negative padding": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), padding=(1, -1)), ArgumentError,
                         "negative padding is not supported"),
    "dilation 0": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), dilation=0), ArgumentError,
                   re.escape("dilation should be greater than zero, but got [0, 0]")),
    "groups 0": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), groups=0), ArgumentError,
                 "non-positive groups is not supported"),
    "stride of length 3": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), stride=(1, 1, 1)), ArgumentError,
                           re.escape("expected stride to be a single integer value or a list of 2 values to match "
                                     "the convolution dimensions, but got stride=[1, 1, 1]")),
    "empty padding list": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), padding=[]), ArgumentError,
                           re.escape("expected padding to be a single integer value or a list of 2 values")),
    "non-integer stride": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), stride=1.5), TypeError,
                           "argument 'stride' must be an int or a tuple of ints"),
    "weight.size(0) < groups": (lambda: F.conv2d(t(2, 2, 4, 3), t(2, 2, 1, 3), groups=3), ArgumentError,
                                re.escape("Given groups=3, expected weight to be at least 3 at dimension 0, but got "
                                          "weight of size [2, 2, 1, 3] instead")),
    "C_out = 0": (lambda: F.conv2d(t(1, 1, 5, 5), t(0, 1, 3, 3)), ArgumentError,
                  re.escape("Given groups=1, expected weight to be at least 1 at dimension 0, but got weight of size "
                            "[0, 1, 3, 3] instead")),
    "C_out % groups": (lambda: F.conv2d(t(1, 4, 5, 5), t(3, 2, 3, 3), groups=2), ArgumentError,
                       re.escape("Given groups=2, expected weight to be divisible by 2 at dimension 0, but got weight "
                                 "of size [[3, 2, 3, 3]] instead")),
    "channel mismatch": (lambda: F.conv2d(t(1, 3, 5, 5), t(2, 4, 3, 3)), ArgumentError,
                         re.escape("Given groups=1, weight of size [2, 4, 3, 3], expected input[1, 3, 5, 5] to have "
                                   "4 channels, but got 3 channels instead")),
    "unbatched channel mismatch": (lambda: F.conv2d(t(3, 5, 5), t(2, 4, 3, 3)), ArgumentError,
                                   re.escape("expected input[1, 3, 5, 5] to have 4 channels")),
    "bias shape": (lambda: F.conv2d(t(1, 4, 5, 5), t(3, 4, 3, 3), t(2)), ArgumentError,
                   re.escape("Given weight of size [3, 4, 3, 3], expected bias to be 1-dimensional with 3 elements, "
                             "but got bias of size [2] instead")),
    "kernel larger than padded input": (
        lambda: F.conv2d(t(1, 1, 2, 2), t(1, 1, 3, 3)), ArgumentError,
        re.escape("Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3). Kernel size can't be "
                  "greater than actual input size")),
    "dilated kernel larger than padded input": (
        lambda: F.conv2d(t(1, 1, 6, 6), t(1, 1, 3, 3), dilation=(3, 1), padding=(0, 1)), ArgumentError,
        re.escape("Calculated padded input size per channel: (6 x 8). Kernel size: (7 x 3).")),
    "zero spatial size": (lambda: F.conv2d(t(1, 1, 0, 5), t(3, 1, 3, 3)), ArgumentError,
                          re.escape("Calculated padded input size per channel: (0 x 5)")),
    "zero spatial size, padded": (lambda: F.conv2d(t(1, 1, 0, 5), t(3, 1, 3, 3), padding=2), ArgumentError,
                                  re.escape("Only zero batch or zero channel inputs are supported, but got input "
                                            "shape: [1, 1, 0, 5]")),
    "'same' with stride": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), stride=(1, 2), padding="same"),
                           ArgumentError, "padding='same' is not supported for strided convolutions"),
    "unknown padding string": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), padding="full"), ArgumentError,
                               re.escape("Invalid padding string: 'full'")),
    "padding strings are case-sensitive": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), padding="Same"),
                                           ArgumentError, re.escape("Invalid padding string: 'Same'")),
    "weight dtype": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3, dtype=np.float32)), DtypeError,
                     "expected scalar type Double but found Float"),
    "bias dtype": (lambda: F.conv2d(t(1, 1, 5, 5, dtype=np.float32), t(2, 1, 3, 3, dtype=np.float32), t(2)),
                   DtypeError, re.escape("Input type (float) and bias type (double) should be the same")),
    "integer dtype": (lambda: F.conv2d(t(1, 1, 5, 5, dtype=np.int64), t(2, 1, 3, 3, dtype=np.int64)), DtypeError,
                      "float32 and float64 only"),
    "input not a Tensor": (lambda: F.conv2d(np.zeros((1, 1, 5, 5)), t(2, 1, 3, 3)), TypeError,
                           re.escape("argument 'input' (position 1) must be Tensor, not ndarray")),
    "two devices": (lambda: F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3, device="cudasim")), ValueError,
                    "(?i)expected all tensors to be on the same device"),
}

CONV_TRANSPOSE2D_ERRORS = {
    "input rank": (lambda: F.conv_transpose2d(t(5, 5), t(1, 2, 3, 3)), ArgumentError,
                   re.escape("Expected 3D (unbatched) or 4D (batched) input to conv_transpose2d, but got input of "
                             "size: [5, 5]")),
    "string padding": (lambda: F.conv_transpose2d(t(1, 1, 5, 5), t(1, 2, 3, 3), padding="same"), TypeError,
                       re.escape("conv_transpose2d(): argument 'padding' must be tuple of ints, not str")),
    "negative output_padding": (lambda: F.conv_transpose2d(t(1, 1, 5, 5), t(1, 2, 3, 3), output_padding=-1),
                                ArgumentError, "negative output_padding is not supported"),
    "negative padding": (lambda: F.conv_transpose2d(t(1, 1, 5, 5), t(1, 2, 3, 3), padding=-1), ArgumentError,
                         "negative padding is not supported"),
    "stride 0": (lambda: F.conv_transpose2d(t(1, 1, 5, 5), t(1, 2, 3, 3), stride=(0, 1)), ArgumentError,
                 "non-positive stride is not supported"),
    "dilation 0": (lambda: F.conv_transpose2d(t(1, 1, 3, 4), t(1, 2, 2, 2), dilation=0), ArgumentError,
                   "dilation should be greater than zero, but got dilation_height: 0, dilation_width: 0"),
    "groups 0": (lambda: F.conv_transpose2d(t(1, 1, 3, 4), t(1, 2, 2, 2), groups=0), ArgumentError,
                 "non-positive groups is not supported"),
    "output_padding of length 3": (
        lambda: F.conv_transpose2d(t(1, 1, 3, 4), t(1, 2, 2, 2), output_padding=(0, 0, 0)), ArgumentError,
        re.escape("expected output_padding to be a single integer value or a list of 2 values to match the "
                  "convolution dimensions, but got output_padding=[0, 0, 0]")),
    "output_padding not below stride nor dilation": (
        lambda: F.conv_transpose2d(t(1, 1, 5, 5), t(1, 2, 3, 3), stride=2, output_padding=2), ArgumentError,
        re.escape("output padding must be smaller than either stride or dilation, but got output_padding_height: 2 "
                  "output_padding_width: 2 stride_height: 2 stride_width: 2 dilation_height: 1 dilation_width: 1")),
    "output_padding with stride 1 and dilation 1": (
        lambda: F.conv_transpose2d(t(1, 1, 5, 5), t(1, 2, 3, 3), output_padding=(0, 1)), ArgumentError,
        "output padding must be smaller than either stride or dilation"),
    "channel mismatch": (lambda: F.conv_transpose2d(t(1, 4, 5, 5), t(3, 3, 3, 3)), ArgumentError,
                         re.escape("Given transposed=1, weight of size [3, 3, 3, 3], expected input[1, 4, 5, 5] to "
                                   "have 3 channels, but got 4 channels instead")),
    "bias shape": (lambda: F.conv_transpose2d(t(1, 4, 5, 5), t(4, 3, 3, 3), t(4)), ArgumentError,
                   re.escape("Given transposed=1, weight of size [4, 3, 3, 3], expected bias to be 1-dimensional with "
                             "3 elements, but got bias of size [4] instead")),
    "C_in % groups": (lambda: F.conv_transpose2d(t(1, 3, 5, 5), t(3, 3, 3, 3), groups=2), ArgumentError,
                      re.escape("Given groups=2, expected weight to be divisible by 2 at dimension 0, but got weight "
                                "of size [[3, 3, 3, 3]] instead")),
    "weight.size(0) < groups": (lambda: F.conv_transpose2d(t(1, 3, 5, 5), t(3, 3, 3, 3), groups=4), ArgumentError,
                                "Given groups=4, expected weight to be at least 4 at dimension 0"),
    "weight 3-D": (lambda: F.conv_transpose2d(t(1, 1, 3, 4), t(1, 2, 2)), ArgumentError,
                   "expected stride to be a single integer value or a list of 1 values"),
    "C_out = 0": (lambda: F.conv_transpose2d(t(1, 1, 3, 4), t(1, 0, 2, 2)), ArgumentError,
                  re.escape("non-empty 2D or 4D weight tensor expected, but got: [1, 0, 2, 2]")),
    "negative output size": (lambda: F.conv_transpose2d(t(1, 1, 1, 1), t(1, 1, 3, 3), padding=2), ArgumentError,
                             re.escape("Given input size per channel: (1 x 1). Calculated output size per channel: "
                                       "(-1 x -1). Output size is too small")),
    "zero output size": (lambda: F.conv_transpose2d(t(1, 1, 3, 1), t(1, 1, 2, 2), padding=1), ArgumentError,
                         re.escape("Calculated output size per channel: (2 x 0). Output size is too small")),
    "zero spatial input": (lambda: F.conv_transpose2d(t(1, 1, 0, 4), t(1, 1, 2, 2)), ArgumentError,
                           re.escape("Only zero batch or zero channel inputs are supported, but got input shape: "
                                     "[1, 1, 0, 4]")),
    "weight dtype": (lambda: F.conv_transpose2d(t(1, 1, 3, 4), t(1, 2, 2, 2, dtype=np.float32)), DtypeError,
                     "expected scalar type Double but found Float"),
    "bias dtype": (lambda: F.conv_transpose2d(t(1, 1, 3, 4), t(1, 2, 2, 2), t(2, dtype=np.float32)), DtypeError,
                   re.escape("Input type (double) and bias type (float) should be the same")),
    "integer dtype": (lambda: F.conv_transpose2d(t(1, 1, 3, 4, dtype=np.int64), t(1, 2, 2, 2, dtype=np.int64)),
                      DtypeError, "float32 and float64 only"),
    "two devices": (lambda: F.conv_transpose2d(t(1, 1, 3, 4, device="cudasim"), t(1, 2, 2, 2)), ValueError,
                    "(?i)expected all tensors to be on the same device"),
}


@pytest.mark.parametrize("case", list(CONV2D_ERRORS))
def test_conv2d_error(case):
    call, error, pattern = CONV2D_ERRORS[case]
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("case", list(CONV_TRANSPOSE2D_ERRORS))
def test_conv_transpose2d_error(case):
    call, error, pattern = CONV_TRANSPOSE2D_ERRORS[case]
    with pytest.raises(error, match=pattern):
        call()


# --------------------------------------------------------------------------- 'same' and output_size
@pytest.mark.parametrize("kernel, dilation", [((2, 2), 1), ((4, 3), 1), ((2, 4), (3, 2)), ((3, 3), 2)])
def test_same_padding_keeps_size_and_matches_torch(device, kernel, dilation):
    """Even kernels with odd dilation pad the extra row/column at the bottom/right, as PyTorch does."""
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, *kernel)), rng.standard_normal(3)]
    assert_matches_torch("conv2d", arrays, (), {"padding": "same", "dilation": dilation}, device, seed=6)
    y = F.conv2d(*(mc.tensor(a, device=device) for a in arrays), padding="same", dilation=dilation)
    assert y.shape == (2, 3, 5, 4)


@settings(max_examples=60, deadline=None)
@given(
    hw=pairs(1, 6), kernel=pairs(1, 4), stride=pairs(1, 3), padding=pairs(0, 2), dilation=pairs(1, 3),
    extra=pairs(-1, 3), batched=st.booleans(), full_shape=st.booleans(),
)
def test_output_padding_for_output_size_matches_torch(hw, kernel, stride, padding, dilation, extra, batched,
                                                      full_shape):
    """conv_transpose2d_output_padding gives nn.ConvTranspose2d(x, output_size=...)'s answer or its error."""
    leading = (1, 2) if batched else (2,)
    input_shape = (*leading, *hw)
    low = [(h - 1) * s - 2 * p + d * (k - 1) + 1 for h, k, s, p, d in zip(hw, kernel, stride, padding, dilation)]
    output_size = [max(1, lo + e) for lo, e in zip(low, extra, strict=True)]
    if full_shape:
        output_size = [*leading[:-1], 3, *output_size]
    layer = torch.nn.ConvTranspose2d(2, 3, kernel, stride, padding, dilation=dilation)
    try:
        expected = layer._output_padding(torch.zeros(input_shape), output_size, list(stride), list(padding),
                                         list(kernel), 2, list(dilation))
    except ValueError as err:
        with pytest.raises(ArgumentError, match=re.escape(str(err).split(" (for an input")[0])):
            conv_transpose2d_output_padding(input_shape, output_size, stride, padding, kernel, dilation)
        return
    assert conv_transpose2d_output_padding(input_shape, output_size, stride, padding, kernel, dilation) == tuple(
        expected
    )


def test_output_size_of_wrong_length():
    with pytest.raises(ArgumentError, match=re.escape("ConvTranspose2D: for 4D input, output_size must have 2 or 4 "
                                                      "elements (got 3)")):
        conv_transpose2d_output_padding((1, 2, 5, 5), [2, 9, 9], 2, 0, 3)


def test_output_size_out_of_range():
    with pytest.raises(ArgumentError, match=re.escape("requested an output size of [11, 11], but valid sizes range "
                                                      "from [9, 9] to [10, 10]")):
        conv_transpose2d_output_padding((1, 2, 5, 5), [11, 11], 2, 1, 3)


# --------------------------------------------------------------------------- gradcheck
GRADCHECK_CASES = {
    "conv2d strided grouped": ("conv2d", [(2, 4, 5, 6), (4, 2, 3, 2), (4,)],
                               {"stride": (2, 1), "padding": 1, "dilation": (1, 2), "groups": 2}),
    "conv2d 'same' even kernel": ("conv2d", [(1, 2, 4, 5), (3, 2, 2, 4), (3,)], {"padding": "same"}),
    "conv2d unbatched": ("conv2d", [(2, 5, 4), (3, 2, 3, 3), None], {"stride": 2, "padding": (2, 0)}),
    # 3x3 stride 1: Winograd F(2x2, 3x3) on the numba device, forward and backward-input (its channel
    # thresholds lowered below)
    "conv2d 3x3 stride 1": ("conv2d", [(2, 3, 5, 6), (4, 3, 3, 3), (4,)], {"padding": 1}),
    # 3 input channels, rows of 17 outputs (float64 vectors of 8 or 16 and one more column): the numba
    # weight gradient with pixels along the lanes
    "conv2d 3 channels, wide rows": ("conv2d", [(2, 3, 3, 17), (3, 3, 3, 3), (3,)], {"padding": 1}),
    "conv_transpose2d 3x3 stride 1": ("conv_transpose2d", [(2, 4, 3, 4), (4, 3, 3, 3), (3,)], {"padding": (0, 2)}),
    "conv_transpose2d strided": ("conv_transpose2d", [(2, 4, 3, 3), (4, 1, 3, 2), (2,)],
                                 {"stride": 2, "padding": 1, "output_padding": (1, 0), "groups": 2}),
    # kernel 4x4, stride 2, padding 1: Winograd F(2x2, 2x2) per output phase on the numba device
    "conv_transpose2d 4x4 stride 2": ("conv_transpose2d", [(2, 3, 3, 4), (3, 2, 4, 4), (2,)],
                                      {"stride": 2, "padding": 1, "output_padding": (0, 1)}),
    "conv_transpose2d output_padding >= stride": (
        "conv_transpose2d", [(1, 2, 3, 4), (2, 2, 3, 3), (2,)], {"output_padding": 1, "dilation": 2}),
    "conv_transpose2d unbatched": ("conv_transpose2d", [(3, 2, 3), (3, 2, 2, 2), None], {"stride": (1, 3)}),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck(device, case, monkeypatch):
    monkeypatch.setattr(nb_conv, "WINOGRAD_MIN_CHANNELS", (1, 1))  # Winograd on the narrow 3x3 stride-1 layers too
    monkeypatch.setattr(nb_conv, "WINOGRAD_MIN_PAIRS", 1)
    monkeypatch.setattr(nb_conv, "WINOGRAD_WEIGHT_MIN_CHANNELS", 1)  # and its weight gradient
    monkeypatch.setattr(nb_conv, "WINOGRAD_MIN_TILES", 1)  # on small inputs
    op, shapes, kwargs = GRADCHECK_CASES[case]
    rng = np.random.default_rng(7)
    inputs = [None if s is None else mc.tensor(rng.standard_normal(s), device=device, requires_grad=True)
              for s in shapes]
    assert gradcheck(lambda *ts: OPS[op][0](*ts, **kwargs), inputs)
