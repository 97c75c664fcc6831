"""Learn by writing the kernels: ``minicv exercises init | grade | train``.

``init`` writes a learner's package of stubs (the spec's signatures, the contracts as docstrings), a
README and one notebook per exercise; ``grade`` grades each kernel against the spec, PyTorch and
gradcheck, then times it; ``train`` trains a model of the lecture on the learner's kernels.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from minicv.errors import ArgumentError
from minicv.exercises.contracts import LECTURE_ORDER
from minicv.exercises.scaffold import init_exercises
from minicv.exercises.tracks import NUMPY, TRACKS, Track, register_student

__all__ = ["grade", "init_exercises", "load_kernels"]


def load_kernels(folder: str | Path, track: str = "numpy") -> Any:
    """The learner's kernel table, freshly imported (a kernel not written raises NotImplementedError)."""
    return TRACKS[track].load(Path(folder)).table()


def grade(folder: str | Path, only: str | None = None, device: str = "numpy", track: Track = NUMPY,
          timing: bool = True, out: TextIO | None = None) -> int:
    """Grade the learner's kernels in ``folder`` and print the table; 0 when every graded kernel passes."""
    from minicv.exercises.grader import Grader
    from minicv.exercises.report import print_rows, print_summary

    out = out or sys.stdout
    if device not in track.devices:
        raise ArgumentError(f"--device: the {track.name} track's arrays live on {', '.join(track.devices)}, "
                            f"but got {device!r}")
    if only is not None and only not in LECTURE_ORDER:
        raise ArgumentError(f"--only: expected a kernel, one of {', '.join(LECTURE_ORDER)}; got {only!r}")
    learner = register_student(Path(folder), track)
    grader = Grader.for_folder(track, learner, timing)
    oracle = "the spec and PyTorch" if grader.torch_available else "the spec (PyTorch is not installed)"
    print(f"Grading {learner.folder} ({track.name} track, arrays on {device}) against {oracle}:", file=out)
    rows = [grader.grade(k) for k in ([only] if only else LECTURE_ORDER)]
    print_rows(rows, out)
    if only is None:
        print_summary(rows, str(folder), out)
    return 0 if all(r.passed for r in rows) else 1
