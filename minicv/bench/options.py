"""The options ``minicv bench`` and ``python -m benchmarks`` share, cheap to import: the command line is
built without loading the harness (``run``), which only ``minicv bench`` itself imports."""

from __future__ import annotations

from typing import Any

from minicv.ops import OPS

# what --op may pick: an op of the registry (minicv/ops.py), the training steps, the cold start
SELECTIONS = (*OPS, "train_step", "cold_start")
MALLOC_CHOICES = ("reuse", "system")
CUDASIM_NEEDS_QUICK = "cudasim runs CUDA threads as fibers on the CPU; use it with --quick"


def add_options(parser: Any) -> None:
    """The options ``minicv bench`` and ``python -m benchmarks`` share beyond their first ones."""
    from minicv.models import TASKS

    parser.add_argument("--isa", default="native",
                        help="native (this process), avx2 (a child process running AVX2 code in numba and "
                             "PyTorch), or native,avx2 for both side by side (default: native)")
    parser.add_argument("--breakdown", default=None, choices=list(TASKS), metavar="MODEL",
                        help="instead of the benchmark, time one training step of MODEL (e.g. segnet) kernel by "
                             "kernel and op by op, on numba; print it and write <out>/<machine>-breakdown-MODEL.md")

