"""The launch interface shared by the ``cuda`` device (CuPy) and the ``cudasim`` device (g++ on the CPU).

A backend has an array module ``xp`` (cupy or numpy) and ``kernel(source_file, name_expression)``, which
returns a launcher ``launch(grid, block, args, shared_mem=0)`` like cupy.RawKernel's: ``source_file`` is
a .cu file of the backend's ``source_dir`` ("pool.cu"), ``name_expression`` one of its kernels
("unpool_gather_kernel<float>"). ``source_dir`` is this folder unless a backend is made with another one
(a learner's own .cu files, which then run through the same launch code).
Arguments are arrays of the backend (for pointers) and NumPy scalars of exactly the parameter's type
(np.int32 for int, np.int64 for long long, np.float32 for float, ...): a GPU reads the bytes it is given.

Each .cu file is compiled once per backend, with every kernel it defines: each ``template <typename T>
__global__`` kernel for float and double, each plain ``__global__`` kernel as is, plus any other name
expression asked for. ``#include "x.cuh"`` of this folder is inlined, so a compiled module depends on the
text it was built from and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

KERNEL_DIR = Path(__file__).resolve().parent
CUDA_OPTIONS = ("-std=c++17",)
# From the source folder: an unrelated package named "minicv" is on PyPI, so `pip install minicv[cuda]` would
# install that one.
NO_CUDA_MESSAGE = 'the cuda device needs CuPy and an NVIDIA GPU: pip install -e ".[cuda]" in the minicv source folder'

Launcher = Callable[..., None]  # launch(grid: tuple, block: tuple, args: tuple, shared_mem: int = 0)

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)
_TEMPLATE_KERNEL = re.compile(r"template\s*<\s*typename\s+\w+\s*>\s*__global__\s+void\s+(\w+)\s*\(")
_ANY_KERNEL = re.compile(r"__global__\s+void\s+(\w+)\s*\(")
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def read_source(source_file: str, folder: Path = KERNEL_DIR) -> str:
    """The text of a .cu file of ``folder`` with its local includes inlined (each once), with #line
    markers so that compiler messages name the original file and line."""
    included: set[str] = set()

    def expand(name: str) -> str:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"no CUDA source {name!r} in {folder}")
        included.add(name)
        text = path.read_text(encoding="utf-8")
        pieces, position, line = [f'#line 1 "{path}"\n'], 0, 1  # `line` is the number of line `position`
        for match in _INCLUDE.finditer(text):
            pieces.append(text[position : match.start()])
            if match.group(1) not in included:
                pieces.append(expand(match.group(1)) + "\n")
            line += text.count("\n", position, match.start()) + 1
            position = match.end() + 1  # past the #include line
            pieces.append(f'#line {line} "{path}"\n')
        pieces.append(text[position:])
        return "".join(pieces)

    return expand(source_file)


def kernel_names(source: str) -> tuple[str, ...]:
    """The name expressions of every kernel defined in ``source``: templates for float and double."""
    templates = _TEMPLATE_KERNEL.findall(source)
    plain = [name for name in _ANY_KERNEL.findall(source) if name not in templates]
    return tuple(f"{name}<{ctype}>" for name in templates for ctype in ("float", "double")) + tuple(plain)


def ctype(dtype: Any) -> str:
    """The C type of a float dtype ("float" or "double"), the template argument of every kernel."""
    try:
        return _CTYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"CUDA kernels take float32 or float64 arrays, got {np.dtype(dtype)}") from None


class Backend:
    """What the two CUDA devices share: one compiled module per .cu file, one launcher per kernel.

    Subclasses provide ``xp`` and ``_compile(source_file, source, names) -> module`` and
    ``_launcher(module, name) -> launch``.
    """

    name: str
    # Grid-stride kernels (every kernel of the table but conv) use at most this many blocks.
    max_blocks: int

    def __init__(self, source_dir: Path = KERNEL_DIR) -> None:
        self.source_dir = Path(source_dir)
        self._modules: dict[str, tuple[tuple[str, ...], Any]] = {}
        self._launchers: dict[tuple[str, str], Launcher] = {}

    @property
    def xp(self) -> Any:
        """The array module: cupy or numpy (Any: CuPy has no type hints)."""
        raise NotImplementedError

    def kernel(self, source_file: str, name_expression: str) -> Launcher:
        key = (source_file, name_expression)
        if key not in self._launchers:
            names, module = self._modules.get(source_file, ((), None))
            if name_expression not in names:
                source = read_source(source_file, self.source_dir)
                names = tuple(dict.fromkeys((*kernel_names(source), *names, name_expression)))
                module = self._compile(source_file, source, names)
                self._modules[source_file] = (names, module)
            self._launchers[key] = self._launcher(module, name_expression)
        return self._launchers[key]

    def _compile(self, source_file: str, source: str, names: Sequence[str]) -> Any:
        raise NotImplementedError

    def _launcher(self, module: Any, name_expression: str) -> Launcher:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class CudaBackend(Backend):
    """The GPU, through cupy.RawModule (NVRTC). CuPy is imported on first use, so that minicv.kernels.cuda
    imports everywhere; using it without CuPy or a GPU raises RuntimeError(NO_CUDA_MESSAGE)."""

    name = "cuda"
    max_blocks = 2**31 - 1  # no cap: one thread per element

    def __init__(self, source_dir: Path = KERNEL_DIR) -> None:
        super().__init__(source_dir)
        self._cupy = None

    @property
    def xp(self) -> Any:
        if self._cupy is None:
            try:
                import cupy

                gpu_count = cupy.cuda.runtime.getDeviceCount()
            except Exception as error:  # ImportError, or CUDARuntimeError without a driver
                raise RuntimeError(NO_CUDA_MESSAGE) from error
            if gpu_count == 0:
                raise RuntimeError(NO_CUDA_MESSAGE)
            self._cupy = cupy
        return self._cupy

    def _compile(self, source_file: str, source: str, names: Sequence[str]) -> Any:
        return self.xp.RawModule(code=source, name_expressions=list(names), options=CUDA_OPTIONS)

    def _launcher(self, module: Any, name_expression: str) -> Launcher:
        function = module.get_function(name_expression)

        def launch(grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
            function(grid, block, args, shared_mem=shared_mem)

        return launch


THREADS_PER_BLOCK = 256


def launch_elements(backend: Backend, source_file: str, name_expression: str, count: int,
                    args: tuple) -> None:
    """Launch a kernel that walks ``count`` elements with GRID_STRIDE_LOOP (common.cuh), THREADS_PER_BLOCK
    threads a block and enough blocks for one thread per element (at most backend.max_blocks). Nothing runs
    when count is 0 (a grid of no blocks is an error in CUDA)."""
    if count == 0:
        return
    blocks = min(-(-count // THREADS_PER_BLOCK), backend.max_blocks)
    backend.kernel(source_file, name_expression)((blocks, 1, 1), (THREADS_PER_BLOCK, 1, 1), args)
