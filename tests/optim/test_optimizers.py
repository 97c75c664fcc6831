"""SGD and Adam against torch.optim: several steps on the same gradients, float64 to 1e-10."""

import numpy as np
import pytest
import torch

import minicv as mc
import minicv.nn as nn
from minicv.errors import ArgumentError
from minicv.optim import SGD, Adam

SHAPES = [(3, 4), (5,), (2, 1, 3)]


def run_both(make_ours, make_theirs, device, steps=5, seed=0):
    """The same parameters and per-step gradients through both optimizers; parameters compared each step."""
    rng = np.random.default_rng(seed)
    initial = [rng.standard_normal(s) for s in SHAPES]
    ours = [nn.Parameter(mc.tensor(v, device=device)) for v in initial]
    theirs = [torch.tensor(v, requires_grad=True) for v in initial]
    opt, topt = make_ours(ours), make_theirs(theirs)
    for step in range(steps):
        grads = [rng.standard_normal(s) for s in SHAPES]
        for p, tp, g in zip(ours, theirs, grads, strict=True):
            if step == 2 and p is ours[1]:  # a parameter without a gradient is left alone by both
                p.grad, tp.grad = None, None
                continue
            p.grad = mc.tensor(g, device=device)
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs, strict=True):
            assert p.device.name == device
            np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-10, atol=1e-12)
    return opt, topt, ours


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
]


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_matches_torch(device, kwargs):
    run_both(lambda ps: SGD(ps, **kwargs), lambda ps: torch.optim.SGD(ps, **kwargs), device)


ADAM_CASES = [
    dict(),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.05),
    dict(lr=0.02, amsgrad=True),
    dict(lr=0.02, amsgrad=True, weight_decay=0.1, betas=(0.5, 0.9)),
]


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_matches_torch(device, kwargs):
    run_both(lambda ps: Adam(ps, **kwargs), lambda ps: torch.optim.Adam(ps, **kwargs), device, steps=8)


def test_parameter_groups_use_their_own_hyper_parameters():
    def groups(ps):
        return [{"params": ps[:1], "lr": 0.5}, {"params": ps[1:]}]

    run_both(lambda ps: SGD(groups(ps), lr=0.1, momentum=0.9), lambda ps: torch.optim.SGD(groups(ps), lr=0.1,
             momentum=0.9), "numpy")


@pytest.mark.parametrize(
    ("make", "make_torch"),
    [
        (lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
        (lambda ps: Adam(ps, lr=0.01, amsgrad=True), lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True)),
    ],
)
def test_state_dict_round_trip_resumes_identically(make, make_torch):
    opt, topt, params = run_both(make, make_torch, "numpy", steps=3)
    saved = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for entry in saved["state"].values() for v in entry.values())
    torch_state = topt.state_dict()["state"]
    assert set(saved["state"]) == set(torch_state)
    for i, entry in saved["state"].items():
        assert set(entry) == set(torch_state[i])
        for name, value in entry.items():
            np.testing.assert_allclose(value, np.asarray(torch_state[i][name]), rtol=1e-10)
    # npz round trip: flat keys, arrays only
    flat = {f"{i}/{name}": v for i, entry in saved["state"].items() for name, v in entry.items()}
    restored_state: dict = {}
    for key, value in flat.items():
        i, name = key.split("/")
        restored_state.setdefault(int(i), {})[name] = value
    fresh = make([nn.Parameter(mc.tensor(p.detach().numpy().copy())) for p in params])
    fresh.load_state_dict({"state": restored_state, "param_groups": saved["param_groups"]})
    g = [np.ones(p.shape) for p in params]
    for opt_, ps in ((opt, params), (fresh, [p for group in fresh.param_groups for p in group["params"]])):
        for p, gi in zip(ps, g, strict=True):
            p.grad = mc.tensor(gi)
        opt_.step()
    for a, b in zip(params, [p for group in fresh.param_groups for p in group["params"]], strict=True):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_state_dict_snapshots_are_copies():
    opt, _, params = run_both(lambda ps: Adam(ps), lambda ps: torch.optim.Adam(ps), "numpy", steps=1)
    saved = opt.state_dict()
    before = saved["state"][0]["exp_avg"].copy()
    params[0].grad = mc.tensor(np.ones(params[0].shape))
    opt.step()
    np.testing.assert_array_equal(saved["state"][0]["exp_avg"], before)


def test_load_state_dict_checks_shapes_and_counts():
    p = nn.Parameter(mc.zeros(3, dtype=np.float64))
    opt = SGD([p], lr=0.1, momentum=0.9)
    with pytest.raises(ArgumentError, match=r"momentum_buffer.*shape \(2,\)"):
        opt.load_state_dict({"state": {0: {"momentum_buffer": np.zeros(2)}}, "param_groups": [{"params": [0]}]})
    with pytest.raises(ArgumentError, match="number of parameters"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0, 1]}]})


def test_load_state_dict_checks_the_state_names_before_assigning():
    """A state Adam could not step with (no exp_avg) is refused, and the optimizer keeps its own."""
    p = nn.Parameter(mc.zeros(3, dtype=np.float64))
    opt = Adam([p], lr=0.1)
    p.grad = mc.tensor(np.ones(3))
    opt.step()
    saved = opt.state_dict()
    del saved["state"][0]["exp_avg"]
    saved["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ArgumentError, match=r"parameter 0 holds \['exp_avg_sq', 'step'\], but Adam keeps"):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.1 and set(opt.state[id(p)]) == {"step", "exp_avg", "exp_avg_sq"}
    saved["state"][0]["max_exp_avg_sq"] = saved["state"][0]["exp_avg"] = np.zeros(3)
    saved["param_groups"][0]["amsgrad"] = True  # the saved group decides which names are kept
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["amsgrad"] and opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(ArgumentError, match="no 'param_groups' list"):
        opt.load_state_dict({"state": {}})


def test_zero_grad_and_the_hyper_parameter_checks():
    p = nn.Parameter(mc.ones(2))
    p.grad = mc.ones(2)
    opt = SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), 0)
    opt.zero_grad()
    assert p.grad is None
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Invalid epsilon value"):
        Adam([p], eps=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([])
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([p, p])
    with pytest.raises(TypeError, match="Tensors"):
        SGD([1.0])


def test_step_records_no_graph_and_keeps_parameters_leaves():
    model = nn.Linear(3, 2)
    opt = Adam(model.parameters(), lr=0.1)
    model(mc.ones(4, 3)).sum().backward()
    before = [p.detach().numpy().copy() for p in model.parameters()]
    opt.step()
    assert all(p.is_leaf and p.requires_grad for p in model.parameters())
    assert all(not np.array_equal(a, p.detach().numpy()) for a, p in zip(before, model.parameters(), strict=True))
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_a_small_model_trains():
    mc.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    y = (x @ np.array([[2.0], [-1.0]], np.float32) + 0.5).astype(np.float32)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = ((model(mc.tensor(x)) - mc.tensor(y)) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
