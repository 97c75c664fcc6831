"""Module: registration, traversal, modes, state_dict round trips and their errors, devices."""

import numpy as np
import pytest
import torch
import torch.nn as tnn

import minicv as mc
import minicv.nn as nn
from minicv.errors import ArgumentError


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
        self.scale = nn.Parameter(mc.ones(1))
        self.register_buffer("steps", mc.zeros(1))
        self.register_buffer("scratch", mc.zeros(1), persistent=False)
        self.name = "block"  # plain attributes stay plain

    def forward(self, x):
        return self.head(nn.ReLU()(self.bn(self.conv(x)))) * self.scale


def test_parameters_buffers_children_and_modules_are_registered_in_order():
    block = Block()
    names = [n for n, _ in block.named_parameters()]
    assert names == ["scale", "conv.weight", "conv.bias", "bn.weight", "bn.bias", "head.1.weight", "head.1.bias"]
    assert [n for n, _ in block.named_buffers()] == [
        "steps", "scratch", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"
    ]
    assert [type(m).__name__ for m in block.children()] == ["Conv2d", "BatchNorm2d", "Sequential"]
    assert [n for n, _ in block.named_modules()] == ["", "conv", "bn", "head", "head.0", "head.1"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in block.parameters())
    assert [n for n, _ in block.named_parameters(recurse=False)] == ["scale"]
    assert block.name == "block" and "name" not in dict(block.named_parameters())


def test_shared_parameters_are_listed_once_and_counted_once():
    linear = nn.Linear(3, 3)
    model = nn.Sequential(linear, nn.ReLU(), linear)
    assert len(list(model.parameters())) == 2
    assert model.num_parameters() == 12
    model[0].weight.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == 3


def test_num_parameters_matches_torch():
    ours = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ConvTranspose2d(8, 4, 2), nn.Linear(5, 7))
    theirs = tnn.Sequential(tnn.Conv2d(3, 8, 3), tnn.BatchNorm2d(8), tnn.ConvTranspose2d(8, 4, 2), tnn.Linear(5, 7))
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())


def test_train_and_eval_reach_every_module():
    block = Block()
    assert block.training and block.bn.training
    assert block.eval() is block
    assert not any(m.training for m in block.modules())
    block.train()
    assert all(m.training for m in block.modules())
    with pytest.raises(ValueError, match="boolean"):
        block.train("no")


def test_state_dict_matches_torch_keys_and_round_trips():
    mc.manual_seed(0)
    block = Block()
    state = block.state_dict()
    assert "scratch" not in state and all(isinstance(v, np.ndarray) for v in state.values())
    bn_keys = [k for k in state if k.startswith("bn.")]
    assert bn_keys == ["bn." + k for k in tnn.BatchNorm2d(3).state_dict()]
    mc.manual_seed(1)
    other = Block()
    assert not np.array_equal(other.conv.weight.detach().numpy(), block.conv.weight.detach().numpy())
    result = other.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    x = mc.tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32))
    with mc.no_grad():
        np.testing.assert_array_equal(other.eval()(x).numpy(), block.eval()(x).numpy())


def test_state_dict_is_a_copy():
    layer = nn.Linear(2, 2)
    state = layer.state_dict()
    state["weight"][...] = 7
    assert not np.any(layer.weight.detach().numpy() == 7)
    layer.load_state_dict(state)
    state["weight"][...] = 8
    np.testing.assert_array_equal(layer.weight.detach().numpy(), 7)


def test_load_state_dict_from_torch_and_into_torch():
    ours, theirs = nn.Conv2d(2, 3, 3), tnn.Conv2d(2, 3, 3)
    ours.load_state_dict(theirs.state_dict())  # torch tensors: converted, dtype kept
    np.testing.assert_array_equal(ours.weight.detach().numpy(), theirs.weight.detach().numpy())
    assert ours.weight.dtype == np.float32


def test_load_state_dict_errors_name_the_keys():
    layer = nn.Linear(3, 2)
    with pytest.raises(ArgumentError, match=r"size mismatch for weight: .*\(3, 3\).*\(2, 3\)"):
        layer.load_state_dict({"weight": np.zeros((3, 3)), "bias": np.zeros(2)})
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "bias"'):
        layer.load_state_dict({"weight": np.zeros((2, 3))})
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "extra"'):
        layer.load_state_dict({"weight": np.zeros((2, 3)), "bias": np.zeros(2), "extra": np.zeros(1)})
    before = layer.weight.detach().numpy().copy()
    with pytest.raises(ArgumentError):  # nothing is loaded when anything is wrong
        layer.load_state_dict({"weight": np.ones((2, 3)), "bias": np.zeros(5)})
    np.testing.assert_array_equal(layer.weight.detach().numpy(), before)


