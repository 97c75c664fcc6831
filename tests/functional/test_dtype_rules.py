"""PyTorch's dtype rules (issue 16, item 9), with PyTorch as the oracle for every case.

Integer arrays keep their dtype as tensors, so an op that wants int64 (max_unpool2d's indices,
cross_entropy's class targets) raises where PyTorch raises, naming the argument and the dtype. Where
PyTorch promotes float32 with float64 (the regression losses, probability targets, arithmetic) minicv
gives the same dtype and values, and each gradient in its own tensor's dtype; where PyTorch does not
(matmul, linear, batch_norm, conv weights) both raise.
"""

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import minicv as mc
import minicv.functional as F
from minicv.errors import DtypeError
from tests.conftest import CPU_DEVICES, tolerances

INTEGER_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8]


@pytest.mark.parametrize("dtype", INTEGER_DTYPES + [np.bool_, np.float32, np.float64])
def test_arrays_keep_their_dtype(dtype):
    array = np.ones(3, dtype)
    assert mc.tensor(array).dtype == dtype
    assert mc.tensor(array).numpy().dtype == torch.from_numpy(array).numpy().dtype


def test_python_numbers_take_torch_default_dtypes():
    for value in (3, [1, 2], 2.5, [1.0, 2.0], True):
        assert str(mc.tensor(value).dtype) == str(torch.tensor(value).dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- PyTorch raises => minicv raises
def rand(lib, *shape, dtype=np.float32):
    array = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return torch.from_numpy(array) if lib is torch else mc.tensor(array)


def full(lib, *shape, dtype=np.int64):
    array = np.zeros(shape, dtype)
    return torch.from_numpy(array) if lib is torch else mc.tensor(array)


def functional(lib):
    return TF if lib is torch else F


# name: (call(lib), minicv message pattern: it names the argument or PyTorch's wording of it, and the dtype)
RAISES = {
    **{f"max_unpool2d indices {np.dtype(d)}": (
        lambda lib, d=d: functional(lib).max_unpool2d(rand(lib, 1, 1, 2, 2), full(lib, 1, 1, 2, 2, dtype=d), 2),
        rf"indices should be type int64 but got: \w+ \(argument 'indices' is {np.dtype(d)}\)")
       for d in (np.int32, np.int16, np.int8, np.uint8)},
    **{f"cross_entropy target {np.dtype(d)} input {shape}": (
        lambda lib, d=d, shape=shape: functional(lib).cross_entropy(
            rand(lib, *shape), full(lib, *((shape[0],) if len(shape) > 1 else ()), *shape[2:], dtype=d)),
        "expected target dtype to be Long or Byte, but got (Int|Short|Char|Bool)")
       for d in (np.int32, np.int16, np.int8, np.bool_) for shape in ((5,), (3, 5), (2, 5, 4), (2, 5, 3, 3))},
    "cross_entropy uint8 spatial target": (
        lambda lib: functional(lib).cross_entropy(rand(lib, 2, 5, 3, 3), full(lib, 2, 3, 3, dtype=np.uint8)),
        "expected scalar type Long but found Byte"),
    "cross_entropy class weight float64": (
        lambda lib: functional(lib).cross_entropy(rand(lib, 3, 4), full(lib, 3), weight=rand(lib, 4, dtype=np.float64)),
        "weight of dtype float32 like input, but got float64"),
    "conv2d weight float64": (
        lambda lib: functional(lib).conv2d(rand(lib, 1, 1, 3, 3), rand(lib, 1, 1, 2, 2, dtype=np.float64)),
        "weight is float64, input is float32"),
    "conv2d bias float64": (
        lambda lib: functional(lib).conv2d(rand(lib, 1, 1, 3, 3), rand(lib, 1, 1, 2, 2),
                                           rand(lib, 1, dtype=np.float64)),
        "bias is float64, input is float32"),
    "matmul float64": (lambda lib: rand(lib, 2, 3) @ rand(lib, 3, 4, dtype=np.float64),
                       "other of dtype float32 like input, but got float64"),
    "linear weight float64": (lambda lib: functional(lib).linear(rand(lib, 2, 3), rand(lib, 4, 3, dtype=np.float64)),
                              "weight of dtype float32 like input, but got float64"),
    "linear bias float64": (
        lambda lib: functional(lib).linear(rand(lib, 2, 3), rand(lib, 4, 3), rand(lib, 4, dtype=np.float64)),
        "bias of dtype float32 like input, but got float64"),
    **{f"batch_norm {name} float64": (
        lambda lib, name=name: functional(lib).batch_norm(
            rand(lib, 4, 3), rand(lib, 3, dtype=np.float64 if name == "running_mean" else np.float32).abs(),
            rand(lib, 3, dtype=np.float64 if name == "running_var" else np.float32).abs(),
            weight=rand(lib, 3, dtype=np.float64 if name == "weight" else np.float32),
            bias=rand(lib, 3, dtype=np.float64 if name == "bias" else np.float32), training=True),
        f"{name} of dtype float32 like input, but got float64")
       for name in ("running_mean", "running_var", "weight", "bias")},
    "mean of int32": (lambda lib: rand(lib, 3).to(torch.int32).mean() if lib is torch
                      else F.mean(full(lib, 3, dtype=np.int32)), '"mean" not implemented for input of dtype int32'),
}


@pytest.mark.parametrize("name", list(RAISES))
def test_raises_where_torch_raises(name):
    call, pattern = RAISES[name]
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        call(torch)
    with pytest.raises(DtypeError, match=pattern):
        call(mc)


# --------------------------------------------------------------------------- PyTorch promotes => minicv promotes
def run(lib, fn, arrays: list, device: str):
    """fn's output, and the gradient of every float operand for an upstream gradient of ones."""
    if lib is torch:
        tensors = [torch.from_numpy(a).requires_grad_(a.dtype.kind == "f") for a in arrays]
    else:
        tensors = [mc.tensor(a, device=device, requires_grad=a.dtype.kind == "f") for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # broadcast targets
        y = fn(functional(lib), *tensors)
    y.backward(torch.ones_like(y) if lib is torch else np.ones(y.shape))
    grads = [t.grad for t in tensors if t.requires_grad]
    return y.detach().numpy(), [g.numpy() for g in grads]


def arrays(*specs):
    rng = np.random.default_rng(1)
    return [rng.standard_normal(shape).astype(dtype) for shape, dtype in specs]


F32, F64 = np.float32, np.float64
PROMOTES = {
    **{f"{loss} {reduction} {np.dtype(a)}-{np.dtype(b)}": (
        lambda f, x, t, loss=loss, reduction=reduction: getattr(f, loss)(x, t, reduction=reduction),
        arrays(((3, 4), a), ((3, 4), b)))
       for loss in ("mse_loss", "l1_loss", "smooth_l1_loss") for reduction in ("mean", "sum", "none")
       for a, b in ((F32, F64), (F64, F32))},
    **{f"{loss} broadcast float64 target": (lambda f, x, t, loss=loss: getattr(f, loss)(x, t),
                                            arrays(((3, 4), F32), ((4,), F64)))
       for loss in ("mse_loss", "l1_loss", "smooth_l1_loss")},
    **{f"{loss} float64 weight": (lambda f, x, t, w, loss=loss: getattr(f, loss)(x, t, weight=w.abs()),
                                  arrays(((3, 4), F32), ((3, 4), F32), ((3, 4), F64)))
       for loss in ("mse_loss", "l1_loss")},
    "cross_entropy probabilities float64 target": (lambda f, x, t: f.cross_entropy(x, f.softmax(t, 1)),
                                                   arrays(((3, 4), F32), ((3, 4), F64))),
    "cross_entropy probabilities float64 input": (lambda f, x, t: f.cross_entropy(x, f.softmax(t, 1)),
                                                  arrays(((3, 4), F64), ((3, 4), F32))),
    "cross_entropy probabilities float64 weight": (
        lambda f, x, t, w: f.cross_entropy(x, f.softmax(t, 1), weight=w.abs(), label_smoothing=0.1),
        arrays(((2, 4, 3), F32), ((2, 4, 3), F32), ((4,), F64))),
    "add": (lambda f, a, b: a + b, arrays(((2, 3), F32), ((2, 3), F64))),
    "mul broadcast": (lambda f, a, b: a * b, arrays(((2, 3), F64), ((3,), F32))),
    "sub 0-dim float64 keeps float32": (lambda f, a, b: a - b, arrays(((2, 3), F32), ((), F64))),
    "div 0-dim float32 by float64": (lambda f, a, b: a / b, arrays(((), F32), ((2,), F64))),
    "cat": (lambda f, a, b: (torch.cat if f is TF else F.cat)([a, b]), arrays(((2,), F32), ((3,), F64))),
    "loss of a float32 conv against a float64 target": (
        lambda f, x, w, t: f.mse_loss(f.conv2d(x, w), t), arrays(((1, 2, 4, 4), F32), ((3, 2, 3, 3), F32),
                                                                  ((1, 3, 2, 2), F64))),
}


@pytest.mark.parametrize("device", CPU_DEVICES)
@pytest.mark.parametrize("name", list(PROMOTES))
def test_promotes_where_torch_promotes(device, name):
    fn, operands = PROMOTES[name]
    y, grads = run(mc, fn, operands, device)
    expected_y, expected_grads = run(torch, fn, operands, device)
    assert y.dtype == expected_y.dtype
    np.testing.assert_allclose(y, expected_y, **tolerances(np.float32))
    for i, (g, expected) in enumerate(zip(grads, expected_grads, strict=True)):
        assert g.dtype == expected.dtype == operands[i].dtype, f"gradient {i}"
        np.testing.assert_allclose(g, expected, **tolerances(np.float32), err_msg=f"gradient {i}")


@pytest.mark.parametrize("expression", [
    "a + b", "a * 2.5", "2 / a", "a / b", "a - 1", "a + c", "c * 1.5", "b + c",
])
@pytest.mark.parametrize("dtypes", [(np.int32, np.int64, np.float32), (np.uint8, np.int8, np.float64),
                                    (np.int16, np.float32, np.int64)])
def test_arithmetic_result_dtype_is_torch_result_type(expression, dtypes):
    """Integers keep their dtype through arithmetic (int32 + int32 is int32) and meet floats as PyTorch
    does: int32 + float32 is float32 (NumPy: float64), int32 * 2.5 is float32, int / int a float32."""
    values = {name: np.arange(1, 4).astype(d) for name, d in zip("abc", dtypes, strict=True)}
    expected = eval(expression, {}, {k: torch.from_numpy(v) for k, v in values.items()})  # noqa: S307
    actual = eval(expression, {}, {k: mc.tensor(v) for k, v in values.items()})  # noqa: S307
    assert actual.dtype == expected.numpy().dtype, expression
    np.testing.assert_array_equal(actual.numpy(), expected.numpy())


def test_unpool_message_names_argument_and_dtype():
    with pytest.raises(DtypeError, match=re.escape("should be type int64 but got: Int (argument 'indices' is int32)")):
        F.max_unpool2d(mc.zeros(1, 1, 2, 2), mc.tensor(np.zeros((1, 1, 2, 2), np.int32)), 2)
