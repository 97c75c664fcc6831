"""Layers against torch.nn: same weights in, same outputs and gradients out; ctor checks; reprs; init."""

import math

import numpy as np
import pytest
import torch
import torch.nn as tnn

import minicv as mc
import minicv.nn as nn
from minicv.errors import ArgumentError
from tests.conftest import tolerances


def copy_weights(ours: nn.Module, theirs: tnn.Module) -> None:
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})


def compare(ours, theirs, x_np, device, *extra, torch_extra=()):
    """Forward and backward of both on the same input; parameter gradients compared by name."""
    dtype = x_np.dtype
    ours.to(device)
    x = mc.tensor(x_np, device=device, requires_grad=True)
    tx = torch.tensor(x_np, requires_grad=True)
    y, ty = ours(x, *extra), theirs(tx, *torch_extra)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), **tolerances(dtype))
    g = np.random.default_rng(5).standard_normal(y.shape).astype(dtype)
    y.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), **tolerances(dtype))
    torch_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad.device.name == device
        np.testing.assert_allclose(p.grad.numpy(), torch_params[name].grad.numpy(), **tolerances(dtype))
    for name, b in theirs.named_buffers():
        np.testing.assert_allclose(ours.state_dict()[name], b.numpy(), **tolerances(dtype))


def randn(*shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2, bias=False), dict(groups=2, padding=(1, 0))],
)
def test_conv2d_matches_torch(device, dtype, kwargs):
    ours = nn.Conv2d(4, 6, 3, dtype=dtype, **kwargs)
    theirs = tnn.Conv2d(4, 6, 3, dtype=torch.float64 if dtype == np.float64 else torch.float32, **kwargs)
    copy_weights(ours, theirs)
    compare(ours, theirs, randn(2, 4, 7, 6, dtype=dtype), device)


@pytest.mark.parametrize("output_size", [None, (9, 10)])
def test_conv_transpose2d_matches_torch_with_output_size(device, output_size):
    ours, theirs = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=np.float64), None
    theirs = tnn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=torch.float64)
    copy_weights(ours, theirs)
    extra = () if output_size is None else (output_size,)
    compare(ours, theirs, randn(2, 4, 5, 5), device, *extra, torch_extra=extra)


def test_max_pool_and_unpool_match_torch(device):
    x_np = np.random.default_rng(1).permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7).astype(np.float64)  # no ties
    pool, tpool = nn.MaxPool2d(2, return_indices=True), tnn.MaxPool2d(2, return_indices=True)
    y, indices = pool(mc.tensor(x_np, device=device))
    ty, tindices = tpool(torch.tensor(x_np))
    np.testing.assert_array_equal(indices.numpy(), tindices.numpy())
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    unpool, tunpool = nn.MaxUnpool2d(2), tnn.MaxUnpool2d(2)
    compare(unpool, tunpool, y.numpy(), device, indices, (6, 7), torch_extra=(tindices, (6, 7)))
    compare(nn.MaxPool2d(3, stride=2, padding=1), tnn.MaxPool2d(3, stride=2, padding=1), x_np, device)


@pytest.mark.parametrize(
    "kwargs", [dict(scale_factor=2), dict(size=(5, 3)), dict(scale_factor=1.5, mode="nearest-exact")]
)
def test_upsample_matches_torch(device, kwargs):
    compare(nn.Upsample(**kwargs), tnn.Upsample(**kwargs), randn(2, 3, 4, 4), device)


def test_relu_flatten_linear_sequential_match_torch(device, dtype):
    ours = nn.Sequential(nn.Flatten(), nn.Linear(12, 5, dtype=dtype), nn.ReLU(),
                         nn.Linear(5, 2, bias=False, dtype=dtype))
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    theirs = tnn.Sequential(tnn.Flatten(), tnn.Linear(12, 5, dtype=torch_dtype), tnn.ReLU(),
                            tnn.Linear(5, 2, bias=False, dtype=torch_dtype))
    copy_weights(ours, theirs)
    compare(ours, theirs, randn(4, 3, 2, 2, dtype=dtype), device)


