"""``minicv exercises init DIR``: the learner's package of stubs, a README and one notebook per exercise.

The stubs take their signatures from the specification itself (``inspect``), so that the spec is a
complete solution, and their docstrings from ``contracts.CONTRACTS`` (the CUDA track's ``.cu`` stubs are
written by ``cuda.py``). Files that exist are kept; the track is recorded in the folder (TRACK_FILE).
"""

from __future__ import annotations

import doctest
import inspect
import json
import textwrap
from pathlib import Path

from minicv.errors import ArgumentError
from minicv.exercises.contracts import CONTRACTS, EXERCISES, Exercise
from minicv.exercises.tracks import NUMPY, TRACK_FILE, Track, recorded_track
from minicv.ops import kernel_table


def init_exercises(folder: str | Path, track: Track = NUMPY) -> tuple[list[Path], list[Path]]:
    """Write the learner's package into ``folder``: (files written, files kept because they existed)."""
    folder = Path(folder)
    recorded = recorded_track(folder)
    if recorded not in (None, track.name):
        raise ArgumentError(f"DIR: {folder} holds the {recorded} track; init the {track.name} track in another folder")
    files = {folder / name: text for name, text in track.stub_files().items()}
    files[folder / "README.md"] = readme(folder, track)
    files[folder / TRACK_FILE] = track.name + "\n"
    for exercise in EXERCISES:
        files[folder / "notebooks" / notebook_name(exercise)] = json.dumps(notebook(exercise, track), indent=1) + "\n"
    written, kept = [], []
    for path, text in files.items():
        if path.exists():
            kept.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written, kept


def _kernels_of(module: str, track: Track) -> list[str]:
    return [k for exercise in EXERCISES for k in exercise.kernels if track.module_of(k) == module]


def package_init(track: Track) -> str:
    imports = "\n".join(f"from .{m} import {', '.join(_kernels_of(m, track))}" for m in track.modules())
    return (
        '"""My kernels: the functions of minicv\'s kernel table, written by hand.\n\n'
        "Graded by `minicv exercises grade` (which imports each module on its own).\n"
        '"""\n\n# ruff: noqa: F401 (these imports are the exports)\n' + imports + "\n"
    )


def stub(kernel: str, track: Track) -> str:
    """One stub: the spec's signature, the contract as docstring, a body that raises NotImplementedError."""
    signature = inspect.signature(getattr(track.spec_table(), kernel))
    params = []
    for name, p in signature.parameters.items():
        annotation = _annotation(p.annotation)
        default = "" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
        params.append(f"    {name}: {annotation}{default},")
    contract = inspect.cleandoc(CONTRACTS[kernel]).replace("\n", "\n    ").replace("\n    \n", "\n\n")
    return (
        f"def {kernel}(\n" + "\n".join(params) + f"\n) -> {_annotation(signature.return_annotation)}:\n"
        f'    """{contract}\n    """\n{track.stub_note}'
        f'    raise NotImplementedError("{kernel}: not written yet")\n'
    )


def _annotation(annotation: object) -> str:
    return inspect.formatannotation(annotation).replace("numpy.", "np.")


def stub_module(module: str, track: Track) -> str:
    exercise = next(e for e in EXERCISES if e.module == module)
    doc = f'"""Exercise {exercise.number}: {exercise.title}.\n\n{textwrap.fill(exercise.idea, 100)}\n"""'
    stubs = "\n\n".join(stub(k, track) for k in _kernels_of(module, track))
    return f"{doc}\n\n{track.stub_header}\n\n\n{stubs}"


def notebook_name(exercise: Exercise) -> str:
    return f"{exercise.number:02d}_{exercise.module}.ipynb"


def readme(folder: Path, track: Track) -> str:
    rows = "\n".join(
        f"| {e.number} | {e.title} | `{track.file_of(e.module)}` | {', '.join(f'`{k}`' for k in e.kernels)} "
        f"| [notebooks/{notebook_name(e)}](notebooks/{notebook_name(e)}) |"
        for e in EXERCISES
    )
    return f"""# Learn by writing the kernels ({track.name} track)

Every layer of minicv runs on {len(kernel_table())} small kernels. Here you write them yourself, in the lecture's order,
and a grader tells you precisely what is wrong: the shape, the first wrong element and a hint.

1. Open an exercise's notebook (or just its file): each function's docstring (each kernel's comment in
   a `.cu` file) is its contract, with a worked example in the notebook. Replace the stub with your code.
2. Grade: `minicv exercises grade {folder}` (one kernel: `--only conv2d_forward`). Each kernel is
   compared with minicv's specification and with PyTorch, gradient-checked in float64, then timed
   against the specification (on the CUDA track instead: run again on cudasim with its threads in
   reverse order, and on a GPU when there is one).
3. Once the kernels a model needs pass, train it on your kernels:
   `minicv exercises train {folder} --model segnet {track.train_options}`.

| # | exercise | file | kernels | notebook |
|---|---|---|---|---|
{rows}

{track.rules}
The solution is minicv's own `kernels/{track.name}/`: look only once you pass.
"""


def _markdown(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(text: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": text}


def notebook(exercise: Exercise, track: Track = NUMPY) -> dict:
    """The exercise's notebook (nbformat 4): contract, TODO cells, inline questions, hidden hints."""
    names = ", ".join(track.written(exercise.module))
    note = f"\n\n{track.notebook_note}" if track.notebook_note else ""
    cells = [
        _markdown(
            f"# Exercise {exercise.number}: {exercise.title}\n\n{exercise.idea}\n\n"
            f"You write `{track.file_of(exercise.module)}` in the folder above this notebook: {names}. "
            f"Edit the file, then rerun the cells: every cell reloads your code.{note}"
        ),
        _code(
            "import numpy as np\n"
            "from minicv.exercises import grade, load_kernels\n\n"
            'KERNELS = ".."  # your package: the folder above this notebook'
        ),
    ]
    for kernel in exercise.kernels:
        contract = inspect.cleandoc(CONTRACTS[kernel])
        examples = doctest.DocTestParser().get_examples(contract)
        tries = "".join(
            example.source if not example.want else f"print(({example.source.strip()}))  # expected: {example.want}"
            for example in examples
        )
        cells += [
            _markdown(f"## `{kernel}`\n\n```text\n{contract}\n```"),
            _code(
                f"# TODO: {track.todo(kernel)}, then check the worked example:\n"
                f"{kernel} = load_kernels(KERNELS).{kernel}\n{tries}"
            ),
            _code(f'grade(KERNELS, only="{kernel}")'),
        ]
    for number, question in enumerate(exercise.questions, 1):
        cells.append(_markdown(f"**Inline question {number}.** {question}\n\n*Your answer:* (write here)"))
    for number, hint in enumerate(exercise.hints, 1):
        cells.append(
            _markdown(f"<details><summary>Hint {number} (click to reveal)</summary>\n\n{hint}\n\n</details>")
        )
    cells.append(_code("grade(KERNELS)  # every kernel: which models your kernels can train"))
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
