"""Learn by writing the kernels: ``minicv exercises init | grade | train``.

``init`` writes a learner's package of stubs (the spec's signatures, the contracts as docstrings), a
README and one notebook per exercise; ``grade`` grades each kernel against the spec, PyTorch and
gradcheck, then times it; ``train`` trains a model of the lecture on the learner's kernels. Three
tracks: NumPy, Numba (``@njit`` kernels) and CUDA (``.cu`` kernels on cudasim, and a GPU where present).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from minicv.errors import ArgumentError
from minicv.exercises.contracts import LECTURE_ORDER
from minicv.exercises.cuda import CUDA
from minicv.exercises.scaffold import init_exercises
from minicv.exercises.tracks import NUMBA, NUMPY, Track, recorded_track, register_student

__all__ = ["TRACKS", "grade", "init_exercises", "load_kernels", "track_for"]

TRACKS = {t.name: t for t in (NUMPY, NUMBA, CUDA)}


def track_for(folder: str | Path, track: Track | str | None = None) -> Track:
    """The track named (a Track, its name), else the one ``init`` recorded in ``folder``, else NumPy's."""
    if isinstance(track, Track):
        return track
    name = track or recorded_track(Path(folder)) or NUMPY.name
    if name not in TRACKS:
        raise ArgumentError(f"--track: expected one of {', '.join(TRACKS)}, got {name!r}")
    return TRACKS[name]


def load_kernels(folder: str | Path, track: Track | str | None = None) -> Any:
    """The learner's kernel table, freshly loaded (a kernel not written raises NotImplementedError)."""
    return track_for(folder, track).load(Path(folder)).table()


def grade(folder: str | Path, only: str | None = None, device: str = "numpy", track: Track | str | None = None,
          timing: bool = True, out: TextIO | None = None) -> int:
    """Grade the learner's kernels in ``folder`` and print the table; 0 when every graded kernel passes."""
    from minicv.exercises.grader import Grader
    from minicv.exercises.report import print_rows, print_summary

    out = out or sys.stdout
    track = track_for(folder, track)
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