def test_load_state_dict_non_strict_reports_keys():
    layer = nn.Linear(3, 2)
    result = layer.load_state_dict({"weight": np.ones((2, 3)), "other": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["other"]
    np.testing.assert_array_equal(layer.weight.detach().numpy(), 1)
    with pytest.raises(ArgumentError, match="size mismatch for bias"):  # shapes are checked all the same
        layer.load_state_dict({"bias": np.zeros(3)}, strict=False)


def test_zero_grad_drops_every_gradient():
    block = Block()
    block(mc.ones(2, 2, 4, 4)).sum().backward()
    assert all(p.grad is not None for p in block.parameters())
    block.zero_grad()
    assert all(p.grad is None for p in block.parameters())


def test_to_moves_parameters_and_buffers_in_place(device):
    block = Block()
    params = list(block.parameters())
    assert block.to(device) is block
    assert [id(p) for p in block.parameters()] == [id(p) for p in params]  # optimizers keep their references
    assert all(t.device.name == device for t in [*block.parameters(), *block.buffers()])
    y = block(mc.ones(2, 2, 4, 4, device=device))
    assert y.device.name == device
    y.sum().backward()
    assert all(p.grad.device.name == device for p in block.parameters())


def test_to_dtype_casts_floating_state_only():
    block = Block().double()
    assert all(p.dtype == np.float64 for p in block.parameters())
    assert block.bn.running_mean.dtype == np.float64 and block.bn.num_batches_tracked.dtype == np.int64
    with pytest.raises(TypeError, match="floating point"):
        block.to(dtype=np.int32)


def test_call_runs_forward_and_the_base_forward_raises():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)


def test_registration_errors():
    module = nn.Module()
    with pytest.raises(KeyError, match="'.'"):
        module.register_buffer("a.b", mc.zeros(1))
    with pytest.raises(TypeError, match="Parameter"):
        module.register_parameter("w", mc.zeros(1))
    with pytest.raises(AttributeError, match="has no attribute 'missing'"):
        module.missing  # noqa: B018

    class Early(nn.Module):
        def __init__(self):
            self.w = 1

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_assigning_to_a_buffer_keeps_it_a_buffer():
    bn = nn.BatchNorm2d(2)
    bn.running_mean = mc.ones(2)
    assert "running_mean" in bn.state_dict()
    np.testing.assert_array_equal(bn.state_dict()["running_mean"], 1)


def test_sequential_indexing_len_iteration_and_slices():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)]
    model = nn.Sequential(*layers)
    assert len(model) == 3 and list(model) == layers
    assert model[0] is layers[0] and model[-1] is layers[2]
    head = model[1:]
    assert isinstance(head, nn.Sequential) and list(head) == layers[1:]
    with pytest.raises(IndexError, match="out of range"):
        model[3]
    model.append(nn.ReLU())
    assert len(model) == 4
    x = mc.tensor(np.ones((4, 2), np.float32))
    expected = model[3](layers[2](layers[1](layers[0](x))))
    np.testing.assert_allclose(model(x).detach().numpy(), expected.detach().numpy())


def test_parameter_wraps_a_tensor_and_prints_like_torch():
    p = nn.Parameter(mc.tensor([1.0, 2.0]))
    assert p.requires_grad and p.is_leaf and isinstance(p, mc.Tensor)
    assert repr(p).startswith("Parameter containing:\n")
    frozen = nn.Parameter(np.zeros(2), requires_grad=False)
    assert not frozen.requires_grad
    assert not isinstance(p * 2, nn.Parameter)  # results of ops are plain tensors


def test_apply_visits_children_first():
    model = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.ReLU()))
    visited = []
    model.apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["Linear", "ReLU", "Sequential", "Sequential"]
    assert [type(m).__name__ for m in tnn.Sequential(tnn.Linear(1, 1), tnn.Sequential(tnn.ReLU())).modules()] == [
        type(m).__name__ for m in model.modules()
    ]


def test_torch_and_minicv_agree_on_a_whole_model():
    ours = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8, 3))
    theirs = tnn.Sequential(tnn.Conv2d(1, 2, 3, padding=1), tnn.BatchNorm2d(2), tnn.ReLU(), tnn.MaxPool2d(2),
                            tnn.Flatten(), tnn.Linear(8, 3))
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(mc.tensor(x)).detach().numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.state_dict()["1.running_var"], theirs.state_dict()["1.running_var"].numpy(),
                               rtol=1e-5)


def test_device_is_where_every_parameter_and_buffer_is():
    block = Block().to("numba")
    assert block.device is mc.get_device("numba") and block.head.device is block.device
    bare = nn.BatchNorm2d(3, affine=False)  # buffers only: they say where it computes
    assert bare.to("cudasim").device.name == "cudasim"
    with pytest.raises(ArgumentError, match=r"ReLU.device: .* but found no parameters or buffers"):
        _ = nn.ReLU().device
    block.head.to("numpy")
    with pytest.raises(ArgumentError, match=r"Block.device: .* but found tensors on numba, numpy; move them"):
        _ = block.device
