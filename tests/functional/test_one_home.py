"""The engine's side of the kernel table's contract (kernels/__init__.py), each decision made once: every op
takes unbatched input the same way (``batched``: unsqueeze and squeeze graph nodes), and the kernels are
handed only non-empty, C-contiguous, batched arrays and tuples of Python ints, whatever the user passed."""

import minicv.kernels.numpy as spec
import numpy as np
import pytest

import minicv as mc
import minicv.functional as F
from minicv.autograd import _topological_order
from minicv.devices import Device
from minicv.exercises.cases import KernelCall, Recorder

RNG = np.random.default_rng(0)
X = RNG.permutation(3 * 6 * 6).reshape(3, 6, 6) / 10.0  # no ties: max pooling is differentiable
W = RNG.standard_normal((4, 3, 3, 3))
WT = RNG.standard_normal((3, 2, 2, 2))

# op(x) for an input x of shape (3, 6, 6) unbatched, (1, 3, 6, 6) batched
OPS = {
    "conv2d": lambda x, w: F.conv2d(x, w, stride=2, padding=1),
    "conv2d 'same'": lambda x, w: F.conv2d(x, w[:, :, :2], padding="same"),
    "conv_transpose2d": lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=1),
    "max_pool2d": lambda x, w: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True) * w.sum(),
    "max_pool2d indices, max_unpool2d": lambda x, w: F.max_unpool2d(
        *F.max_pool2d(x * w.sum(), 2, return_indices=True), 2, output_size=(6, 6)),
}
UNBATCHED_OPS = {"max_pool2d indices, max_unpool2d": 2}  # how many ops each case chains (1 if not listed)
WEIGHTS = {"conv_transpose2d": WT}


def _run(op: str, batched: bool):
    x = mc.tensor(X[None] if batched else X, requires_grad=True)
    w = mc.tensor(WEIGHTS.get(op, W), requires_grad=True)
    y = OPS[op](x, w)
    (y * mc.tensor(np.arange(y.size, dtype=np.float64).reshape(y.shape))).sum().backward()
    return y, x.grad.numpy(), w.grad.numpy()


@pytest.mark.parametrize("op", list(OPS))
def test_unbatched_input_runs_as_a_batch_of_one(op):
    """Same values and gradients as the batch of one, and exactly two more graph nodes per op (the
    unsqueeze of its input and the squeeze of its output), for every op alike."""
    y, gx, gw = _run(op, batched=False)
    y_batch, gx_batch, gw_batch = _run(op, batched=True)
    assert y.shape == y_batch.shape[1:]
    np.testing.assert_array_equal(y.detach().numpy(), y_batch.detach().numpy()[0])
    np.testing.assert_array_equal(gx, gx_batch[0])
    np.testing.assert_array_equal(gw, gw_batch)
    assert len(_topological_order(y._node)) == len(_topological_order(y_batch._node)) + 2 * UNBATCHED_OPS.get(op, 1)


def test_unbatched_max_pool2d_indices_are_unbatched_and_carry_no_graph():
    y, indices = F.max_pool2d(mc.tensor(X, requires_grad=True), 2, return_indices=True)
    _, batch_indices = F.max_pool2d(mc.tensor(X[None]), 2, return_indices=True)
    assert indices.shape == y.shape == (3, 3, 3) and indices.dtype == np.int64 and not indices.requires_grad
    np.testing.assert_array_equal(indices.numpy(), batch_indices.numpy()[0])


# --------------------------------------------------------------------------- what the kernels are handed
def _recording_device(calls: list[KernelCall]) -> Device:
    return Device("recording", np, Recorder(spec, None, calls))


def _check_handed(calls: list[KernelCall]) -> None:
    """Arrays non-empty, C-contiguous, batched (4-D, or the 3-D (N, C, P) of loss and batch norm) where
    they are images; pairs and shapes tuples of Python ints."""
    assert calls
    for call in calls:
        for value in (*call.args, *call.kwargs.values()):
            if isinstance(value, np.ndarray):
                assert value.size > 0, (call.kernel, value.shape)
                assert value.flags.c_contiguous, (call.kernel, value.shape)
            elif isinstance(value, tuple):
                flat = [v for item in value for v in (item if isinstance(item, tuple) else (item,))]
                assert all(type(v) is int for v in flat), (call.kernel, value)
        if call.kernel.startswith(("conv2d", "max_pool2d", "unpool", "upsample")):
            assert call.args[0].ndim == 4, (call.kernel, call.args[0].shape)


CALLS = {
    "conv2d on a transposed view": lambda d: F.conv2d(
        mc.tensor(RNG.standard_normal((2, 3, 7, 5)), device=d, requires_grad=True).transpose(2, 3),
        mc.tensor(W, device=d, requires_grad=True), stride=np.int64(2), padding=[1, np.int32(0)]),
    "conv_transpose2d unbatched": lambda d: F.conv_transpose2d(
        mc.tensor(X, device=d, requires_grad=True), mc.tensor(WT, device=d, requires_grad=True), stride=2,
        output_padding=1, dilation=2),
    "max_pool2d and max_unpool2d unbatched": lambda d: F.max_unpool2d(
        *F.max_pool2d(mc.tensor(X, device=d, requires_grad=True), (np.int64(2), 2), return_indices=True), 2),
    "interpolate": lambda d: F.interpolate(mc.tensor(X[None], device=d, requires_grad=True), scale_factor=2),
}


@pytest.mark.parametrize("case", list(CALLS))
def test_kernels_are_handed_contiguous_batched_arrays_and_int_tuples(case):
    calls: list[KernelCall] = []
    y = CALLS[case](_recording_device(calls))
    y.sum().backward()
    _check_handed(calls)


def _empty(d: Device, *shape: int) -> mc.Tensor:
    return mc.zeros(*shape, dtype=np.float64, device=d, requires_grad=True)


EMPTY = {
    "conv2d": lambda d: F.conv2d(_empty(d, 0, 3, 5, 5), mc.tensor(W, device=d, requires_grad=True), padding=1),
    "conv_transpose2d": lambda d: F.conv_transpose2d(_empty(d, 0, 3, 4, 4),
                                                     mc.tensor(WT, device=d, requires_grad=True)),
    "max_pool2d": lambda d: F.max_pool2d(_empty(d, 0, 3, 4, 4), 2),
    "max_unpool2d": lambda d: F.max_unpool2d(*F.max_pool2d(_empty(d, 0, 3, 4, 4), 2, return_indices=True), 2),
    "interpolate": lambda d: F.interpolate(_empty(d, 0, 3, 4, 4), size=(5, 3)),
}


@pytest.mark.parametrize("case", list(EMPTY))
def test_no_kernel_is_handed_an_empty_tensor(case):
    """The engine makes empty results itself: kernels need not handle empty tensors."""
    calls: list[KernelCall] = []
    y = EMPTY[case](_recording_device(calls))
    assert y.size == 0
    y.sum().backward()
    assert calls == []
