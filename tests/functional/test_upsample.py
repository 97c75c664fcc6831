"""minicv.functional.interpolate ('nearest', 'nearest-exact') against PyTorch, on every device.

The source indices must equal torch 2.13's CPU kernels exactly (float32/float64 paths, short-cuts), so
they are fuzzed against torch on thousands of configurations; values and gradients are compared on
hypothesis-drawn inputs and PyTorch's OpInfo samples. The backward is the exact adjoint of minicv's own
forward (torch's CPU backward is not, where its forward took the generic path: section 4).
"""

import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

import minicv as mc
import minicv.functional as F
from minicv.errors import ArgumentError, DtypeError, UnsupportedError
from minicv.gradcheck import gradcheck
from tests.functional.test_pooling import (
    SETTINGS,
    as_numpy,
    bind,
    compare_with_torch,
    dtypes,
    opinfo_samples,
    seeds,
)
from tests.reference import assert_close

MODES = ("nearest", "nearest-exact")


def random_config(rng: random.Random) -> tuple[tuple[int, ...], type, str, dict]:
    """A random (input shape, dtype, mode, kwargs): sizes or scales near the short-cut and rounding cases."""
    rank = rng.choice([3, 4, 4, 5])
    spatial = tuple(rng.randint(1, 70 if rank < 5 else 12) for _ in range(rank - 2))
    if rank == 4 and rng.random() < 0.3:  # large outputs: the generic kernel in 2-D as well
        spatial = (1, rng.randint(1, 300))
    if rng.random() < 0.4:
        kwargs = {"size": [rng.choice([rng.randint(1, 400 if rank < 5 else 30), n, 2 * n, n + 1]) for n in spatial]}
    else:
        kwargs = {"scale_factor": [rng.choice([round(rng.uniform(0.1, 4), rng.randint(1, 4)), 2.0, 1.0, 1.09, 1 / 3,
                                               0.6, 1.7, 6.65, rng.randint(1, 60) / rng.randint(1, 60)])
                                   for _ in spatial],
                  "recompute_scale_factor": rng.choice([None, True, False])}
    return (1, 1, *spatial), rng.choice([np.float32, np.float64]), rng.choice(MODES), kwargs


def test_source_indices_equal_torch_on_thousands_of_configurations():
    """Interpolating arange(H*W) reveals the source index of every output element."""
    rng, checked = random.Random(0), 0
    while checked < 3000:
        shape, dtype, mode, kwargs = random_config(rng)
        x = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
        try:
            expected = TF.interpolate(torch.from_numpy(x), mode=mode, **kwargs)
        except RuntimeError:  # output size 0
            with pytest.raises(ArgumentError):
                F.interpolate(mc.tensor(x), mode=mode, **kwargs)
            continue
        actual = F.interpolate(mc.tensor(x), mode=mode, **kwargs).numpy()
        assert actual.shape == tuple(expected.shape), (shape, dtype, mode, kwargs)
        assert np.array_equal(actual, expected.numpy()), (shape, dtype, mode, kwargs)
        checked += 1


@pytest.mark.parametrize(("shape", "kwargs", "rows"), [
    ((1, 1, 10), {"scale_factor": 1.09}, [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),  # 1-D: generic, no short-cut
    ((1, 1, 1, 10), {"scale_factor": 1.09}, list(range(10))),  # 2-D small output: out == in short-cut
    ((1, 1, 4), {"scale_factor": 0.6}, [0, 1]),  # the kernel uses 1 / 0.6
    ((1, 1, 4), {"scale_factor": 0.6, "recompute_scale_factor": True}, [0, 2]),  # in / out
])
def test_documented_index_cases(shape, kwargs, rows):
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    assert F.interpolate(mc.tensor(x), **kwargs).numpy().ravel().tolist() == rows


@st.composite
def cases(draw):
    rank = draw(st.sampled_from([3, 4, 5]))
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), *(draw(st.integers(1, 6)) for _ in range(rank - 2)))
    if draw(st.booleans()):
        size = [draw(st.integers(1, 10)) for _ in range(rank - 2)]
        kwargs = {"size": size if draw(st.booleans()) or rank == 3 else size[0]}
    else:
        scale = [draw(st.floats(0.3, 3.5)) for _ in range(rank - 2)]
        kwargs = {"scale_factor": scale if draw(st.booleans()) else scale[0],
                  "recompute_scale_factor": draw(st.sampled_from([None, True, False]))}
    return shape, draw(st.sampled_from(MODES)), kwargs


