"""The device registry: a device is a name, an array module and a kernel table.

Every device's kernel table is a module exposing the functions the registry of ops names
(``minicv.ops.kernel_table()``), with the signatures documented in ``minicv.kernels``. Devices are
created on first use, so importing minicv never compiles a kernel or imports CuPy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from minicv.errors import ArgumentError, DeviceUnavailableError
from minicv.kernels.cuda.launch import NO_CUDA_MESSAGE
from minicv.ops import kernel_table


@dataclass(frozen=True)
class Device:
    """Where a tensor's data lives and which kernels compute on it."""

    name: str
    xp: ModuleType  # numpy, or cupy for the GPU
    kernels: Any  # a module (or namespace) with the functions of minicv.ops.kernel_table()
    on_gpu: bool = field(default=False)

    def __repr__(self) -> str:
        return f"device('{self.name}')"

    def asarray(self, data: Any, dtype: Any = None) -> Any:
        """Move array-like ``data`` onto this device (a copy only when needed)."""
        if not self.on_gpu and hasattr(data, "get") and type(data).__module__.startswith("cupy"):
            data = data.get()
        return self.xp.asarray(data, dtype=dtype)


def _module(name: str) -> Callable[[], ModuleType]:
    return lambda: importlib.import_module(name)


def _cupy() -> ModuleType:
    try:
        import cupy
    except ImportError as err:
        raise DeviceUnavailableError(NO_CUDA_MESSAGE) from err
    return cupy


def _numpy() -> ModuleType:
    import numpy

    return numpy


# name -> (array module factory, kernel table factory, on_gpu)
_FACTORIES: dict[str, tuple[Callable[[], ModuleType], Callable[[], Any], bool]] = {
    "numpy": (_numpy, _module("minicv.kernels.numpy"), False),
    "numba": (_numpy, _module("minicv.kernels.numba"), False),
    "cudasim": (_numpy, _module("minicv.kernels.cudasim"), False),
    "cuda": (_cupy, _module("minicv.kernels.cuda"), True),
}
ALIASES = {"cpu": "numba", "gpu": "cuda"}
_DEVICES: dict[str, Device] = {}
# The one default of the library and of the command's --device. Numba, not the NumPy specification: a
# training step of the demo's SegNet is about eight times faster (its first run compiles the kernels
# once, cached on disk), and it answers to 'cpu', PyTorch's default. Reading the spec is asking for it:
# device="numpy".
DEFAULT_DEVICE = "numba"
_default = DEFAULT_DEVICE


def register_device(
    name: str, array_module: Callable[[], ModuleType], kernels: Callable[[], Any], on_gpu: bool = False
) -> None:
    """Register a device: factories for its array module and its kernel table, called on first use."""
    _FACTORIES[name] = (array_module, kernels, on_gpu)
    _DEVICES.pop(name, None)


def device_names() -> list[str]:
    """Every registered device name (whether or not it can run on this machine)."""
    return list(_FACTORIES)


def canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"device must be a device name (str) or Device, but got {type(name).__name__}")
    name = ALIASES.get(name, name)
    if name not in _FACTORIES:
        known = ", ".join(f"{n} ({a})" if (a := _alias_of(n)) else n for n in _FACTORIES)
        raise ArgumentError(f"unknown device '{name}': expected one of {known}")
    return name


def _alias_of(name: str) -> str:
    return ", ".join(a for a, n in ALIASES.items() if n == name)


def get_device(device: str | Device | None = None) -> Device:
    """The Device for a name, an alias ('cpu' is 'numba') or None (the default device)."""
    if isinstance(device, Device):
        return device
    name = canonical_name(_default if device is None else device)
    if name not in _DEVICES:
        array_module, kernels, on_gpu = _FACTORIES[name]
        table = kernels()
        missing = missing_kernels(table)
        if missing:
            raise RuntimeError(f"device '{name}' lacks the kernels {', '.join(missing)}: every device supplies "
                               "the kernels of every op of the registry (minicv/ops.py)")
        _DEVICES[name] = Device(name, array_module(), table, on_gpu)
    return _DEVICES[name]


def missing_kernels(table: Any) -> list[str]:
    """The kernels of the registry of ops that ``table`` (a device's kernel table) lacks."""
    return [k for k in kernel_table() if not callable(getattr(table, k, None))]


def require_device(device: str) -> Device:
    """The Device, checked to run on this machine: ArgumentError for an unknown name,
    DeviceUnavailableError (saying what to install) where its library or its GPU is missing."""
    dev = get_device(device)
    if dev.on_gpu:
        try:
            dev.xp.cuda.runtime.getDeviceCount()
        except Exception as err:  # CuPy's CUDARuntimeError, or a driver that fails to load
            raise DeviceUnavailableError(f"the '{dev.name}' device found no usable GPU ({err})") from err
    return dev


def is_available(device: str) -> bool:
    """True when the device's array module and kernels load on this machine."""
    try:
        require_device(device)
    except Exception:
        return False
    return True


def available_devices() -> list[str]:
    return [name for name in _FACTORIES if is_available(name)]


def set_default_device(device: str) -> None:
    """The device new tensors (and layers' weights) are made on when none is named; DEFAULT_DEVICE
    until set."""
    global _default
    _default = canonical_name(device)


def default_device() -> Device:
    return get_device(_default)
