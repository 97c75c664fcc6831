"""Strides larger than the input (issue 16, item 4): conv2d, conv_transpose2d and max_pool2d agree with
PyTorch on every CPU device, and memory and time do not grow with the stride.

A stride past the padded input leaves one output along its axis; that output reads the same taps
whatever the stride. PyTorch's own CPU conv is unreliable there: its conv2d backward takes seconds at 10^4
and 10^9 and crashes (segmentation fault) at 3 * 10^4; its float64 conv_transpose2d sometimes raises
"stride should be greater than zero, but got stride_height: 0" at 10^4 and always at 2^40 (it truncates the
stride to 32 bits), and its float32 one takes 15 s at 10^9. The reference is therefore PyTorch's conv2d at
the stride itself from 2^31 on (milliseconds there), and otherwise PyTorch at stride REFERENCE along the
axes whose stride passes the input: past every padded input here too, so the same one output.

A padding past the kernel's reach d(k-1) holds windows that read zeros only: conv2d hands the kernels the
rows and columns the other windows read (minicv.functional.conv.window_crop), so memory and time do not
grow with the padding either; PyTorch takes milliseconds there, and is the reference at the padding itself.
"""

import tracemalloc
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import minicv as mc
import minicv.functional as F
from minicv.errors import ArgumentError
from tests.conftest import CPU_DEVICES, tolerances

HUGE = (10**4, 3 * 10**4, 10**9, 2**31, 2**40)
REFERENCE = 100  # past the padded inputs of CASES, which are under 10 wide

# (op, input shape, weight shape, kwargs with stride S where the stride passes the input)
CASES = [
    ("conv2d", (2, 3, 5, 5), (4, 3, 3, 3), {"stride": "S"}),
    ("conv2d", (2, 4, 5, 7), (6, 2, 2, 3), {"stride": ("S", 2), "padding": 1, "dilation": (1, 2), "groups": 2}),
    ("conv2d", (1, 2, 3, 3), (3, 2, 3, 3), {"stride": "S"}),  # a 1x1 output of a 3x3 layer (winograd's kernel)
    ("conv_transpose2d", (2, 3, 1, 1), (3, 4, 3, 3), {"stride": "S"}),
    ("conv_transpose2d", (2, 3, 1, 4), (3, 2, 2, 3), {"stride": ("S", 2), "output_padding": (2, 1), "padding": 1}),
]


def substituted(kwargs: dict, values: dict[str, int]) -> dict:
    """kwargs with each placeholder ("S", "P") replaced by its value, in pairs too."""
    def value(v: Any) -> Any:
        return values.get(v, v) if isinstance(v, str) else v
    return {k: tuple(map(value, v)) if isinstance(v, tuple) else value(v) for k, v in kwargs.items()}


def with_stride(kwargs: dict, stride: int) -> dict:
    return substituted(kwargs, {"S": stride})


def torch_run(op: str, x: np.ndarray, w: np.ndarray, kwargs: dict, gy: np.ndarray):
    """PyTorch's output and the gradients of x and w for the upstream gradient gy."""
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = getattr(TF, op)(tx, tw, **kwargs)
    y.backward(torch.from_numpy(gy))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()


@pytest.mark.parametrize("device", CPU_DEVICES)
@pytest.mark.parametrize("stride", HUGE)
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case[0]}-{case[1]}")
def test_huge_stride_matches_torch(device, stride, case):
    op, x_shape, w_shape, kwargs = case
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    tx, tw = mc.tensor(x, device=device, requires_grad=True), mc.tensor(w, device=device, requires_grad=True)
    y = getattr(F, op)(tx, tw, **with_stride(kwargs, stride))
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    reference = stride if op == "conv2d" and stride >= 2**31 else REFERENCE
    expected_y, gx, gw = torch_run(op, x, w, with_stride(kwargs, reference), gy)
    assert y.shape == expected_y.shape
    np.testing.assert_allclose(y.detach().numpy(), expected_y, **tolerances(np.float64))
    np.testing.assert_allclose(tx.grad.numpy(), gx, **tolerances(np.float64), err_msg="input")
    np.testing.assert_allclose(tw.grad.numpy(), gw, **tolerances(np.float64), err_msg="weight")


@pytest.mark.parametrize("stride", [1000, 10**9])
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_numba_memory_does_not_grow_with_the_stride(op, stride):
    """The issue's layer in float32: the phase-split buffers once grew with stride^2 (24 MB at 1000, 2.4 GB
    at 10^4, a MemoryError or the OOM killer at 3 * 10^4, a ValueError at 10^9); now they hold a few copies
    of the small input. (Strides whose old buffers fail fast or stay small: a test run without the fix
    must not take the machine's memory.)"""
    x_hw, w_shape = ((5, 5), (4, 3, 3, 3)) if op == "conv2d" else ((1, 1), (3, 4, 3, 3))
    x = mc.ones(2, 3, *x_hw, device="numba", requires_grad=True)
    w = mc.ones(*w_shape, device="numba", requires_grad=True)
    getattr(F, op)(x, w, stride=3).sum().backward()  # compile (and cache) outside the measurement
    tracemalloc.start()
    try:
        getattr(F, op)(x, w, stride=stride).sum().backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{op} at stride {stride} allocated {peak} bytes at its peak"


