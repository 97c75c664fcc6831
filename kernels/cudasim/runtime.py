"""The cudasim backend: kernels/cuda/*.cu compiled by g++ against cudasim.h and launched through ctypes.

For a .cu file this generates one C++ file: cudasim.h, the dynamic shared-memory arrays the source
declares, the source itself, then for each kernel (name expression) two extern "C" functions:
``cudasim_launch_<i>(grid, block, shared_bytes, args, schedule)`` runs the grid, unpacking ``args`` (a
void*[] with one pointer per parameter, as cuLaunchKernel takes) into the kernel's parameters; and
``cudasim_signature_<i>()`` spells the parameter types, so that every argument is checked before a launch
(on a GPU a wrong scalar type is silently misread; here it raises).

Blocks, and the threads of a block between barriers, run in the order of the schedule: ``forward``
(the default) or ``reverse``, set by ``schedule(name)`` or $MINICV_CUDASIM_SCHEDULE. A GPU promises no
order, so a kernel whose result differs between the two has a race.

Libraries are cached in $MINICV_CUDASIM_CACHE (default ~/.cache/minicv/cudasim), named by a hash of the
generated file and the compiler command: a changed source, header or flag builds a new one. Extra compiler
flags come from $MINICV_CUDASIM_CXXFLAGS (``"-g -O0"`` to step through a kernel in gdb).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..cuda.launch import Backend, Launcher

HEADER = Path(__file__).resolve().parent / "cudasim.h"
COMPILER = os.environ.get("CXX", "g++")
# -U_FORTIFY_SOURCE: fortified longjmp refuses the jumps between fiber stacks that cudasim.h makes.
FLAGS = ("-std=c++17", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-fno-gnu-unique", "-U_FORTIFY_SOURCE",
         "-w", *shlex.split(os.environ.get("MINICV_CUDASIM_CXXFLAGS", "")))  # later flags win: -O0 over -O2

# `extern __shared__ float name[];` inside a kernel refers to an array defined at file scope.
_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+([^;\[]*?)\s*\b(\w+)\s*\[\s*\]\s*;")


SCHEDULES = ("forward", "reverse")  # cudasim.h's Schedule, in order


def _schedule_named(name: str) -> int:
    if name not in SCHEDULES:
        raise ValueError(f"unknown cudasim schedule {name!r}: expected one of {', '.join(SCHEDULES)}")
    return SCHEDULES.index(name)


_schedule = _schedule_named(os.environ.get("MINICV_CUDASIM_SCHEDULE", "forward"))


def get_schedule() -> str:
    return SCHEDULES[_schedule]


@contextmanager
def schedule(name: str) -> Iterator[None]:
    """Run cudasim launches inside the block in schedule ``name``: blocks, and the threads of each block
    between barriers, first to last ("forward") or last to first ("reverse")."""
    global _schedule
    previous, _schedule = _schedule, _schedule_named(name)
    try:
        yield
    finally:
        _schedule = previous


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minicv" / "cudasim"
    return Path(os.environ.get("MINICV_CUDASIM_CACHE", default))


def generate(source: str, names: Sequence[str]) -> str:
    """The C++ translation unit of one .cu source and its kernels."""
    lines = [f'#include "{HEADER}"']
    shared = {name: specifiers for specifiers, name in _DYNAMIC_SHARED.findall(source)}
    for name, specifiers in shared.items():
        align = "" if "__align__" in specifiers else "alignas(16) "
        size = f"cudasim::kMaxDynamicSharedBytes / sizeof({name}[0])"
        lines += [f"extern __shared__ {specifiers} {name}[];",
                  f"{align}__shared__ {specifiers} {name}[{size}];"]
    lines.append(source)
    lines.append('extern "C" {')
    for i, name in enumerate(names):
        export = '__attribute__((visibility("default")))'
        lines += [
            f"{export} const char* cudasim_launch_{i}(const unsigned* grid, const unsigned* block, "
            f"size_t shared_bytes, void** args, int schedule) {{",
            f"    return cudasim::launch_kernel(&{name}, grid, block, shared_bytes, args, schedule);",
            "}",
            f"{export} const char* cudasim_signature_{i}() {{ return cudasim::signature_of(&{name}); }}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


class BuildError(RuntimeError):
    """g++ rejected a generated file; the message is g++'s."""


_build_lock = threading.Lock()


def build(label: str, source: str, names: Sequence[str]) -> Path:
    """The shared library of ``source`` (built now unless cached), exporting the kernels ``names``;
    ``label`` names the library and the error messages ("pool" for pool.cu)."""
    code = generate(source, names)
    command = (COMPILER, *FLAGS)
    key = hashlib.sha256("\0".join((*command, HEADER.read_text(encoding="utf-8"), code)).encode()).hexdigest()
    library = cache_dir() / f"{label}-{key[:20]}.so"
    with _build_lock:
        if library.exists():
            return library
        if shutil.which(COMPILER) is None:
            raise BuildError(f"the cudasim device needs a C++ compiler: {COMPILER!r} is not on PATH")
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="building-", dir=library.parent) as work:  # same filesystem
            cpp, built = Path(work) / f"{label}.cpp", Path(work) / f"{label}.so"
            cpp.write_text(code, encoding="utf-8")
            result = subprocess.run([*command, str(cpp), "-o", str(built)], capture_output=True, text=True)
            if result.returncode != 0:
                raise BuildError(f"g++ could not compile {label} for cudasim:\n{result.stderr}")
            os.replace(built, library)  # atomic: no process loads a half-written library
    return library


