"""How many threads NumPy's BLAS (OpenBLAS) may use for the ops' matrix products (``matmul``, ``linear``).

On the ``numba`` device the kernels run in Numba's thread pool, one thread per core. OpenBLAS has a
pool of its own, whose threads keep spinning for a while after each product: a BLAS call between two
Numba kernels then leaves more busy threads than cores, and the next kernel's threads wait for the CPU
(the localizer's training step, three small linear layers between its convolutions, ran 2-4x slower).
The products an op makes there are small, so they run on the calling thread instead: a device's kernel
table says how many threads its BLAS calls get (``BLAS_THREADS``; absent: BLAS's own choice).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

# (setter, getter) symbol names: NumPy's wheels bundle OpenBLAS with a ``scipy_`` prefix and 64-bit ints;
# a system OpenBLAS has the plain names.
_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


def _candidates() -> list[str]:
    """Paths of the OpenBLAS libraries this process has loaded (Linux), else those NumPy's wheel bundles."""
    loaded: list[str] = []
    with contextlib.suppress(OSError):
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if "openblas" in os.path.basename(path).lower() and path not in loaded:
                    loaded.append(path)
    root = os.path.dirname(os.path.dirname(np.__file__))
    bundled = [p for d in ("numpy.libs", "numpy/.dylibs") for p in sorted(glob.glob(os.path.join(root, d, "*")))
               if "openblas" in os.path.basename(p).lower()]
    return loaded + [p for p in bundled if p not in loaded]


@functools.cache
def _controls() -> tuple[Callable[[int], Any], Callable[[], int]] | None:
    """OpenBLAS's (set_num_threads, get_num_threads), or None where NumPy's BLAS is not OpenBLAS."""
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: the same library, the same thread pool
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, getter
    return None


def get_threads() -> int | None:
    """The thread count OpenBLAS uses now; None where NumPy's BLAS is not OpenBLAS (nothing to set)."""
    controls = _controls()
    return None if controls is None else int(controls[1]())


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """Run the block with OpenBLAS limited to ``count`` threads, then restore its count (None: leave it)."""
    controls = None if count is None else _controls()
    if count is None or controls is None:
        yield
        return
    setter, getter = controls
    previous = int(getter())
    if previous == count:
        yield
        return
    setter(count)
    try:
        yield
    finally:
        setter(previous)


def threads_for(device: Any) -> contextlib.AbstractContextManager[None]:
    """The BLAS thread limit of ``device``'s kernel table (``BLAS_THREADS``), for the block's products."""
    return threads(getattr(device.kernels, "BLAS_THREADS", None))
