"""The CUDA track: the learner writes the ``.cu`` files; minicv's own launch code runs them.

``init`` writes each of minicv's ``kernels/cuda/*.cu`` files as stubs: the same kernels with the same
template and parameters (the launch code in ``kernels/cuda/table.py`` and ``conv.py`` calls them with
exactly these), the comment above each kernel (its formula), the constants and parameter macros the
signatures use, and an empty body marked "not started". ``common.cuh`` (GRID_STRIDE_LOOP, infinity,
report_bad_position) is given as it is: it is a helper, not an exercise.

Grading binds the table of ``kernels/cuda/table.py`` to a backend whose ``source_dir`` is the learner's
folder: on cudasim in the forward thread order (every stage), then in the reverse order (the kernel's
own calls: a race shows up in one of the two), then on the GPU when there is one.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minicv.exercises.contracts import EXERCISES
from minicv.exercises.hints import MISSING_BARRIER
from minicv.exercises.tracks import LearnerTable, Run, Track, learner_place
from minicv.kernels.cuda.launch import KERNEL_DIR, Backend, kernel_names, read_source
from minicv.ops import kernel_table

CUDA_FILES = {"loss": "loss.cu", "pooling": "pool.cu", "upsample": "upsample.cu", "conv": "conv.cu",
              "batchnorm": "batchnorm.cu"}
HELPERS = ("common.cuh",)  # given to the learner as they are
NOT_STARTED = "minicv: not started"  # the mark in a stub's body: a kernel that still has it is not written

_KERNEL = re.compile(r"((?:^//[^\n]*\n)*)(^template\s*<[^>]*>\s*\n)?^__global__\s+void\s+(\w+)\s*\(([^)]*)\)\s*\{",
                     re.MULTILINE)
_CONSTANT = re.compile(r"^constexpr [^\n]*\n", re.MULTILINE)
_MACRO = re.compile(r"^#define\s+(\w+)(?:[^\n]*\\\n)*[^\n]*\n", re.MULTILINE)
_HEADER = re.compile(r"\A(?://[^\n]*\n)+")
# g++ (cudasim): "/path/pool.cu:12:5: error: ..."; NVRTC (CuPy): "/path/pool.cu(12): error: ..."
_GXX_ERROR = re.compile(r"^(?P<file>[^\n:]+):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<what>[^\n]*)", re.MULTILINE)
_NVRTC_ERROR = re.compile(r"^(?P<file>[^\n(]+)\((?P<line>\d+)\): (?:catastrophic )?error: (?P<what>[^\n]*)",
                          re.MULTILINE)


@dataclass(frozen=True)
class CudaTrack(Track):
    """The learner's ``.cu`` files, run by minicv's CUDA launch code on cudasim (and CuPy on a GPU)."""

    def file_of(self, module: str) -> str:
        return CUDA_FILES[module]

    def written(self, module: str) -> list[str]:
        """The kernels of the ``.cu`` file (minicv's launch code turns them into the table's functions)."""
        return [k[3] for k in _KERNEL.finditer((KERNEL_DIR / self.file_of(module)).read_text(encoding="utf-8"))]

    def todo(self, kernel: str) -> str:
        return f"write the kernels of {self.file_of(self.module_of(kernel))} that {kernel} launches"

    def stub_files(self) -> dict[str, str]:
        files = {name: (KERNEL_DIR / name).read_text(encoding="utf-8") for name in HELPERS}
        for exercise in EXERCISES:
            files[self.file_of(exercise.module)] = cuda_stub(self.file_of(exercise.module), exercise.number,
                                                             exercise.title)
        return files

    def load(self, folder: Path) -> LearnerTable:
        from minicv.devices import is_available
        from minicv.kernels.cuda.launch import CudaBackend
        from minicv.kernels.cudasim.runtime import CudasimBackend, schedule

        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"DIR: {folder} is not a folder (`minicv exercises init {folder}` makes one)")
        cudasim = CudasimBackend(folder)
        errors = {}
        for module in self.modules():  # compile each file now: a compile error fails only its kernels
            try:
                file = self.file_of(module)
                names = kernel_names(read_source(file, folder))
                if names:
                    cudasim.kernel(file, names[0])  # builds every kernel of the file
            except Exception as err:  # a missing file, g++'s errors: the learner's, per kernel
                for kernel in kernel_table():
                    if self.module_of(kernel) == module:
                        errors[kernel] = self.error(err, folder)
        forward = _bound(cudasim, lambda: schedule("forward"))
        functions = {k: f for k, f in forward.items() if k not in errors}
        runs = [Run("cudasim, threads in reverse order", _bound(cudasim, lambda: schedule("reverse")),
                    MISSING_BARRIER)]
        if is_available("cuda"):
            runs.append(Run("on the GPU", {k: _on_gpu(f) for k, f in _bound(CudaBackend(folder), None).items()}))
        return LearnerTable(folder, functions, errors, runs)

    def compile_error(self, err: BaseException, folder: Path) -> str:
        """g++'s (cudasim) or NVRTC's (CuPy) first error as the learner's file, line and message."""
        text = str(err)
        match = _GXX_ERROR.search(text) or _NVRTC_ERROR.search(text)
        if match is None:
            return ""
        compiler = "g++" if match.re is _GXX_ERROR else "NVRTC"
        path = Path(match["file"].strip())
        place = learner_place(path, int(match["line"]), folder) or f"{path.name}: "
        return f"{place}{compiler} could not compile it: {match['what'].strip()}"


