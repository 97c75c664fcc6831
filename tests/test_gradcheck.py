"""minicv.gradcheck: passes on correct backwards, fails (naming the element) on a wrong one."""

import re
import warnings

import numpy as np
import pytest

import minicv as mc
import minicv.functional as F
from minicv.autograd import Function
from minicv.gradcheck import GradcheckError


def leaf(rng: np.random.Generator, *shape: int, device: str = "numpy") -> mc.Tensor:
    return mc.tensor(rng.standard_normal(shape), dtype=np.float64, device=device, requires_grad=True)


class ScaledSquare(Function):
    """y = x * x, with a backward whose derivative is wrong (by ``error``) at one flat index."""

    def __init__(self, wrong_at: int | None = None, error: float = 0.5):
        self.wrong_at, self.error = wrong_at, error

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        gx = 2 * self.x * gy
        if self.wrong_at is not None:
            gx.reshape(-1)[self.wrong_at] += self.error * gy.reshape(-1)[self.wrong_at]
        return gx


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(
    "op",
    [
        lambda a, b: a * b[0] + a / (b[1:] * b[1:] + 1) - b[:1],
        lambda a, b: F.linear(a, b),
        lambda a, b: (F.softmax(a, dim=1), F.log_softmax(b, dim=0)),
        lambda a, b: F.relu(a).sum() * b.mean(),
        lambda a, b: F.cat([a, b], dim=0)[1:, ::2].reshape(-1),
        lambda a, b: F.batch_norm(a.reshape(3, 2, 2), None, None, b[0, :2], b[1, :2], training=True),
    ],
)
def test_passes_on_basic_ops(fast, op):
    rng = np.random.default_rng(0)
    assert mc.gradcheck(op, (leaf(rng, 3, 4), leaf(rng, 4, 4)), fast=fast)


def test_passes_on_every_device(device):
    rng = np.random.default_rng(1)
    assert mc.gradcheck(lambda a: F.softmax(a * a, dim=0), (leaf(rng, 3, 2, device=device),))


def test_full_mode_names_the_wrong_element():
    x = leaf(np.random.default_rng(2), 2, 3)
    with pytest.raises(GradcheckError) as info:
        mc.gradcheck(lambda t: ScaledSquare(wrong_at=4).apply(t), (x,), fast=False)
    message = str(info.value)
    assert "output 0 with respect to input 0" in message
    assert "output index (1, 1), input index (1, 1)" in message
    analytical, numerical = 2 * x.data[1, 1] + 0.5, 2 * x.data[1, 1]
    found = re.search(r"analytical (\S+), numerical (\S+)", message)
    assert float(found.group(1)) == pytest.approx(analytical)
    assert float(found.group(2)) == pytest.approx(numerical)


def test_fast_mode_fails_and_localises_the_wrong_element():
    x = leaf(np.random.default_rng(3), 5, 7)
    with pytest.raises(GradcheckError, match=r"fast mode.*worst input index \(2, 3\)"):
        mc.gradcheck(lambda t: ScaledSquare(wrong_at=17).apply(t), (x,), fast=True)


def test_auto_mode_switches_to_directional_for_large_problems():
    x = leaf(np.random.default_rng(4), 70, 70)  # 4900 x 4900 products: the directional check
    assert mc.gradcheck(lambda t: ScaledSquare().apply(t), (x,))
    # one wrong element of 4900 moves v^T J u by about error / 4900: only a large error shows
    with pytest.raises(GradcheckError, match="fast mode.*rerun on a smaller one"):
        mc.gradcheck(lambda t: ScaledSquare(wrong_at=0, error=1e3).apply(t), (x,))


def test_names_the_input_and_output_pair():
    rng = np.random.default_rng(5)
    a, b = leaf(rng, 2, 2), leaf(rng, 2, 2)
    with pytest.raises(GradcheckError, match="output 1 with respect to input 1"):
        mc.gradcheck(lambda s, t: (s * t, ScaledSquare(wrong_at=3).apply(t)), (a, b))


def test_a_wrong_gradient_shape_is_reported():
    class Broadcasts(Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return gy.sum(axis=0)  # forgot to keep the shape

    with pytest.raises(GradcheckError, match="incorrect size"):
        mc.gradcheck(lambda t: Broadcasts().apply(t), (leaf(np.random.default_rng(6), 2, 3),))


def test_wrong_backward_in_a_non_float64_check_warns():
    x = mc.tensor(np.ones((2, 2)), dtype=np.float32, requires_grad=True)
    with pytest.warns(UserWarning, match="Input #0 requires gradient and is not a double precision"):
        with pytest.raises(GradcheckError):
            mc.gradcheck(lambda t: ScaledSquare(wrong_at=0).apply(t), (x,), eps=1e-2, atol=1e-2)


def test_float64_does_not_warn():
    x = leaf(np.random.default_rng(7), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mc.gradcheck(F.relu, (x,))


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="at least one input tensor to require gradient"):
        mc.gradcheck(F.relu, (mc.tensor(np.ones(3)),))


def test_leaves_gradients_and_data_untouched():
    rng = np.random.default_rng(8)
    x, w = leaf(rng, 2, 3), leaf(rng, 4, 3)
    w.grad = mc.tensor(np.full((4, 3), 7.0))
    before = x.data.copy()
    assert mc.gradcheck(lambda t: F.linear(t, w), (x,))  # w is captured by fn, not an input
    assert x.grad is None
    np.testing.assert_array_equal(w.grad.data, 7.0)
    np.testing.assert_array_equal(x.data, before)


def test_non_tensor_arguments_and_integer_outputs_pass_through():
    x = leaf(np.random.default_rng(9), 2, 3)

    def fn(t, dim):
        return F.softmax(t, dim=dim), t.argmax(dim)

    assert mc.gradcheck(fn, (x, 1))


def test_unconnected_output_must_have_zero_numerical_gradient():
    x = leaf(np.random.default_rng(10), 3)
    assert mc.gradcheck(lambda t: (t * 2, mc.tensor(np.ones(2))), (x,))
    detached = mc.tensor(np.ones(3), dtype=np.float64)
    with pytest.raises(GradcheckError, match="output 0 with respect to input 0"):
        mc.gradcheck(lambda t: (t.detach() * detached) * 1.0, (x,))  # forward depends on t, backward not
