"""A track: which files a learner writes, and how their folder becomes a device's kernel table.

The grader only ever sees a :class:`Track`. The NumPy and Numba tracks are implemented here: they differ
only in their stubs (the Numba one imports njit and says how its kernels are built) and in what a compile
error looks like. The CUDA track (``cuda.py``) has its own files (``.cu``) and ``load`` (compiling them
for cudasim, and for CuPy where there is a GPU).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from minicv.devices import register_device
from minicv.exercises.contracts import LECTURE_ORDER
from minicv.ops import kernel_table


@dataclass(frozen=True)
class Track:
    """How a learner's folder is written (init), loaded (grade, train) and where its arrays live."""

    name: str
    spec: str  # module of the reference kernel table the learner's kernels are graded against
    array_module: str  # the array module of the learner's device
    stub_header: str  # the imports at the top of every stub module
    devices: tuple[str, ...]  # what --device may pick for the learner's arrays
    stub_note: str = ""  # comment lines that open every stub's body: how a kernel of this track is built
    rules: str = "Rules: work on NumPy arrays, return new arrays in the input's dtype, never write into the arguments."
    timed: bool = True  # raced against the spec once it passes
    notebook_note: str = ""  # a paragraph under every notebook's title: what differs on this track
    train_options: str = "--epochs 1 --train-size 200"  # the README's `minicv exercises train` example

    def spec_table(self) -> ModuleType:
        return importlib.import_module(self.spec)

    def module_of(self, kernel: str) -> str:
        """The file (without .py) of the learner's package that holds ``kernel``: the spec's own."""
        return getattr(self.spec_table(), kernel).__module__.rsplit(".", 1)[-1]

    def modules(self) -> list[str]:
        return list(dict.fromkeys(self.module_of(k) for k in kernel_table()))

    def file_of(self, module: str) -> str:
        """The learner's file of an exercise's module."""
        return f"{module}.py"

    def written(self, module: str) -> list[str]:
        """What the learner writes in the file of ``module``: here the kernel table's own functions."""
        return [k for k in LECTURE_ORDER if self.module_of(k) == module]

    def todo(self, kernel: str) -> str:
        """The TODO of a notebook's cell that runs ``kernel``'s worked example."""
        return f"write {kernel} in {self.file_of(self.module_of(kernel))}"

    def stub_files(self) -> dict[str, str]:
        """The learner's source files (name -> text) that ``init`` writes."""
        from minicv.exercises.scaffold import package_init, stub_module

        return {"__init__.py": package_init(self), **{self.file_of(m): stub_module(m, self) for m in self.modules()}}

    def load(self, folder: Path) -> LearnerTable:
        return LearnerTable.load(self, folder)

    def compile_error(self, err: BaseException, folder: Path) -> str:
        """A compiler's error (here Numba's) in one line with the learner's file and line; '' for others."""
        return _numba_message(err, folder)

    def describe(self, err: BaseException, folder: Path) -> str:
        """One learner-facing line for an error in the learner's code: where, and what went wrong."""
        return self.compile_error(err, folder) or f"{where(err, folder)}{type(err).__name__}: {err}".strip()

    def error(self, err: BaseException, folder: Path) -> LearnerError:
        compiled = self.compile_error(err, folder)
        return LearnerError(compiled or self.describe(err, folder), isinstance(err, NotImplementedError),
                            bool(compiled))


NUMPY = Track(
    name="numpy",
    spec="minicv.kernels.numpy",
    array_module="numpy",
    stub_header="import numpy as np",
    devices=("numpy",),
)
NUMBA = Track(
    name="numba",
    spec="minicv.kernels.numpy",  # graded against the same spec, with the same rows and messages
    array_module="numpy",
    stub_header="import numpy as np\nfrom numba import njit, prange  # noqa: F401 (yours to use)",
    devices=("numpy",),
    stub_note="    # Allocate the outputs here (np.empty/np.zeros in the input's dtype), fill them in an @njit\n"
    "    # function of your own (parallel=True with prange over independent (n, c) planes), return them.\n",
    rules="Rules: the kernels are called with NumPy arrays and return new arrays in the input's dtype; do the "
    "loops in @njit functions (Numba compiles each on its first call, for each dtype), never write into the "
    "arguments.",
    notebook_note="The contracts and hints speak NumPy, the spec's language: inside your @njit functions write "
    "the loops they stand for (Numba has no `np.add.at` nor `np.einsum`: add and sum in loops).",
)


