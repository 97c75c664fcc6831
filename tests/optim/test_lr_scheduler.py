"""CosineAnnealingLR gives PyTorch's learning rates, and resumes from its state."""

import numpy as np
import pytest
import torch

import minicv as mc
from minicv import optim


@pytest.mark.parametrize("t_max, eta_min", [(5, 0.0), (8, 1e-4), (3, 0.01)])
def test_cosine_annealing_matches_torch(t_max, eta_min):
    ours = optim.SGD([mc.tensor(np.zeros(2), requires_grad=True)], lr=0.1)
    theirs = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    schedule = optim.CosineAnnealingLR(ours, t_max, eta_min)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, t_max, eta_min)
    for _ in range(t_max):
        theirs.step()
        schedule.step()
        reference.step()
        assert schedule.get_last_lr()[0] == pytest.approx(reference.get_last_lr()[0], rel=1e-12, abs=1e-15)


def test_cosine_annealing_resumes_from_its_state():
    make = lambda: optim.Adam([mc.tensor(np.zeros(2), requires_grad=True)], lr=0.01)  # noqa: E731
    straight = optim.CosineAnnealingLR(make(), 6)
    for _ in range(4):
        straight.step()
    first = optim.CosineAnnealingLR(make(), 6)
    first.step(), first.step()
    resumed = optim.CosineAnnealingLR(make(), 6)
    resumed.load_state_dict(first.state_dict())
    resumed.step(), resumed.step()
    assert resumed.get_last_lr() == straight.get_last_lr()


def test_t_max_must_be_positive():
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(optim.SGD([mc.tensor(np.zeros(1), requires_grad=True)], lr=0.1), 0)