class TorchBatchNormReLU2d(tnn.BatchNorm2d):
    """What nn.BatchNormReLU2d computes, in PyTorch, with BatchNorm2d's parameter names."""

    def forward(self, input):  # noqa: A002
        return torch.relu(super().forward(input))


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("relu", [False, True], ids=["BatchNorm2d", "BatchNormReLU2d"])
def test_batch_norm_training_then_eval_matches_torch(device, momentum, affine, relu):
    ours = (nn.BatchNormReLU2d if relu else nn.BatchNorm2d)(3, momentum=momentum, affine=affine, dtype=np.float64)
    theirs = (TorchBatchNormReLU2d if relu else tnn.BatchNorm2d)(3, momentum=momentum, affine=affine,
                                                                   dtype=torch.float64)
    if affine:
        ours.weight.data = randn(3, seed=7)
        ours.bias.data = randn(3, seed=8)
    copy_weights(ours, theirs)
    for step in range(3):  # three batches move the running statistics
        compare(ours, theirs, randn(4, 3, 2, 3, seed=step) * 2 + 1, device)
        ours.zero_grad()
        theirs.zero_grad()
    assert ours.num_batches_tracked.item() == 3
    ours.eval()
    theirs.eval()
    compare(ours, theirs, randn(2, 3, 2, 2, seed=9), device)
    assert ours.num_batches_tracked.item() == 3


def test_batch_norm_without_running_stats_always_uses_the_batch():
    ours = nn.BatchNorm2d(2, track_running_stats=False, dtype=np.float64).eval()
    theirs = tnn.BatchNorm2d(2, track_running_stats=False, dtype=torch.float64).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    compare(ours, theirs, randn(3, 2, 2, 2), "numpy")


def test_batch_norm_needs_4d_input():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(3)(mc.zeros(2, 3, 4))


@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"track_running_stats": False}, {"bias": False}])
def test_batch_norm_relu_has_the_parameters_buffers_and_keys_of_batch_norm(kwargs):
    fused, plain = nn.BatchNormReLU2d(4, **kwargs), nn.BatchNorm2d(4, **kwargs)
    assert isinstance(fused, nn.BatchNorm2d)
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert repr(fused) == repr(plain).replace("BatchNorm2d", "BatchNormReLU2d")


# --------------------------------------------------------------------------- constructors
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: nn.Conv2d(3, 4, 3, groups=2), "in_channels must be divisible by groups"),
        (lambda: nn.Conv2d(4, 3, 3, groups=2), "out_channels must be divisible by groups"),
        (lambda: nn.Conv2d(4, 4, 3, groups=0), "groups must be a positive integer"),
        (lambda: nn.Conv2d(4, 4, 3, padding="foo"), r"Invalid padding string 'foo', should be one of"),
        (lambda: nn.Conv2d(4, 4, 3, padding="same", stride=2), "padding='same' is not supported for strided"),
        (lambda: nn.Conv2d(4, 4, 3, padding_mode="foo"), "padding_mode must be one of"),
        (lambda: nn.Conv2d(4, 4, 3, padding_mode="reflect"), "not supported by minicv"),
        (lambda: nn.Conv2d(4, 4, 0), "kernel_size must be at least 1"),
        (lambda: nn.Conv2d(4, 4, 3, stride=(1, 0)), "stride must be at least 1"),
        (lambda: nn.Conv2d(4, 4, 3, padding=-1), "padding must be at least 0"),
        (lambda: nn.Conv2d(0, 4, 3), "in_channels must be a positive integer"),
        (lambda: nn.ConvTranspose2d(4, 4, 3, padding_mode="reflect"), 'Only "zeros" padding mode is supported'),
        (lambda: nn.ConvTranspose2d(4, 4, 3, stride=2, output_padding=2), "output_padding"),
        (lambda: nn.Linear(-1, 2), "in_features must be a positive integer"),
        (lambda: nn.BatchNorm2d(0), "num_features"),
        (lambda: nn.MaxPool2d(0), "kernel_size"),
        (lambda: nn.Upsample(), "either size or scale_factor should be defined"),
        (lambda: nn.Upsample(size=2, scale_factor=2), "only one of size or scale_factor"),
    ],
)
def test_constructors_reject_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_conv_rejects_non_integer_kernel():
    with pytest.raises(TypeError, match="kernel_size"):
        nn.Conv2d(3, 3, 2.5)