def torch_index_map(shape, dtype, mode, kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(forward map, backward map) of torch: where each output element reads, and where its gradient goes."""
    plane = torch.arange(float(np.prod(shape[2:])), dtype=torch.from_numpy(np.zeros(0, dtype)).dtype)
    plane = plane.reshape(1, 1, *shape[2:]).requires_grad_()
    forward = TF.interpolate(plane, mode=mode, **kwargs)
    grads = []
    for k in range(forward.numel()):  # one-hot upstream gradients reveal the backward's target
        onehot = torch.zeros(forward.numel(), dtype=plane.dtype)
        onehot[k] = 1
        (grad,) = torch.autograd.grad(forward, plane, onehot.reshape(forward.shape), retain_graph=True)
        grads.append(int(grad.flatten().argmax()))
    return forward.detach().flatten().long().numpy(), np.array(grads, dtype=np.int64)


@SETTINGS
@given(case=cases(), dtype=dtypes, seed=seeds)
def test_interpolate_matches_torch(device, case, dtype, seed):
    shape, mode, kwargs = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    try:
        TF.interpolate(torch.from_numpy(x), mode=mode, **kwargs)
    except RuntimeError:
        assume(False)
    forward_map, backward_map = torch_index_map(shape, dtype, mode, kwargs)
    # torch's backward is the adjoint of its forward except where their index paths differ (section 4).
    compare_with_torch(bind(F.interpolate, mode=mode, **kwargs), bind(TF.interpolate, mode=mode, **kwargs), [x],
                       device, seed, grad=(bool(np.array_equal(forward_map, backward_map)),))


def test_backward_is_the_adjoint_of_the_forward(device, dtype):
    """<interpolate(x), g> == <x, grad> for a case where torch's own backward is not the adjoint."""
    x = np.random.default_rng(0).standard_normal((2, 3, 10)).astype(dtype)
    t = mc.tensor(x, device=device, requires_grad=True)
    y = F.interpolate(t, scale_factor=1.09)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    y.backward(g)
    np.testing.assert_allclose(np.sum(y.detach().numpy() * g), np.sum(x * t.grad.numpy()), rtol=1e-5)
    assert t.grad.numpy()[..., 9].tolist() == np.zeros((2, 3)).tolist()  # input 9 is never read


@pytest.mark.parametrize("mode", MODES)
def test_interpolate_gradcheck(device, mode):
    x = mc.tensor(np.random.default_rng(2).standard_normal((1, 2, 4, 5)), device=device, requires_grad=True)
    assert gradcheck(lambda a: F.interpolate(a, size=(7, 3), mode=mode), [x])
    assert gradcheck(lambda a: F.interpolate(a, scale_factor=(0.6, 1.7), mode=mode), [x])


@pytest.mark.parametrize("mode", MODES)
def test_interpolate_opinfo_samples(device, mode):
    samples = opinfo_samples("nn.functional.interpolate", mode)
    assert samples
    for i, (x, args, kwargs) in enumerate(samples):
        x = as_numpy(x)
        index_kwargs = {k: v for k, v in kwargs.items() if k != "mode"} | ({"size": args[0]} if args else {})
        forward_map, backward_map = torch_index_map(x.shape, x.dtype, mode, index_kwargs)
        compare_with_torch(bind(F.interpolate, *args, **kwargs), bind(TF.interpolate, *args, **kwargs), [x],
                           device, i, grad=(bool(np.array_equal(forward_map, backward_map)),))


def test_empty_batch(device):
    x = mc.zeros(0, 2, 3, 4, dtype=np.float64, device=device, requires_grad=True)
    y = F.interpolate(x, scale_factor=2)
    assert y.shape == (0, 2, 6, 8)
    y.sum().backward()
    assert x.grad.shape == (0, 2, 3, 4)


def test_unsupported_mode_is_not_implemented():
    with pytest.raises(NotImplementedError, match="supported modes: 'nearest', 'nearest-exact'"):
        F.interpolate(mc.zeros(1, 1, 4, 4), size=2, mode="bilinear")


# --------------------------------------------------------------------------- errors, one per condition
def z(*shape, dtype=np.float32):
    return mc.zeros(*shape, dtype=dtype)


ERRORS = {
    "size and scale": (lambda: F.interpolate(z(1, 2, 4, 5), size=(3, 3), scale_factor=2), ArgumentError,
                       "only one of size or scale_factor should be defined"),
    "neither": (lambda: F.interpolate(z(1, 2, 4, 5)), ArgumentError, "either size or scale_factor should be defined"),
    "size length": (lambda: F.interpolate(z(1, 2, 4, 5), size=(3, 3, 3)), ArgumentError,
                    re.escape("Input and output must have the same number of spatial dimensions, but got input with "
                              "spatial dimensions of [4, 5] and output size of (3, 3, 3).")),
    "scale length": (lambda: F.interpolate(z(1, 2, 4, 5), scale_factor=(3, 3, 3)), ArgumentError,
                     re.escape("Input and scale_factor must have the same number of spatial dimensions, but got input "
                               "with spatial dimensions of [4, 5] and scale_factor of shape (3, 3, 3).")),
    "float size": (lambda: F.interpolate(z(1, 2, 4, 5), size=(3.0, 3)), TypeError,
                   re.escape("expected size to be one of int or Tuple[int] or Tuple[int, int] or Tuple[int, int, int], "
                             "but got size with types [<class 'float'>, <class 'int'>]")),
    "align_corners": (lambda: F.interpolate(z(1, 2, 4, 5), size=2, align_corners=False), ArgumentError,
                      re.escape("align_corners option can only be set with the interpolating modes: linear | "
                                "bilinear | bicubic | trilinear")),
    "recompute with size": (lambda: F.interpolate(z(1, 2, 4, 5), size=2, recompute_scale_factor=True), ArgumentError,
                            "recompute_scale_factor is not meaningful with an explicit size."),
    "antialias": (lambda: F.interpolate(z(1, 2, 4, 5), size=2, antialias=True), ArgumentError,
                  "Anti-alias option is restricted to bilinear, bicubic, and lanczos modes and requires a 4-D tensor"),
    "size 0": (lambda: F.interpolate(z(1, 2, 4, 5), size=(0, 3)), ArgumentError,
               re.escape("Input and output sizes should be greater than 0, but got input (H: 4, W: 5) output "
                         "(H: 0, W: 3)")),
    "scale to 0": (lambda: F.interpolate(z(1, 2, 4, 5), scale_factor=0.1), ArgumentError,
                   re.escape("output (H: 0, W: 0)")),
    "negative scale": (lambda: F.interpolate(z(1, 2, 4, 5), scale_factor=-3, recompute_scale_factor=True),
                       ArgumentError, re.escape("output (H: -12, W: -15)")),
    "infinite scale": (lambda: F.interpolate(z(1, 2, 4, 5), scale_factor=float("inf")), ArgumentError,
                       "scale_factor must be finite"),
    "zero input height": (lambda: F.interpolate(z(1, 2, 0, 5), size=(3, 3)), ArgumentError,
                          re.escape("but got input (H: 0, W: 5) output (H: 3, W: 3)")),
    "zero input length (1-D)": (lambda: F.interpolate(z(2, 3, 0), size=3), ArgumentError,
                                re.escape("but got input (W: 0) and output (W: 3)")),
    "zero channels": (lambda: F.interpolate(z(2, 0, 4, 5), size=(3, 3)), ArgumentError,
                      re.escape("Non-empty 4D data tensor expected but got a tensor with sizes [2, 0, 4, 5]")),
    "rank 2": (lambda: F.interpolate(z(4, 5), size=3), UnsupportedError,
               re.escape("Only 3D, 4D and 5D input Tensors supported (got 2D) for the modes: nearest | linear | "
                         "bilinear | bicubic | trilinear | lanczos | area | nearest-exact (got nearest)")),
    "rank 6": (lambda: F.interpolate(z(1, 1, 1, 2, 2, 2), size=3), UnsupportedError, re.escape("(got 6D)")),
    "zero input depth (3-D)": (lambda: F.interpolate(z(1, 1, 0, 2, 2), size=3), ArgumentError,
                               re.escape("but got input (D: 0, H: 2, W: 2) output (D: 3, H: 3, W: 3)")),
    "unknown mode": (lambda: F.interpolate(z(1, 2, 4, 5), size=3, mode="bilinear2"), UnsupportedError,
                     "mode='bilinear2' is not supported"),
    "integer input": (lambda: F.interpolate(mc.tensor(np.zeros((1, 1, 2, 2), np.int64)), size=3), DtypeError,
                      "interpolate"),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_interpolate_errors(name):
    call, error, pattern = ERRORS[name]
    with pytest.raises(error, match=pattern):
        call()


def test_error_types_are_pytorch_compatible():
    with pytest.raises(RuntimeError):  # PyTorch: RuntimeError
        F.interpolate(z(1, 2, 4, 5), size=(0, 3))
    with pytest.raises(ValueError):  # PyTorch: ValueError
        F.interpolate(z(1, 2, 4, 5))
    with pytest.raises(NotImplementedError):  # PyTorch: NotImplementedError
        F.interpolate(z(4, 5), size=3)
    assert_close(F.interpolate(z(1, 1, 2, 2), size=3).numpy(), np.zeros((1, 1, 3, 3)), np.float32)
