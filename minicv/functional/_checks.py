"""What the functional ops share when they check arguments: float tensors, int arguments, PyTorch's dtype
names for its messages, and the C-contiguous arrays the kernels take."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from minicv.errors import DtypeError
from minicv.tensor import Tensor

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# PyTorch's names for dtypes, as its messages print them: (C++ type name, ScalarType name).
_TORCH_DTYPE_NAMES = {
    "float64": ("double", "Double"),
    "float32": ("float", "Float"),
    "float16": ("c10::Half", "Half"),
    "int64": ("long", "Long"),
    "int32": ("int", "Int"),
    "int16": ("short", "Short"),
    "int8": ("signed char", "Char"),
    "uint8": ("unsigned char", "Byte"),
    "bool": ("bool", "Bool"),
    "complex64": ("c10::complex<float>", "ComplexFloat"),
    "complex128": ("c10::complex<double>", "ComplexDouble"),
}


def check_float_tensor(op: str, name: str, t: Any) -> None:
    """``t`` must be a float32/float64 Tensor (minicv supports no other dtype: integers raise DtypeError)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}(): argument '{name}' must be a Tensor, but got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise DtypeError(
            f'"{op}" not implemented for {name} of dtype {t.dtype}: expected a floating point tensor, float32 or '
            "float64"
        )


def torch_dtype_name(dtype: Any, cpp: bool = False) -> str:
    """PyTorch's ScalarType name of ``dtype`` ('Float'), or with ``cpp`` its C++ type name ('float')."""
    names = _TORCH_DTYPE_NAMES.get(np.dtype(dtype).name, (str(dtype),) * 2)
    return names[0] if cpp else names[1]


def is_int(value: Any) -> bool:
    """An integer argument as PyTorch takes one: anything with ``__index__`` but a bool."""
    return not isinstance(value, (bool, np.bool_)) and hasattr(value, "__index__")


def int_list(op: str, name: str, value: Any) -> list[int]:
    """An int or a list/tuple of ints as a list; the caller checks the length, as PyTorch does."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(is_int(v) for v in items):
        raise TypeError(f"{op}(): argument '{name}' must be an int or a tuple of ints, but got {value!r}")
    return [operator.index(v) for v in items]


def contiguous(array: Any) -> Any:
    """The kernels take C-contiguous arrays; gradients arriving from views may not be."""
    return array if array.flags.c_contiguous else array.copy()
