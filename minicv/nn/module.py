"""Module and Parameter: PyTorch's way of holding a model's weights, state and sub-modules.

A Module registers what is assigned to it: a Parameter becomes a parameter, a Module a child, and
``register_buffer`` adds state that is saved but not trained (BatchNorm's running statistics). From
these it derives ``parameters()``, ``state_dict()`` (NumPy arrays, ready for an .npz checkpoint),
``to(device)`` and ``device`` (where its tensors are, so where its inputs go), ``train()``/``eval()`` and
``zero_grad()``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from minicv.devices import Device, get_device
from minicv.errors import ArgumentError
from minicv.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a module's weight: a leaf that requires grad (unless told otherwise)."""

    def __init__(self, data: Any, requires_grad: bool = True):
        if isinstance(data, Tensor):
            super().__init__(data.data, requires_grad, data.device)
        else:
            super().__init__(data, requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class HookHandle:
    """Removes the hook it was returned for."""

    def __init__(self, hooks: list, hook: Callable) -> None:
        self.hooks, self.hook = hooks, hook

    def remove(self) -> None:
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


class Module:
    """The base of every layer and model: subclasses set attributes in __init__ and define forward."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", [])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = self.forward(*args, **kwargs)
        for hook in self._forward_hooks:
            hook(self, args, output)
        return output

    def register_forward_hook(self, hook: Callable[[Module, tuple, Any], None]) -> HookHandle:
        """Call ``hook(module, inputs, output)`` after every forward (to count FLOPs, say); the
        returned handle's ``remove()`` takes it off again."""
        self._forward_hooks.append(hook)
        return HookHandle(self._forward_hooks, hook)

    # ----------------------------------------------------------------- registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign '{name}' before Module.__init__() is called")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' (Tensor or None expected)")
            self._buffers[name] = value
            return
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        self.__dict__.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (None reserves the name: a layer built with bias=False, say)."""
        self._check_new_name(name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' (Parameter or None)")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add state that is not trained but moves with the module and (if persistent) is saved."""
        self._check_new_name(name)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (Tensor or None)")
        self._buffers[name] = tensor
        if persistent:
            self._persistent.add(name)
        else:
            self._persistent.discard(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_new_name(name)
        self._modules[name] = module

    def _check_new_name(self, name: str) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"a module attribute name must be a non-empty string without '.', but got {name!r}")
        if name in self.__dict__:
            raise KeyError(f"attribute '{name}' already exists")

    # ----------------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every module below it, each once, with dotted names ('' for this one)."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(self, table: str, recurse: bool) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        modules = self.named_modules() if recurse else iter([("", self)])
        for prefix, module in modules:
            for name, t in getattr(module, table).items():
                if t is not None and id(t) not in seen:  # a shared weight is listed once
                    seen.add(id(t))
                    yield (f"{prefix}.{name}" if prefix else name), t

    def named_parameters(self, recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        yield from self._named_members("_parameters", recurse)  # type: ignore[misc]

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse):
            yield p

    def named_buffers(self, recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse):
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        """How many numbers the model learns (each shared parameter counted once)."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call fn on every sub-module (children first, as PyTorch does), then on this one."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ----------------------------------------------------------------- modes and gradients
    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, but got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (PyTorch's default, set_to_none=True)."""
        for p in self.parameters():
            p.grad = None

    # ----------------------------------------------------------------- devices and dtypes
    @property
    def device(self) -> Device:
        """The one device of every parameter and buffer: where this module computes, so where its inputs
        go (``Tensor(batch, device=model.device)``). PyTorch's Module has no such property (its tensors
        may be spread over devices); minicv's never are, as ``to`` moves all of them. Raises ArgumentError
        when the module holds no tensor, or tensors on two devices."""
        devices = {t.device.name: t.device for t in [*self.parameters(), *self.buffers()]}
        if len(devices) != 1:
            found = f"tensors on {', '.join(sorted(devices))}" if devices else "no parameters or buffers"
            raise ArgumentError(f"{type(self).__name__}.device: expected every parameter and buffer on one device, "
                                f"but found {found}; move them with .to(device)")
        return next(iter(devices.values()))

    def to(self, device: str | Device | None = None, dtype: Any = None) -> Module:
        """Move every parameter and buffer to ``device`` and/or cast floating ones to ``dtype``, in place:
        the Parameter objects stay the same, so an optimizer built before still holds them."""
        target = get_device(device) if device is not None else None
        if dtype is not None and np.dtype(dtype).kind != "f":
            raise TypeError(f"Module.to only accepts floating point dtypes, but got {np.dtype(dtype)}")
        for t in [*self.parameters(), *self.buffers()]:
            _move(t, target, dtype)
            if t.grad is not None:
                _move(t.grad, target, dtype)
        return self

    def float(self) -> Module:
        return self.to(dtype=np.float32)

    def double(self) -> Module:
        return self.to(dtype=np.float64)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Every parameter and persistent buffer by dotted name, as a NumPy copy (an .npz-ready dict)."""
        return OrderedDict((key, t.detach().numpy().copy()) for key, t in self._state_targets().items())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (or Tensors) into the parameters and buffers of the same names, keeping each
        one's device and dtype. Shapes must match; with ``strict`` the keys too. Raises ArgumentError
        (a RuntimeError, as PyTorch's) listing every problem by key."""
        targets = self._state_targets()
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        errors = []
        for key, t in targets.items():
            if key in state_dict:
                value = _as_numpy(state_dict[key])
                if value.shape != t.shape:
                    errors.append(
                        f"size mismatch for {key}: copying a param with shape {value.shape} from checkpoint, "
                        f"the shape in current model is {t.shape}."
                    )
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise ArgumentError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for key, t in targets.items():
            if key in state_dict:
                t.data = t.device.asarray(_as_numpy(state_dict[key]), dtype=t.dtype).copy()
        return IncompatibleKeys(missing, unexpected)

    def _state_targets(self) -> OrderedDict[str, Tensor]:
        """The tensors a state dict holds: parameters and persistent buffers, by dotted name."""
        targets: OrderedDict[str, Tensor] = OrderedDict()
        for prefix, module in self.named_modules():
            entries = list(module._parameters.items())
            entries += [(n, b) for n, b in module._buffers.items() if n in module._persistent]
            for name, t in entries:
                if t is not None:
                    targets[f"{prefix}.{name}" if prefix else name] = t
        return targets

    # ----------------------------------------------------------------- printing
    def extra_repr(self) -> str:
        """The layer's settings, shown inside its repr (subclasses override)."""
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + _indent(repr(module)) for name, module in self._modules.items()]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))


def _as_numpy(value: Any) -> np.ndarray:
    return value.detach().numpy() if isinstance(value, Tensor) else np.asarray(value)


def _move(t: Tensor, device: Device | None, dtype: Any) -> None:
    target = device or t.device
    new_dtype = np.dtype(dtype) if dtype is not None and t.dtype.kind == "f" else t.dtype
    if target.name == t.device.name and new_dtype == t.dtype:
        return
    t.data = target.asarray(t.data, dtype=new_dtype)
    t.device = target


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")
