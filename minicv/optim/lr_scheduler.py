"""Learning-rate schedules, stepped once per epoch (PyTorch's names and formulas)."""

from __future__ import annotations

import math
from typing import Any

from minicv.optim.optimizer import Optimizer


class CosineAnnealingLR:
    """lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2 after t calls of step():
    large steps first, then ever smaller ones, so training ends settled rather than bouncing."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):  # noqa: N803 (PyTorch's name)
        if T_max < 1:
            raise ValueError(f"T_max: expected a positive number of epochs, but got {T_max}")
        self.optimizer, self.T_max, self.eta_min = optimizer, T_max, eta_min
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch = 0

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def _apply(self) -> None:
        progress = (1 + math.cos(math.pi * min(self.last_epoch, self.T_max) / self.T_max)) / 2
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.eta_min + (base - self.eta_min) * progress

    def state_dict(self) -> dict[str, Any]:
        return {
            "T_max": self.T_max,
            "eta_min": self.eta_min,
            "base_lrs": list(self.base_lrs),
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.T_max, self.eta_min = int(state["T_max"]), float(state["eta_min"])
        self.base_lrs, self.last_epoch = [float(v) for v in state["base_lrs"]], int(state["last_epoch"])
        self._apply()
