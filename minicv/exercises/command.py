"""The ``minicv exercises`` subcommand: init, grade and train, wired into ``minicv.cli``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minicv.errors import ArgumentError
from minicv.exercises import TRACKS, track_for
from minicv.exercises.contracts import LECTURE_ORDER
from minicv.exercises.tracks import register_student

EXAMPLES = (
    "examples:\n  minicv exercises init my_kernels\n  minicv exercises grade my_kernels\n"
    "  minicv exercises grade my_kernels --only conv2d_forward\n"
    "  minicv exercises init my_cuda_kernels --track cuda\n"
    "  minicv exercises train my_kernels --model segnet --epochs 1 --train-size 200"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "exercises", help="write the kernels yourself: init a package of stubs, grade it, train on it",
        description="Learn by writing the kernels: init a package of stubs, grade it, train a model on it.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="write the stubs, a README and one notebook per exercise into DIR")
    init.add_argument("folder", metavar="DIR")
    init.add_argument("--track", choices=list(TRACKS), default="numpy",
                      help="what you write the kernels in: numpy (default), numba (@njit) or cuda (.cu files)")
    grade = actions.add_parser("grade", help="grade the kernels in DIR, in the lecture's order")
    grade.add_argument("folder", metavar="DIR")
    grade.add_argument("--track", choices=list(TRACKS), help="the track of DIR (default: the one init wrote it for)")
    grade.add_argument("--only", choices=LECTURE_ORDER, metavar="KERNEL", help="grade one kernel")
    grade.add_argument("--device", default="numpy", choices=sorted({d for t in TRACKS.values() for d in t.devices}),
                       help="where the learner's arrays live (numpy on every track: the CUDA track's kernels "
                       "run on cudasim, and also on the GPU when there is one)")
    grade.add_argument("--no-timing", dest="timing", action="store_false", help="skip the race against the spec")
    train = actions.add_parser("train", help="minicv train on the kernels in DIR (the device 'student')",
                               description="Run `minicv train` with the kernels in DIR as the device 'student'; "
                               "every option after DIR goes to `minicv train` (see `minicv train --help`).")
    train.add_argument("folder", metavar="DIR")
    train.add_argument("train_args", nargs=argparse.REMAINDER, metavar="TRAIN OPTIONS")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (FileNotFoundError, ArgumentError) as err:  # bad input: one line, no traceback
        raise SystemExit(f"minicv exercises {args.action}: {err}") from err


def _run(args: argparse.Namespace) -> int:
    from minicv.exercises import grade, init_exercises

    if args.action == "init":
        written, kept = init_exercises(args.folder, TRACKS[args.track])
        for path in written:
            print(f"wrote {path}")
        for path in kept:
            print(f"kept {path} (it exists: never overwritten)")
        print(f"next: write the kernels in {args.folder}, then `minicv exercises grade {args.folder}`")
        return 0
    if args.action == "grade":
        return grade(args.folder, only=args.only, device=args.device, track=args.track, timing=args.timing)
    return train(Path(args.folder), args.train_args)


def train(folder: Path, train_args: list[str]) -> int:
    """``minicv train ... --device student`` on the learner's kernels; their errors shown as their own."""
    from minicv import cli

    track = track_for(folder)
    register_student(folder, track)
    try:
        return cli.main(["train", *train_args, "--device", "student"])
    except Exception as err:  # an error inside the learner's kernels: their file and line, no traceback
        message = track.describe(err, folder)
        if message.startswith(type(err).__name__) and not isinstance(err, NotImplementedError):
            raise  # not the learner's code (no file of theirs named): a bug to see in full
        print(f"minicv exercises train: your kernels failed: {message}\n"
              f"grade them first: minicv exercises grade {folder}", file=sys.stderr)
        return 1
