"""A track: which files a learner writes, and how their folder becomes a device's kernel table.

The grader only ever sees a :class:`Track`. The NumPy track is implemented here; a Numba track would
differ only in its stub header (``from numba import njit`` and a decorator) and a CUDA track in its
files (``.cu``) and its ``load`` (compiling them for cudasim or CuPy), so each is one more ``Track``.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from minicv.devices import register_device
from minicv.kernels import KERNEL_TABLE


@dataclass(frozen=True)
class Track:
    """How a learner's folder is written (init), loaded (grade, train) and where its arrays live."""

    name: str
    spec: str  # module of the reference kernel table the learner's kernels are graded against
    array_module: str  # the array module of the learner's device
    stub_header: str  # the imports at the top of every stub module
    devices: tuple[str, ...]  # what --device may pick for the learner's arrays

    def spec_table(self) -> ModuleType:
        return importlib.import_module(self.spec)

    def module_of(self, kernel: str) -> str:
        """The file (without .py) of the learner's package that holds ``kernel``: the spec's own."""
        return getattr(self.spec_table(), kernel).__module__.rsplit(".", 1)[-1]

    def modules(self) -> list[str]:
        return list(dict.fromkeys(self.module_of(k) for k in KERNEL_TABLE))

    def load(self, folder: Path) -> LearnerTable:
        return LearnerTable.load(self, folder)


NUMPY = Track(
    name="numpy",
    spec="minicv.kernels.numpy",
    array_module="numpy",
    stub_header="import numpy as np",
    devices=("numpy",),
)
TRACKS = {NUMPY.name: NUMPY}


@dataclass(frozen=True)
class LearnerError:
    """Where the learner's own code failed: their file, line and the message (no traceback)."""

    message: str
    not_started: bool = False  # a stub's NotImplementedError

    @classmethod
    def from_exception(cls, err: BaseException, folder: Path) -> LearnerError:
        return cls(f"{where(err, folder)}{type(err).__name__}: {err}".strip(), isinstance(err, NotImplementedError))


def where(err: BaseException, folder: Path) -> str:
    """'conv.py, line 12: ' for the innermost frame of the learner's files, or '' when none is theirs."""
    folder = folder.resolve()
    frames = traceback.extract_tb(err.__traceback__)
    if isinstance(err, SyntaxError) and err.filename:
        frames.append(traceback.FrameSummary(err.filename, err.lineno or 0, "<module>"))
    for frame in reversed(frames):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(folder):
            return f"{path.relative_to(folder)}, line {frame.lineno}: "
    return ""


class LearnerTable:
    """The learner's kernels by name, and why a missing one is missing (an import error, say).

    The modules are imported as submodules of a fresh package named after the folder's path, without
    running its ``__init__.py``: the spec's own ``__init__`` (copied in) imports from its parent
    package, and the grader needs each module alone so that one broken file fails only its kernels.
    """

    def __init__(self, folder: Path, functions: dict[str, Callable[..., Any]], errors: dict[str, LearnerError]):
        self.folder, self.functions, self.errors = folder, functions, errors

    @classmethod
    def load(cls, track: Track, folder: Path) -> LearnerTable:
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"DIR: {folder} is not a folder (`minicv exercises init {folder}` makes one)")
        package = f"minicv_learner_{abs(hash(str(folder))):x}"
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]  # a fresh import: the learner may have edited the files since
        spec = importlib.util.spec_from_loader(package, loader=None, is_package=True)
        parent = importlib.util.module_from_spec(spec)
        parent.__path__ = [str(folder)]
        sys.modules[package] = parent
        functions, errors = {}, {}
        for module_name in track.modules():
            kernels = [k for k in KERNEL_TABLE if track.module_of(k) == module_name]
            path = folder / f"{module_name}.py"
            try:
                if not path.exists():
                    raise FileNotFoundError(f"{path.name} is missing from {folder}")
                module = importlib.import_module(f"{package}.{module_name}")
            except Exception as err:  # a learner's file may fail to import in any way: report it per kernel
                for k in kernels:
                    errors[k] = LearnerError.from_exception(err, folder)
                continue
            for k in kernels:
                fn = getattr(module, k, None)
                if callable(fn):
                    functions[k] = fn
                else:
                    errors[k] = LearnerError(f"{module_name}.py has no function {k}")
        return cls(folder, functions, errors)

    def table(self) -> Any:
        """A kernel table for a Device: the learner's functions; a missing one raises NotImplementedError."""
        return _Table({k: self.functions.get(k, _missing(k, self.errors.get(k))) for k in KERNEL_TABLE})


class _Table:
    """A namespace of kernels (a Device's ``kernels``)."""

    def __init__(self, functions: dict[str, Callable[..., Any]]):
        self.__dict__.update(functions)


def _missing(kernel: str, error: LearnerError | None) -> Callable[..., Any]:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{kernel} is not available: {error.message if error else 'not written'}")

    return missing


def mixed_table(spec: Any, kernel: str, function: Callable[..., Any]) -> Any:
    """The spec's table with one kernel replaced: grades that kernel alone through the engine."""
    return _Table({k: function if k == kernel else getattr(spec, k) for k in KERNEL_TABLE})


def register_student(folder: Path, track: Track = NUMPY) -> LearnerTable:
    """Load the learner's kernels and register them as the device ``student`` (their table alone:
    a kernel not written raises NotImplementedError when called)."""
    learner = track.load(folder)
    register_device("student", lambda: importlib.import_module(track.array_module), learner.table)
    return learner
