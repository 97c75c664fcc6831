"""Tensor: construction, properties, conversion, moving between devices, operators (against torch)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import minicv as mc
from minicv.errors import ArgumentError, DtypeError
from tests.conftest import CPU_DEVICES, tolerances


def test_python_floats_become_float32_and_arrays_keep_their_dtype():
    assert mc.tensor([1.0, 2.0]).dtype == np.float32
    assert mc.tensor(np.zeros(2)).dtype == np.float64
    assert mc.tensor(np.zeros(2, np.float32)).dtype == np.float32
    assert mc.tensor([1, 2]).dtype == np.int64
    assert mc.tensor([1.0], dtype=np.float64).dtype == np.float64


def test_tensor_copies_its_data():
    data = np.zeros(3)
    t = mc.tensor(data)
    data[0] = 1
    assert t.data[0] == 0


def test_shape_dtype_ndim_size_len():
    t = mc.zeros(2, 3, 4, dtype=np.float64)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.dtype == np.float64 and t.ndim == 3 and t.dim() == 3
    assert t.size == t.numel() == 24 and len(t) == 2
    assert mc.ones((5,)).shape == (5,)


def test_item_and_its_errors():
    assert mc.tensor([[2.5]]).item() == 2.5
    assert isinstance(mc.tensor(3).item(), int)
    assert mc.tensor(2.0, requires_grad=True).item() == 2.0
    with pytest.raises(ValueError, match="one element"):
        mc.tensor([1.0, 2.0]).item()


def test_numpy_round_trip_and_requires_grad_guard():
    data = np.arange(6.0).reshape(2, 3)
    t = mc.tensor(data, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        t.numpy()
    out = t.detach().numpy()
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, data)
    assert t.tolist() == data.tolist()


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating point"):
        mc.tensor([1, 2], requires_grad=True)


def test_unknown_device_names_list_the_known_ones():
    with pytest.raises(ArgumentError, match=r"unknown device 'tpu'.*numpy.*numba \(cpu\).*cudasim.*cuda \(gpu\)"):
        mc.tensor([1.0], device="tpu")
    with pytest.raises(RuntimeError):  # PyTorch raises RuntimeError for a bad device string
        mc.zeros(2).to("tpu")
    with pytest.raises(TypeError, match="device name"):
        mc.get_device(3)


def test_the_library_default_device_is_numba_and_the_suite_pins_numpy():
    """The library's default (DEFAULT_DEVICE, seen in a fresh process) is numba, 'cpu'; conftest makes
    the spec the default of tests that name no device."""
    script = ("import minicv as mc, minicv.nn as nn; "
              "print(mc.tensor([1.0]).device.name, nn.Conv2d(1, 1, 1).weight.device.name)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["numba", "numba"]
    assert mc.tensor([1.0]).device.name == "numpy"


def test_aliases_name_the_same_device():
    assert mc.get_device("cpu") is mc.get_device("numba")
    assert mc.tensor([1.0], device="cpu").device.name == "numba"


@pytest.mark.parametrize("source", CPU_DEVICES)
@pytest.mark.parametrize("target", CPU_DEVICES)
def test_to_moves_data_and_is_differentiable(source, target):
    x = mc.tensor(np.arange(6.0).reshape(2, 3), device=source, requires_grad=True)
    y = x.to(target)
    assert y.device.name == target and y.requires_grad
    np.testing.assert_array_equal(y.detach().numpy(), x.detach().numpy())
    (y * mc.tensor(np.full((2, 3), 3.0), device=target)).sum().backward()
    assert x.grad.device.name == source
    np.testing.assert_array_equal(x.grad.numpy(), 3.0)


def test_to_another_device_copies():
    x = mc.tensor(np.zeros(3), device="numpy")
    y = x.to("cudasim")
    y.data[0] = 5
    assert x.data[0] == 0


def test_to_same_device_and_dtype_is_self():
    x = mc.zeros(2)
    assert x.to("numpy") is x and x.to(dtype=np.float32) is x


def test_to_dtype_is_differentiable_and_grad_keeps_the_source_dtype(device):
    x = mc.tensor(np.arange(3.0, dtype=np.float32), device=device, requires_grad=True)
    y = x.double()
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.arange(3.0))


def test_ops_on_two_devices_raise(device):
    other = "numpy" if device != "numpy" else "cudasim"
    a, b = mc.ones(2, device=device), mc.ones(2, device=other)
    with pytest.raises(ArgumentError, match="same device"):
        a + b
    with pytest.raises(RuntimeError, match="same device"):  # as PyTorch's RuntimeError
        mc.functional.cat([a, b])


def test_repr_shows_values_dtype_device_and_grad():
    text = repr(mc.tensor([1.5, 2.0], requires_grad=True))
    assert "1.5" in text and "float32" in text and "requires_grad=True" in text
    assert "cudasim" in repr(mc.zeros(1, device="cudasim"))


def test_dlpack_round_trip():
    x = mc.tensor(np.arange(4.0))
    y = mc.from_dlpack(x)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_array_equal(torch.from_dlpack(x).numpy(), x.numpy())


OPERATORS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "radd": lambda a, b: 2.5 + b,
    "rsub": lambda a, b: 2.5 - b,
    "rmul": lambda a, b: 2.5 * b,
    "rdiv": lambda a, b: 2.5 / b,
    "neg": lambda a, b: -a,
    "pow": lambda a, b: b**3,
    "matmul": lambda a, b: a @ b.T,
}


@pytest.mark.parametrize("name", OPERATORS)
def test_operators_match_torch_forward_and_backward(device, dtype, name):
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((6, 4)).astype(dtype)
    b_np = (rng.uniform(0.5, 2.0, (6, 4)) * rng.choice([-1, 1], (6, 4))).astype(dtype)  # away from 0 for div
    a, b = (mc.tensor(v, device=device, requires_grad=True) for v in (a_np, b_np))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a_np, b_np))
    y, ty = OPERATORS[name](a, b), OPERATORS[name](ta, tb)
    assert y.dtype == dtype and y.shape == tuple(ty.shape)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), **tolerances(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(g)
    ty.backward(torch.tensor(g))
    for t, tt in ((a, ta), (b, tb)):
        if tt.grad is None:
            assert t.grad is None
        else:
            np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), **tolerances(dtype))


@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [((3, 1, 5), (4, 1)), ((1,), (2, 3)), ((2, 3), ()), ((1, 3, 1), (2, 1, 4)), ((4,), (3, 4))],
)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_broadcasting_un_broadcasts_gradients_like_torch(device, shape_a, shape_b, op):
    rng = np.random.default_rng(1)
    a_np, b_np = rng.standard_normal(shape_a), rng.uniform(1, 2, shape_b)
    a, b = (mc.tensor(v, device=device, requires_grad=True) for v in (a_np, b_np))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a_np, b_np))
    y, ty = OPERATORS[op](a, b), OPERATORS[op](ta, tb)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    assert a.grad.shape == shape_a and b.grad.shape == shape_b
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-10)


def test_python_numbers_do_not_promote_float32():
    x = mc.ones(2)
    assert (x * 2.5).dtype == np.float32 and (1 - x).dtype == np.float32 and (x / 3).dtype == np.float32


def test_comparisons_give_boolean_tensors_outside_the_graph():
    x = mc.tensor([1.0, 2.0, 3.0], requires_grad=True)
    mask = x > 1.5
    assert mask.dtype == bool and not mask.requires_grad
    assert mask.tolist() == [False, True, True]
    assert (x <= 2).tolist() == [True, True, False]


def test_integer_inputs_are_rejected_by_float_ops():
    with pytest.raises(DtypeError, match="floating point"):
        mc.functional.relu(mc.tensor([1, 2]))
