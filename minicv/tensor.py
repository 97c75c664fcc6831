"""Tensor: an array on a device, the gradient accumulated into it, and the node that made it.

The engine's one import cycle runs through here: a Tensor's operators (``+``, ``@``, ``.sum()``,
``.to()``) are the differentiable ops of ``minicv.functional.basic``, and those ops (and ``autograd``,
which records them) take and make Tensors. The cycle is cut at call time: this module imports
``functional.basic`` inside the methods that use it (``_basic()``, ``to``), and ``autograd`` imports
Tensor inside ``Function.apply``, when every module is loaded.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import numpy as np

from minicv import autograd
from minicv.devices import Device, default_device, get_device
from minicv.errors import ArgumentError

_FLOAT_DEFAULT = np.float32  # like torch: Python floats and float lists become float32, ints int64; arrays
# keep their dtype (an int32 array stays int32, and ops that want int64 raise, as PyTorch's do)


class Tensor:
    """An n-dimensional array with reverse-mode autograd.

    ``data`` is the raw array (NumPy, or CuPy on the GPU); ``grad`` is a Tensor (or None) that
    gradients accumulate into until ``zero_grad``; ``device`` is where data lives and which kernels run.
    """

    __slots__ = ("data", "grad", "requires_grad", "device", "_node", "__weakref__")
    __array_priority__ = 1000  # numpy scalars and arrays defer to Tensor's operators

    def __init__(self, data: Any, requires_grad: bool = False, device: str | Device | None = None, dtype: Any = None):
        if isinstance(data, Tensor):
            data = data.data
        dev = get_device(device)
        array = dev.asarray(data, dtype=dtype)
        if dtype is None and not _is_array(data):  # Python numbers: PyTorch's default dtypes
            if array.dtype.kind == "f":
                array = array.astype(_FLOAT_DEFAULT)
            elif array.dtype.kind == "i":
                array = array.astype(np.int64)  # NumPy's default int is int32 on Windows
        self.data: Any = array  # NumPy or CuPy: Any, as CuPy has no type hints
        self.device = dev
        self.grad: Tensor | None = None
        self._node: autograd.Function | None = None
        self.requires_grad: bool = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array: Any, device: Device, requires_grad: bool, node: autograd.Function | None) -> Tensor:
        """A Tensor around an array already on ``device`` (no copy, no checks): used by Functions."""
        t = cls.__new__(cls)
        t.data, t.device, t.grad, t.requires_grad, t._node = array, device, None, requires_grad, node
        return t

    # ----------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    def numel(self) -> int:
        return self.size

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        return len(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> autograd.Function | None:
        return self._node

    # ----------------------------------------------------------------- autograd
    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients, but got dtype {self.dtype}")
        if not self.is_leaf:
            raise RuntimeError("requires_grad can only be changed on leaf tensors; use detach() first")
        self.requires_grad = bool(requires_grad)
        return self

    def backward(self, grad: Any = None) -> None:
        """Accumulate the gradient of this tensor into every leaf that requires one."""
        autograd.backward(self, grad)

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data, self.device, False, None)

    def zero_grad(self) -> None:
        self.grad = None

    # ----------------------------------------------------------------- moving data
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied off the GPU when needed)."""
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a Tensor that requires grad. Use tensor.detach().numpy().")
        return self.data.get() if self.device.on_gpu else self.data

    def item(self) -> float | int:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, but got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self) -> Any:
        return self.detach().numpy().tolist()

    def to(self, device: str | Device | None = None, dtype: Any = None) -> Tensor:
        """A copy on another device and/or dtype (differentiable); self when nothing changes."""
        from minicv.functional.basic import to

        return to(self, get_device(device) if device is not None else self.device, dtype)

    def float(self) -> Tensor:
        return self.to(dtype=np.float32)

    def double(self) -> Tensor:
        return self.to(dtype=np.float64)

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> Any:
        return self.data.__dlpack_device__()

    def __repr__(self) -> str:
        extra = f", device='{self.device.name}'" if self.device.name != default_device().name else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(np.asarray(self.detach().numpy()), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{extra}{grad})"

    # ----------------------------------------------------------------- operators
    def __add__(self, other: Any) -> Tensor:
        return _basic().add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _basic().add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _basic().sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _basic().sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _basic().mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _basic().mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _basic().div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _basic().div(other, self)

    def __neg__(self) -> Tensor:
        return _basic().neg(self)

    def __pow__(self, exponent: builtins.float) -> Tensor:  # float here is the method Tensor.float
        return _basic().pow(self, exponent)

    def __matmul__(self, other: Any) -> Tensor:
        return _basic().matmul(self, other)

    def __getitem__(self, index: Any) -> Tensor:
        return _basic().getitem(self, index)

    def _compare(self, other: Any, op: str) -> Tensor:
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(getattr(self.data, op)(other), self.device, False, None)

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, "__lt__")

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, "__le__")

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, "__gt__")

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, "__ge__")

    def eq(self, other: Any) -> Tensor:
        return self._compare(other, "__eq__")

    __hash__ = object.__hash__  # tensors are graph nodes, hashed by identity (== is not overloaded)

    # ----------------------------------------------------------------- methods
    def sum(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        return _basic().sum(self, dim, keepdim)

    def mean(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        return _basic().mean(self, dim, keepdim)

    def reshape(self, *shape: Any) -> Tensor:
        return _basic().reshape(self, *shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _basic().flatten(self, start_dim, end_dim)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _basic().transpose(self, dim0, dim1)

    def permute(self, *dims: Any) -> Tensor:
        return _basic().permute(self, *dims)

    def unsqueeze(self, dim: int) -> Tensor:
        return _basic().unsqueeze(self, dim)

    def squeeze(self, dim: int | None = None) -> Tensor:
        return _basic().squeeze(self, dim)

    def exp(self) -> Tensor:
        return _basic().exp(self)

    def log(self) -> Tensor:
        return _basic().log(self)

    def abs(self) -> Tensor:
        return _basic().abs(self)

    def sqrt(self) -> Tensor:
        return _basic().sqrt(self)

    def relu(self) -> Tensor:
        return _basic().relu(self)

    def sigmoid(self) -> Tensor:
        return _basic().sigmoid(self)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        result = self.data.argmax(axis=dim)
        if keepdim and dim is not None:
            result = self.device.xp.expand_dims(result, dim)
        return Tensor._wrap(result.astype(np.int64), self.device, False, None)

    def max(self) -> Tensor:
        return _basic().amax(self)

    def contiguous(self) -> Tensor:
        return self

    @property
    def T(self) -> Tensor:  # noqa: N802 (PyTorch's name)
        return self.permute(*reversed(range(self.ndim)))


def _basic() -> Any:
    from minicv.functional import basic

    return basic


def _is_array(data: Any) -> bool:
    return hasattr(data, "dtype") and hasattr(data, "shape")


def common_device(*inputs: Any) -> Device:
    """The one device of all Tensors among ``inputs``; raises if they are on different devices."""
    devices = {t.device.name: t.device for t in inputs if isinstance(t, Tensor)}
    if len(devices) > 1:
        raise ArgumentError(
            f"Expected all tensors to be on the same device, but found tensors on {', '.join(sorted(devices))}; "
            "move them with .to(device)"
        )
    if not devices:
        return default_device()
    return next(iter(devices.values()))


# ------------------------------------------------------------------------- creation
def tensor(data: Any, dtype: Any = None, device: str | Device | None = None, requires_grad: bool = False) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (Python floats become float32)."""
    if isinstance(data, Tensor):
        data = data.detach().numpy() if not data.device.on_gpu else data.data
    return Tensor(data.copy() if _is_array(data) else data, requires_grad, device, dtype)


def zeros(
    *shape: Any, dtype: Any = np.float32, device: str | Device | None = None, requires_grad: bool = False
) -> Tensor:
    dev = get_device(device)
    return Tensor(dev.xp.zeros(_shape(shape), dtype=dtype), requires_grad, dev)


def ones(
    *shape: Any, dtype: Any = np.float32, device: str | Device | None = None, requires_grad: bool = False
) -> Tensor:
    dev = get_device(device)
    return Tensor(dev.xp.ones(_shape(shape), dtype=dtype), requires_grad, dev)


def zeros_like(t: Tensor) -> Tensor:
    return zeros(*t.shape, dtype=t.dtype, device=t.device)


def ones_like(t: Tensor) -> Tensor:
    return ones(*t.shape, dtype=t.dtype, device=t.device)


def from_numpy(array: np.ndarray, device: str | Device | None = None) -> Tensor:
    return Tensor(array, device=device)


def from_dlpack(obj: Any, device: str | Device | None = None) -> Tensor:
    """A tensor viewing a DLPack-capable array (a CuPy or torch array, say) without a copy where possible."""
    dev = get_device(device)
    return Tensor(dev.xp.from_dlpack(obj), device=dev)


def _shape(shape: tuple[Any, ...]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)