@pytest.mark.parametrize("device", CPU_DEVICES)
@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 3, "stride": 2**31 - 1},
    {"kernel_size": 3, "stride": 10**9, "padding": 1, "ceil_mode": True},
    {"kernel_size": 2, "stride": (2**31 - 1, 2), "dilation": 2},
])
def test_max_pool2d_huge_stride_matches_torch(device, kwargs):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7))
    tx = mc.tensor(x, device=device, requires_grad=True)
    y, indices = F.max_pool2d(tx, return_indices=True, **kwargs)
    gy = np.arange(y.size, dtype=np.float64).reshape(y.shape)
    y.backward(gy)
    torch_x = torch.from_numpy(x).requires_grad_()
    expected_y, expected_indices = TF.max_pool2d(torch_x, return_indices=True, **kwargs)
    expected_y.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(y.detach().numpy(), expected_y.detach().numpy())
    np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())
    np.testing.assert_array_equal(tx.grad.numpy(), torch_x.grad.numpy())


@pytest.mark.parametrize("device", CPU_DEVICES)
@pytest.mark.parametrize("name", ["kernel_size", "stride", "padding", "dilation"])
@pytest.mark.parametrize("value", [2**31, 2**40, -(2**31) - 1])
def test_max_pool2d_int32_overflow_raises_as_torch(device, name, value):
    """PyTorch's max_pool2d takes 32-bit ints and raises past them; so does minicv, on every device."""
    kwargs = {"kernel_size": 3, name: value}
    with pytest.raises(RuntimeError, match="cannot be converted to type int without overflow"):
        TF.max_pool2d(torch.ones(1, 1, 5, 5), **kwargs)
    with pytest.raises(ArgumentError, match=f"without overflow: {name}={value}"):
        F.max_pool2d(mc.ones(1, 1, 5, 5, device=device), **kwargs)


# (input shape, weight shape, kwargs): paddings past the reach, with windows that read the input on both
# sides, on one side, or none; 'P' is a huge padding and 'S' a stride past it
PADDED = [
    ((2, 3, 4, 5), (4, 3, 3, 3), {"stride": "S", "padding": "P"}),  # one window, wholly in the padding
    ((2, 3, 4, 5), (4, 3, 3, 3), {"stride": "P", "padding": "P"}),  # 3 x 3 windows: only the middle one reads
    ((2, 4, 5, 7), (6, 2, 1, 3), {"stride": (1, "P"), "padding": (2, "P"), "groups": 2}),  # rows 2 .. 6 read
    ((1, 2, 6, 6), (3, 2, 2, 2), {"stride": 2, "padding": 3, "dilation": 2}),
    ((2, 3, 4, 4), (2, 3, 1, 1), {"padding": 1}),  # a 1x1 layer's padded border: the bias alone
]


@pytest.mark.parametrize("device", CPU_DEVICES)
@pytest.mark.parametrize("padding", [10**4, 10**9])
@pytest.mark.parametrize("case", PADDED, ids=lambda case: f"{case[0]}-{case[2]}")
def test_padding_past_the_kernels_reach_matches_torch(device, padding, case):
    x_shape, w_shape, kwargs = case
    kwargs = substituted(kwargs, {"P": padding, "S": 3 * padding})
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    tx, tw, tb = (mc.tensor(a, device=device, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(tx, tw, tb, **kwargs)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    torch_x, torch_w, torch_b = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    expected = TF.conv2d(torch_x, torch_w, torch_b, **kwargs)
    expected.backward(torch.from_numpy(gy))
    assert y.shape == tuple(expected.shape)
    np.testing.assert_allclose(y.detach().numpy(), expected.detach().numpy(), **tolerances(np.float64))
    for name, ours, theirs in (("input", tx, torch_x), ("weight", tw, torch_w), ("bias", tb, torch_b)):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), **tolerances(np.float64), err_msg=name)


@pytest.mark.parametrize("device", CPU_DEVICES)
def test_memory_does_not_grow_with_the_padding(device):
    """A 4x4 input at padding 10^4 and stride 10^5 ran out of memory on numpy (a padded copy of 1.6 GB) and
    numba (its phase split, 10^10 phases); now nothing is allocated beyond the small arrays themselves."""
    x = mc.ones(2, 3, 4, 4, device=device, requires_grad=True)
    w = mc.ones(4, 3, 3, 3, device=device, requires_grad=True)
    F.conv2d(x, w, stride=2, padding=3).sum().backward()  # compile (and cache) the crop's kernels outside
    tracemalloc.start()
    try:
        F.conv2d(x, w, stride=10**5, padding=10**4).sum().backward()
        F.conv2d(x, w, stride=(10**4, 2), padding=(10**4, 3)).sum().backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"conv2d at padding 10^4 allocated {peak} bytes at its peak"
