"""Stochastic gradient descent with PyTorch's momentum, dampening, weight decay and Nesterov rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from minicv.errors import ArgumentError
from minicv.optim.optimizer import Optimizer, check_non_negative
from minicv.tensor import Tensor


class SGD(Optimizer):
    """g = grad + weight_decay * p; with momentum b = momentum * b + (1 - dampening) * g (b = g on the
    first step) and g = g + momentum * b (Nesterov) or g = b; then p = p - lr * g."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False):
        check_non_negative("lr", lr, "learning rate")
        check_non_negative("momentum", momentum, "momentum value")
        check_non_negative("weight_decay", weight_decay, "weight_decay value")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ArgumentError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def state_names(self, group: dict[str, Any]) -> set[str]:
        return {"momentum_buffer"} if group["momentum"] else set()

    def update(self, param: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param.data
        momentum = group["momentum"]
        if momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                buffer = state["momentum_buffer"]
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            buffer = state["momentum_buffer"]
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        param.data -= group["lr"] * grad
