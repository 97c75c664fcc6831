"""``python -m benchmarks [--quick] [--device D] [--op OP] [--out DIR] [--seed S] [--isa ISA] [--breakdown MODEL]``:
the harness of minicv.bench."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from minicv.bench.options import MALLOC_CHOICES, SELECTIONS, add_options
from minicv.bench.run import run_from_args

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time every op of minicv on every device present, against PyTorch in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a smoke run)")
    parser.add_argument("--device", action="append", default=None,
                        help="only this minicv device (numpy, numba/cpu, cudasim, cuda); repeat for several")
    parser.add_argument("--op", default=None, choices=SELECTIONS,
                        help="only this op, the training steps (train_step) or the cold start (cold_start)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output folder (default: {RESULTS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--malloc", default="reuse", choices=MALLOC_CHOICES,
                        help="reuse: keep freed memory, so no call pays page faults (default); system: glibc's default")
    add_options(parser)
    args = parser.parse_args(argv)
    run_from_args(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