@pytest.mark.parametrize(
    "build",
    [
        lambda m: m.Conv2d(3, 8, 3, padding=1, bias=False),
        lambda m: m.Conv2d(3, 8, (3, 2), stride=2, dilation=2, groups=1),
        lambda m: m.Conv2d(4, 8, 3, padding="same", groups=2),
        lambda m: m.ConvTranspose2d(3, 8, 2, stride=2),
        lambda m: m.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1, groups=2),
        lambda m: m.MaxPool2d(2, return_indices=True),
        lambda m: m.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        lambda m: m.MaxUnpool2d(2),
        lambda m: m.Upsample(scale_factor=2),
        lambda m: m.Upsample(size=(3, 4)),
        lambda m: m.Upsample(scale_factor=(2, 3), mode="nearest-exact"),
        lambda m: m.BatchNorm2d(3, momentum=None, affine=False),
        lambda m: m.Linear(3, 4),
        lambda m: m.Flatten(),
        lambda m: m.ReLU(),
        lambda m: m.ReLU(inplace=True),
        lambda m: m.Sequential(m.Linear(2, 3), m.Sequential(m.ReLU(), m.Flatten())),
    ],
)
def test_repr_matches_torch(build):
    assert repr(build(nn)) == repr(build(tnn))


# --------------------------------------------------------------------------- initialisation
def test_default_init_bounds_and_statistics():
    mc.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)  # fan_in 144
    bound = 1 / math.sqrt(16 * 9)
    for p in (conv.weight, conv.bias):
        values = p.detach().numpy()
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound
    # U(-b, b) has variance b^2 / 3
    assert conv.weight.detach().numpy().var() == pytest.approx(bound**2 / 3, rel=0.1)
    assert abs(conv.weight.detach().numpy().mean()) < 0.05 * bound


def test_transposed_conv_fan_in_comes_from_weight_size_1():
    mc.manual_seed(1)
    layer = nn.ConvTranspose2d(64, 4, 3)  # weight (64, 4, 3, 3): fan_in 4 * 9 = 36, not 64 * 9
    bound = 1 / math.sqrt(36)
    values = layer.weight.detach().numpy()
    assert values.shape == (64, 4, 3, 3) and np.abs(values).max() <= bound
    assert values.var() == pytest.approx(bound**2 / 3, rel=0.1)
    assert np.abs(layer.bias.detach().numpy()).max() <= bound


def test_linear_and_batch_norm_init():
    mc.manual_seed(2)
    layer = nn.Linear(100, 50)
    assert np.abs(layer.weight.detach().numpy()).max() <= 0.1 and np.abs(layer.bias.detach().numpy()).max() <= 0.1
    bn = nn.BatchNorm2d(4)
    np.testing.assert_array_equal(bn.weight.detach().numpy(), 1)
    np.testing.assert_array_equal(bn.bias.detach().numpy(), 0)
    np.testing.assert_array_equal(bn.running_mean.numpy(), 0)
    np.testing.assert_array_equal(bn.running_var.numpy(), 1)


def test_init_is_reproducible_from_the_seed_and_keeps_dtype():
    mc.manual_seed(3)
    a = nn.Conv2d(2, 3, 3, dtype=np.float64)
    mc.manual_seed(3)
    b = nn.Conv2d(2, 3, 3, dtype=np.float64)
    c = nn.Conv2d(2, 3, 3, dtype=np.float64)
    assert a.weight.dtype == np.float64 and nn.Conv2d(2, 3, 3).weight.dtype == np.float32
    np.testing.assert_array_equal(a.weight.detach().numpy(), b.weight.detach().numpy())
    assert not np.array_equal(b.weight.detach().numpy(), c.weight.detach().numpy())


def test_init_functions():
    t = mc.zeros(200, 300, dtype=np.float64)
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert t.data.std() == pytest.approx(math.sqrt(2 / 300), rel=0.05)
    nn.init.xavier_uniform_(t)
    assert np.abs(t.data).max() <= math.sqrt(6 / 500)
    expected = tnn.init.calculate_gain("leaky_relu", math.sqrt(5))
    assert nn.init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(expected)
    with pytest.raises(ArgumentError, match="fewer than 2 dimensions"):
        nn.init.kaiming_uniform_(mc.zeros(3))