def _kernel_body(source: str, name: str) -> str | None:
    """The text between the braces of kernel ``name`` in ``source``, or None when it is not there."""
    match = re.search(rf"__global__\s+void\s+{re.escape(name)}\s*\([^)]*\)\s*\{{", source)
    if match is None:
        return None
    depth, start = 1, match.end()
    for position in range(start, len(source)):
        depth += {"{": 1, "}": -1}.get(source[position], 0)
        if depth == 0:
            return source[start:position]
    return source[start:]


class _LearnerBackend(Backend):
    """A backend over the learner's folder that refuses to launch a kernel still marked not started
    (on a GPU a stub would just leave its output uninitialised); the rest is ``backend``'s."""

    def __init__(self, backend: Any, context: Callable[[], AbstractContextManager] | None):
        self._backend, self._context = backend, context  # no super().__init__: backend compiles and caches

    @property
    def xp(self) -> Any:
        return self._backend.xp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def kernel(self, source_file: str, name_expression: str) -> Callable[..., None]:
        name = name_expression.split("<")[0]
        body = _kernel_body((self._backend.source_dir / source_file).read_text(encoding="utf-8"), name)
        if body is not None and NOT_STARTED in body:
            raise NotImplementedError(f"{name} in {source_file}: not written yet")
        launch, context = self._backend.kernel(source_file, name_expression), self._context
        if context is None:
            return launch

        def in_context(*args: Any, **kwargs: Any) -> None:
            with context():
                launch(*args, **kwargs)

        return in_context


def _bound(backend: Any, context: Callable[[], AbstractContextManager] | None) -> dict[str, Callable[..., Any]]:
    """The kernel table of kernels/cuda/table.py on the learner's sources; ``context`` wraps each launch."""
    from minicv.kernels.cuda.table import bind

    return bind(_LearnerBackend(backend, context))


def _on_gpu(function: Callable[..., Any]) -> Callable[..., Any]:
    """A table function of the GPU called with NumPy arrays: the grader compares NumPy arrays."""

    def run(*args: Any, **kwargs: Any) -> Any:
        import cupy

        def to_gpu(value: Any) -> Any:
            return cupy.asarray(value) if isinstance(value, np.ndarray) else value

        out = function(*map(to_gpu, args), **{k: to_gpu(v) for k, v in kwargs.items()})
        return tuple(cupy.asnumpy(o) for o in out) if isinstance(out, tuple) else cupy.asnumpy(out)

    return run


LAUNCH = {
    "conv.cu": "conv2d_*_kernel are launched with block (BLOCK_X, BLOCK_Y) and grid (ceil(columns / TILE_N), "
    "ceil(rows / TILE_M), groups) over the matrix C of the table below (backward-weight: groups * k_splits "
    "blocks along z, each summing its share of k into its own partial gw); sum_k_splits_kernel is a "
    "grid-stride launch.",
}
GRID_STRIDE = ("Each kernel is launched with 256 threads a block and at most one thread per element (on cudasim "
               "only 8 blocks): walk the elements with GRID_STRIDE_LOOP (common.cuh).")


def _comment(text: str) -> str:
    return "\n".join("//" + (f" {line}" if line else "") for line in textwrap.wrap(text, 100)) + "\n"


def cuda_stub(file: str, number: int, title: str) -> str:
    """The learner's ``file``: minicv's own kernels of that file with empty bodies, and what they need."""
    source = (KERNEL_DIR / file).read_text(encoding="utf-8")
    kernels = list(_KERNEL.finditer(source))
    signatures = " ".join(k[4] for k in kernels)
    header = _HEADER.match(source)
    lines = [
        _comment(f"{file}: exercise {number}, {title} (the CUDA track)."),
        "//\n",
        _comment("Write the body of every kernel below and keep its name and parameters: minicv's launch code "
                 "(kernels/cuda/table.py, conv.py) calls them with exactly these. " + LAUNCH.get(file, GRID_STRIDE)
                 + f" Delete the line '// {NOT_STARTED}' of a kernel when you start it."),
        "//\n// How minicv's own file is laid out (one way among many):\n",
        header[0] if header else "",
        '#include "common.cuh"\n\n',
        *_CONSTANT.findall(source),
        *(m[0] for m in _MACRO.finditer(source) if re.search(rf"\b{m[1]}\b", signatures)),
    ]
    for kernel in kernels:
        lines.append(f"\n{kernel[1]}{kernel[2] or ''}__global__ void {kernel[3]}({kernel[4]}) {{\n"
                     f"    // {NOT_STARTED}\n}}\n")
    return "".join(lines)


CUDA = CudaTrack(
    name="cuda",
    spec="minicv.kernels.numpy",
    array_module="numpy",
    stub_header="",
    devices=("numpy",),
    rules="Rules: the kernels are called by minicv's launch code (kernels/cuda/table.py, conv.py) with the "
    "parameters of the stubs; cudasim runs them on the CPU in two thread orders, so a race shows.",
    timed=False,  # cudasim's times say nothing about a GPU
    notebook_note="The cells call the functions of minicv's launch code (kernels/cuda/table.py, conv.py), which "
    "launch your kernels on cudasim, on the CPU: no GPU is needed (`grade` also runs them on one when CuPy sees "
    "it). Their contracts and the hints speak NumPy, the spec's language: in a kernel each thread computes "
    "its share of the outputs (the top of each .cu file says how its kernels are launched).",
    # cudasim runs the blocks one after another on one CPU thread: a 64x64 batch of 32 takes minutes
    train_options="--epochs 1 --train-size 32 --test-size 8 --size 32",
)