@dataclass(frozen=True)
class LearnerError:
    """Where the learner's own code failed: their file, line and the message (no traceback)."""

    message: str
    not_started: bool = False  # a stub's NotImplementedError
    compiling: bool = False  # a compiler (Numba, g++, NVRTC) rejected the learner's code


def _numba_message(err: BaseException, folder: Path) -> str:
    """Numba's compile error in one line: the learner's file and line, and what Numba found wrong
    (its message runs to pages: candidate signatures, the pipeline, the source)."""
    loc = getattr(err, "loc", None)  # where in the source: numba's errors carry it
    if not type(err).__module__.startswith("numba.") or loc is None:
        return ""
    lines = [line.strip() for line in str(err).splitlines()]
    if lines and lines[0].startswith("Failed in"):  # the pipeline step that failed, not the reason
        lines = lines[1:]
    what = []
    for line in lines:
        if line.startswith(("There are", "During:", "File ", "- Of which")):
            break
        what.append(line)
    place = learner_place(Path(loc.filename), loc.line, folder)
    return f"{place}Numba could not compile it: {' '.join(' '.join(what).split())}"


def learner_place(path: Path, line: int | None, folder: Path) -> str:
    """'conv.py, line 12: ' for a file inside the learner's folder, '' for any other."""
    path, folder = path.resolve(), folder.resolve()
    return f"{path.relative_to(folder)}, line {line}: " if path.is_relative_to(folder) and line else ""


def where(err: BaseException, folder: Path) -> str:
    """'conv.py, line 12: ' for the innermost frame of the learner's files, or '' when none is theirs."""
    folder = folder.resolve()
    frames = traceback.extract_tb(err.__traceback__)
    if isinstance(err, SyntaxError) and err.filename:
        frames.append(traceback.FrameSummary(err.filename, err.lineno or 0, "<module>"))
    for frame in reversed(frames):
        place = learner_place(Path(frame.filename), frame.lineno, folder)
        if place:
            return place
    return ""


@dataclass(frozen=True)
class Run:
    """Another way to run the learner's kernels (cudasim's reverse thread order, a GPU), graded on the
    kernel's own calls once the main run passes; ``hint`` replaces the usual one when only this run fails."""

    label: str
    functions: dict[str, Callable[..., Any]]
    hint: str = ""


@dataclass
class LearnerTable:
    """The learner's kernels by name, and why a missing one is missing (an import error, say).

    The modules are imported as submodules of a fresh package named after the folder's path, without
    running its ``__init__.py``: the spec's own ``__init__`` (copied in) imports from its parent
    package, and the grader needs each module alone so that one broken file fails only its kernels.
    """

    folder: Path
    functions: dict[str, Callable[..., Any]]
    errors: dict[str, LearnerError]
    runs: list[Run] = field(default_factory=list)

    @classmethod
    def load(cls, track: Track, folder: Path) -> LearnerTable:
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"DIR: {folder} is not a folder (`minicv exercises init {folder}` makes one)")
        package = f"minicv_learner_{abs(hash(str(folder))):x}"
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]  # a fresh import: the learner may have edited the files since
        parent = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(package, None, is_package=True))
        parent.__path__ = [str(folder)]
        sys.modules[package] = parent
        functions, errors = {}, {}
        for module_name in track.modules():
            kernels = [k for k in kernel_table() if track.module_of(k) == module_name]
            path = folder / f"{module_name}.py"
            try:
                if not path.exists():
                    raise FileNotFoundError(f"{path.name} is missing from {folder}")
                module = importlib.import_module(f"{package}.{module_name}")
            except Exception as err:  # a learner's file may fail to import in any way: report it per kernel
                for k in kernels:
                    errors[k] = track.error(err, folder)
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
        return _Table({k: self.functions.get(k, _missing(k, self.errors.get(k))) for k in kernel_table()})


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
    return _Table({k: function if k == kernel else getattr(spec, k) for k in kernel_table()})


def recorded_track(folder: Path) -> str | None:
    """The track ``init`` wrote ``folder`` for (its TRACK_FILE), or None."""
    path = Path(folder) / TRACK_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


TRACK_FILE = ".minicv-track"


def register_student(folder: Path, track: Track = NUMPY) -> LearnerTable:
    """Load the learner's kernels and register them as the device ``student`` (their table alone:
    a kernel not written raises NotImplementedError when called)."""
    learner = track.load(folder)
    register_device("student", lambda: importlib.import_module(track.array_module), learner.table)
    return learner