# NumPy type characters of cudasim::type_char; 'V' (a struct) is passed as raw bytes, unchecked.
_TYPE_NAMES = {"f": "float", "d": "double", "?": "bool", "b": "char", "B": "unsigned char", "h": "short",
               "H": "unsigned short", "i": "int", "I": "unsigned int", "q": "long long",
               "Q": "unsigned long long"}


def _c_name(code: str) -> str:
    pointer, const = code.startswith("*"), code.startswith("*c")
    base = _TYPE_NAMES.get(code[-1], "struct")
    return f"{'const ' if const else ''}{base}{'*' if pointer else ''}"


class CudasimKernel:
    """A launcher of one kernel of a cudasim library: checks the arguments, then runs the grid."""

    def __init__(self, library: ctypes.CDLL, index: int, name: str) -> None:
        self.name = name
        self._launch = getattr(library, f"cudasim_launch_{index}")
        self._launch.restype = ctypes.c_char_p
        dims = ctypes.POINTER(ctypes.c_uint)
        self._launch.argtypes = (dims, dims, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int)
        signature = getattr(library, f"cudasim_signature_{index}")
        signature.restype = ctypes.c_char_p
        self.parameters = tuple(signature().decode().split())

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.name} takes {len(self.parameters)} arguments, got {len(args)}")
        keep_alive = [self._argument(i, code, arg)
                      for i, (code, arg) in enumerate(zip(self.parameters, args, strict=True))]
        pointers = (ctypes.c_void_p * max(1, len(args)))(*(holder.ctypes.data for holder in keep_alive))
        error = self._launch(_dims(grid, "grid"), _dims(block, "block"), shared_mem, pointers, _schedule)
        if error is not None:
            raise RuntimeError(f"cudasim could not launch {self.name} with grid {grid}, block {block}: "
                               f"{error.decode()}")

    def _argument(self, i: int, code: str, arg: Any) -> np.ndarray:
        """A NumPy array holding the bytes of parameter i: the data pointer of an array, or the scalar."""
        where = f"argument {i} of {self.name} ({_c_name(code)})"
        if code.startswith("*"):
            if arg is None:  # a null pointer, as CuPy passes None (an optional operand the kernel checks for)
                return np.array(0, dtype=np.uintp)
            if not isinstance(arg, np.ndarray):
                raise TypeError(f"{where}: expected a numpy array or None, got {type(arg).__name__}")
            if code[-1] != "V" and arg.dtype != np.dtype(code[-1]):
                raise TypeError(f"{where}: expected an array of {np.dtype(code[-1])}, got {arg.dtype}")
            if not arg.flags.c_contiguous:
                raise ValueError(f"{where}: the array must be C-contiguous")
            if code[1] != "c" and not arg.flags.writeable:
                raise ValueError(f"{where}: the kernel writes to it, but the array is read-only")
            return np.array(arg.ctypes.data, dtype=np.uintp)
        if code == "V":
            return np.ascontiguousarray(arg)
        if not isinstance(arg, np.generic) or arg.dtype != np.dtype(code):
            raise TypeError(f"{where}: expected np.{np.dtype(code).name}, got {arg!r} "
                            f"of type {type(arg).__name__}")
        return np.array(arg)


def _dims(dims: tuple, what: str):
    dims = tuple(int(d) for d in dims)
    if not 1 <= len(dims) <= 3 or min(dims) < 0:
        raise ValueError(f"a {what} has 1 to 3 non-negative dimensions, got {dims}")
    return (ctypes.c_uint * 3)(*dims, *(1,) * (3 - len(dims)))


def load(source: str, names: Sequence[str], label: str = "kernels") -> dict[str, CudasimKernel]:
    """Compile CUDA C ``source`` (any text, not only a file of kernels/cuda) and return a launcher for each
    name expression: the way to try a kernel of one's own on the CPU."""
    library = ctypes.CDLL(str(build(label, source, names)))
    return {name: CudasimKernel(library, i, name) for i, name in enumerate(names)}


class CudasimBackend(Backend):
    """The CUDA kernels on the CPU: NumPy arrays, g++-compiled kernels, blocks run one after another."""

    name = "cudasim"
    xp = np
    # Grid-stride kernels get a few blocks: each fiber then walks many elements, which is what costs
    # least on a CPU (a GPU gets one thread per element).
    max_blocks = 8

    def _compile(self, source_file: str, source: str, names: Sequence[str]) -> dict[str, CudasimKernel]:
        return load(source, names, label=Path(source_file).stem)

    def _launcher(self, module: dict[str, CudasimKernel], name_expression: str) -> Launcher:
        return module[name_expression]
