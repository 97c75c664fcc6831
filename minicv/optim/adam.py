"""Adam (Kingma & Ba) with PyTorch's exact update, L2 weight decay and AMSGrad."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from minicv.errors import ArgumentError
from minicv.optim.optimizer import Optimizer, check_non_negative
from minicv.tensor import Tensor


class Adam(Optimizer):
    """g = grad + weight_decay * p; m = m + (1 - beta1)(g - m); v = beta2 v + (1 - beta2) g^2;
    p = p - lr / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps), with v_hat = v, or the
    running maximum of v with ``amsgrad``."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False):
        check_non_negative("lr", lr, "learning rate")
        check_non_negative("eps", eps, "epsilon value")
        check_non_negative("weight_decay", weight_decay, "weight_decay value")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ArgumentError(f"Invalid beta parameter at index {i}: {beta} (argument 'betas')")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def state_names(self, group: dict[str, Any]) -> set[str]:
        return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group["amsgrad"] else set())

    def update(self, param: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        xp = param.device.xp
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = np.array(0.0)
            state["exp_avg"] = xp.zeros_like(param.data)
            state["exp_avg_sq"] = xp.zeros_like(param.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(param.data)
        state["step"] = state["step"] + 1
        step = float(state["step"])
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param.data
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg += (1 - beta1) * (grad - exp_avg)  # PyTorch's lerp
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            xp.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            exp_avg_sq = state["max_exp_avg_sq"]
        step_size = group["lr"] / (1 - beta1**step)
        denom = xp.sqrt(exp_avg_sq) / math.sqrt(1 - beta2**step) + group["eps"]
        param.data -= step_size * exp_avg / denom
