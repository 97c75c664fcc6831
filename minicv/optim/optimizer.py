"""Optimizer: parameter groups with their hyper-parameters, per-parameter state, and checkpoints of both.

Subclasses implement ``update(param, grad, state, group)`` on raw arrays (the device's xp), which
``step`` calls under no_grad for every parameter that has a gradient.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from minicv.autograd import no_grad
from minicv.errors import ArgumentError
from minicv.tensor import Tensor


class Optimizer:
    """``params`` is an iterable of Parameters, or of dicts ``{"params": [...], <hyper-parameter>: ...}``
    (parameter groups); hyper-parameters a group leaves out come from ``defaults``."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        groups = list(params)
        if not groups:
            raise ArgumentError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        for group in groups:
            self.add_param_group(group)
        self.state: dict[int, dict[str, Any]] = {}  # id(param) -> its state arrays

    def add_param_group(self, group: dict[str, Any]) -> None:
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ArgumentError("can't optimize a non-leaf Tensor")
        known = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in known for p in params) or len({id(p) for p in params}) != len(params):
            raise ArgumentError("some parameters appear in more than one parameter group")
        self.param_groups.append({**self.defaults, **group, "params": params})

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data = p.grad.data * 0

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self.update(p, p.grad.data, self.state.setdefault(id(p), {}), group)

    def update(self, param: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------- checkpoints
    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """{"state": {index: {name: NumPy array}}, "param_groups": [{hyper-parameters, "params": [index]}]},
        parameters numbered in group order as PyTorch does; arrays are copies, ready for np.savez."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {
            index[id(p)]: {k: _to_numpy(v) for k, v in self.state[id(p)].items()}
            for p in self._params()
            if self.state.get(id(p))
        }
        groups, start = [], 0
        for group in self.param_groups:
            hyper = {k: v for k, v in group.items() if k != "params"}
            groups.append({**hyper, "params": list(range(start, start + len(group["params"])))})
            start += len(group["params"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and per-parameter state saved by ``state_dict``. Everything is checked
        (counts, the state names the optimizer keeps, shapes) before anything is assigned; raises
        ArgumentError naming the entry."""
        params = self._params()
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("state"), dict):
            raise ArgumentError("loaded state dict has no 'state' dict")
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                                   for g in groups):
            raise ArgumentError("loaded state dict has no 'param_groups' list of dicts with 'params' lists")
        if len(groups) != len(self.param_groups) or any(
            len(saved["params"]) != len(group["params"]) for saved, group in zip(groups, self.param_groups, strict=True)
        ):
            raise ArgumentError("loaded state dict has a different number of parameters or parameter groups")
        merged = [{**group, **saved, "params": group["params"]} for saved, group in zip(groups, self.param_groups,
                                                                                      strict=True)]
        group_of = {id(p): group for group in merged for p in group["params"]}
        loaded: dict[int, dict[str, Any]] = {}
        for i, entries in state_dict["state"].items():
            if not str(i).isdecimal() or not int(i) < len(params):
                raise ArgumentError(f"loaded state dict names parameter {i}, but the optimizer has {len(params)}")
            i = int(i)
            p = params[i]
            if not isinstance(entries, dict):
                raise ArgumentError(f"loaded state of parameter {i} is {type(entries).__name__}, not a dict")
            expected = self.state_names(group_of[id(p)])
            if entries and expected is not None and set(entries) != expected:  # {}: not stepped yet
                raise ArgumentError(f"loaded state of parameter {i} holds {sorted(entries)}, but "
                                    f"{type(self).__name__} keeps {sorted(expected)}")
            loaded[id(p)] = {}
            for name, value in entries.items():
                value = np.asarray(value)
                if value.ndim and value.shape != p.shape:
                    raise ArgumentError(
                        f"loaded state '{name}' of parameter {i} has shape {value.shape}, but the parameter has "
                        f"shape {p.shape}"
                    )
                # scalars (the step count) stay on the host; arrays go to the parameter's device and dtype
                loaded[id(p)][name] = p.device.asarray(value, dtype=p.dtype).copy() if value.ndim else value.copy()
        for group, saved in zip(self.param_groups, merged, strict=True):
            group.update(saved)
        self.state = loaded

    def state_names(self, group: dict[str, Any]) -> set[str] | None:
        """The names of the state ``update`` keeps for a parameter of ``group`` once it has stepped, which
        ``load_state_dict`` insists on; None (a subclass that does not say) checks no names."""
        return None

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join([*lines, ")"])


def _to_numpy(value: Any) -> np.ndarray:
    return np.array(value.get() if hasattr(value, "get") and not isinstance(value, np.ndarray) else value)


def check_non_negative(name: str, value: float, label: str) -> None:
    """PyTorch's hyper-parameter checks: 'Invalid learning rate: -1'."""
    if not value >= 0.0:
        raise ArgumentError(f"Invalid {label}: {value} (argument '{name}')")
