"""The grader's table: one row per kernel, what is wrong and where, and which models are unlocked."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TextIO

from minicv.exercises.grader import FAILING, FASTER, FASTER_MARGIN, NOT_STARTED, Row
from minicv.exercises.unlock import unlocked

WIDTH = 100


def verdict(row: Row) -> str:
    if row.status == NOT_STARTED:
        return "not started"
    if row.status == FAILING:
        return f"FAILING ({row.stage})"
    if row.speedup is None:
        return "passing"
    if row.status == FASTER:
        return f"passing and faster than the spec ({row.speedup:.1f}x)"
    if row.speedup > 1 / FASTER_MARGIN:
        return "passing (as fast as the spec)"
    return f"passing (the spec is {1 / row.speedup:.1f}x faster)"


def print_rows(rows: Sequence[Row], out: TextIO) -> None:
    width = max(len(r.kernel) for r in rows) + 2
    indent = " " * (4 + width)
    for number, row in enumerate(rows, 1):
        print(f"{number:>2}  {row.kernel:<{width}}{verdict(row)}", file=out)
        for label, text in (("", row.detail), ("hint: ", row.hint)):
            if text:
                print(textwrap.fill(label + text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  "),
                      file=out)


def print_summary(rows: Sequence[Row], folder: str, out: TextIO) -> None:
    """How many pass, and which models the passing kernels can train (after a full grade)."""
    passing = {r.kernel for r in rows if r.passed}
    print(f"\n{len(passing)} of {len(rows)} kernels pass.", file=out)
    ready, locked = unlocked(passing)
    if ready:
        print(f"Unlocked: {', '.join(ready)}: train one on your kernels with "
              f"`minicv exercises train {folder} --model {ready[0]}`.", file=out)
    for model, missing in locked.items():
        print(textwrap.fill(f"Locked: {model} needs {', '.join(missing)}", WIDTH, subsequent_indent="  "), file=out)
