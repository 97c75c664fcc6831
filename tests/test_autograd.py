"""The autograd engine: accumulation, graph reuse, deep graphs, no_grad, detach, requires_grad flow."""

import numpy as np
import pytest
import torch

import minicv as mc
import minicv.functional as F
from minicv.autograd import Function


def test_gradient_accumulates_across_uses_of_one_tensor(device):
    x = mc.tensor(np.array([1.0, -2.0, 3.0]), device=device, requires_grad=True)
    (x * x + x * 3 + x).sum().backward()  # d/dx (x^2 + 4x) = 2x + 4
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.data + 4)


def test_gradient_accumulates_across_backward_calls_until_zero_grad(device):
    x = mc.tensor(np.array([1.0, 2.0]), device=device, requires_grad=True)
    for calls in (1, 2, 3):
        (x * x).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), calls * 2 * x.data)
    x.zero_grad()
    assert x.grad is None
    (x * 5).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 5.0)


def test_one_graph_can_be_backpropagated_twice():
    x = mc.tensor(np.array([3.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 12.0)


def test_shared_intermediate_receives_the_sum_of_its_gradients():
    # the diamond: h is used by two branches that meet again
    x_np = np.array([0.5, -1.5, 2.0])
    x = mc.tensor(x_np, requires_grad=True)
    tx = torch.tensor(x_np, requires_grad=True)
    for t in (x, tx):
        h = t * t
        (h.exp() * h + h / 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


def test_a_ten_thousand_op_chain_needs_no_recursion():
    x = mc.tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 1.0001**10_000, rtol=1e-10)
    del y  # freeing the chain must not recurse either


def test_no_grad_records_nothing_and_restores_the_mode():
    x = mc.tensor(np.ones(2), requires_grad=True)
    with mc.no_grad():
        assert not mc.is_grad_enabled()
        y = x * 2
    assert mc.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_restores_the_mode_after_an_exception_and_works_as_a_decorator():
    with pytest.raises(KeyError), mc.no_grad():
        raise KeyError("inside no_grad")
    assert mc.is_grad_enabled()

    @mc.no_grad()
    def double(t):
        return t * 2

    assert not double(mc.tensor(np.ones(1), requires_grad=True)).requires_grad
    assert mc.is_grad_enabled()


def test_set_grad_enabled_nests():
    with mc.set_grad_enabled(False):
        with mc.set_grad_enabled(True):
            assert mc.is_grad_enabled()
        assert not mc.is_grad_enabled()


def test_detach_cuts_the_graph_and_shares_data():
    x = mc.tensor(np.ones(3), requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.is_leaf and d.data is y.data
    z = (y * d).sum()  # d is a constant: dz/dx = 2 * d
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4.0)


def test_requires_grad_propagates_through_ops():
    a = mc.tensor(np.ones(2), requires_grad=True)
    b = mc.tensor(np.ones(2))
    assert (a + b).requires_grad and (b * a).requires_grad
    assert not (b + b).requires_grad
    y = a * b
    assert not y.is_leaf and y.grad_fn is not None and a.is_leaf
    (y * 1.0).sum().backward()
    assert b.grad is None and y.grad is None  # only leaves that require grad accumulate
    np.testing.assert_allclose(a.grad.numpy(), 1.0)


def test_requires_grad_can_only_be_set_on_leaves():
    y = mc.tensor(np.ones(2), requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)
    x = mc.tensor(np.ones(2)).requires_grad_()
    assert x.requires_grad


def test_backward_needs_a_scalar_or_a_matching_gradient():
    y = mc.tensor(np.ones(3), requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="scalar outputs"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(2))
    y.backward(mc.tensor(np.array([1.0, 2.0, 3.0])))


def test_backward_on_a_leaf_accumulates_the_given_gradient():
    x = mc.tensor(np.ones(2), requires_grad=True)
    x.backward(np.array([2.0, 3.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 3.0])


def test_gradient_has_the_leaf_dtype_and_device(device, dtype):
    x = mc.tensor(np.ones(4, dtype), device=device, requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.dtype == dtype and x.grad.device.name == device and not x.grad.requires_grad


class SplitHalves(Function):
    """Two outputs from one node: used to check gradients from either output, or both."""

    def forward(self, x):
        self.n = x.shape[0] // 2
        return x[: self.n] * 2, x[self.n :] * 3

    def backward(self, g_first, g_second):
        xp = self.xp
        zeros = xp.zeros(self.n)
        first = zeros if g_first is None else g_first * 2
        second = xp.zeros(self.n) if g_second is None else g_second * 3
        return xp.concatenate([first, second])


def test_a_node_with_two_outputs_gets_gradients_from_one_or_both():
    x = mc.tensor(np.ones(4), requires_grad=True)
    first, second = SplitHalves().apply(x)
    first.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2, 0, 0])
    x.zero_grad()
    (first.sum() + second.sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2, 3, 3])


def test_function_outputs_do_not_require_grad_when_no_input_does():
    y = SplitHalves().apply(mc.tensor(np.ones(4)))
    assert not any(t.requires_grad for t in y) and all(t.grad_fn is None for t in y)


def test_leaves_never_share_a_gradient_buffer():
    """Leaves keep the gradient array they are handed (no copy), but never one another leaf holds."""
    a = mc.tensor(np.ones((2, 3)), requires_grad=True)
    b = mc.tensor(np.ones((2, 3)), requires_grad=True)
    c = mc.tensor(np.ones(6), requires_grad=True)
    (a + b + c.reshape(2, 3)).sum().backward()  # Add and Reshape pass one buffer on to all three
    grads = [t.grad.numpy() for t in (a, b, c)]
    for i, g in enumerate(grads):
        for h in grads[i + 1:]:
            assert not np.shares_memory(g, h)
    grads[0][...] = 7.0
    assert np.all(grads[1] == 1.0) and np.all(grads[2] == 1.0)


def test_a_given_output_gradient_is_not_aliased():
    x = mc.tensor(np.ones(3), requires_grad=True)
    given = np.full((3, 1), 2.0)
    x.reshape(3, 1).backward(given)  # reshape's backward passes a view of the given array on
    given[...] = 5.0
    assert np.all(x.grad.numpy() == 2.0)


def test_a_leaf_root_does_not_keep_the_given_gradient():
    x = mc.tensor(np.ones(3), requires_grad=True)
    given = np.full(3, 2.0)
    x.backward(given)
    given[...] = 5.0
    assert np.all(x.grad.numpy() == 2.0)


@pytest.mark.filterwarnings("error")
def test_inf_and_nan_are_answers_not_warnings(device):
    """As in PyTorch: x / 0, log(0), exp(1000) and their gradients give inf and NaN silently."""
    x = mc.tensor(np.array([1.0, 0.0, -1.0, 1000.0]), device=device, requires_grad=True)
    zero = mc.tensor(np.zeros(4), device=device, requires_grad=True)
    y = x / zero + F.log(x * 0) + F.exp(x)
    y.sum().backward()
    assert not np.isfinite(y.detach().numpy()).any()
    assert not np.isfinite(zero.grad.numpy()).any()
