"""The CPU the Numba kernels compile for, and the vector width and tile shape chosen for it: read once,
at import.

The conv micro-kernel (``conv_tiles._outer_tile``) keeps ROWS accumulators of one ``simd.Vector`` each
in registers, plus the vector it loads and a broadcast. A vector of two machine registers and as many
rows as the register file holds:

* ``avx512`` (x86 with AVX-512F, 32 zmm registers): 128 bytes, 8 rows: 16 accumulator registers;
* ``avx2`` (x86 with AVX2 and FMA, 16 ymm registers): 64 bytes, 6 rows: 12 accumulator registers
  (AVX-512's 128 bytes x 8 rows is 32 ymm registers of accumulators: they spill, 1.3-2.3x slower);
* ``neon`` (AArch64, 32 registers of 16 bytes): 32 bytes, 8 rows, as AVX-512 (not measured);
* ``sse`` (older x86, 16 xmm registers): 32 bytes, 6 rows, as AVX2 (not measured); anything else 16, 6.

The target is Numba's own (``JITCPUCodegen``): ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` if set, else
the host's, so the shape and the machine code always agree. Numba's on-disk cache keys compiled code on
that CPU name and feature string, and the shape is a function of them alone, so the cache stays right.
Two overrides, which the cache cannot see (the kernels then cache under a folder of their own per
override, ``cache_folder``):

* ``MINICV_VECTOR_BYTES`` (16, 32, 64 or 128): the width;
* ``MINICV_LAYOUT_ISA`` (``avx512``, ``avx2``, ``neon``, ``sse``, ``generic``): the kernels take that
  instruction set's layout, its width, rows and per-ISA rules (conv.py's Winograd thresholds), while the
  machine code stays this CPU's: a machine without AVX-512 runs the arithmetic an AVX-512 machine runs
  (slower: a tile of more accumulators than registers spills), so the tests can check it anywhere.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import llvmlite.binding as llvm
from numba.core import codegen, config
from numba.misc.appdirs import AppDirs

OVERRIDE = "MINICV_VECTOR_BYTES"
LAYOUT_OVERRIDE = "MINICV_LAYOUT_ISA"
WIDTHS = (16, 32, 64, 128)
# (vector bytes, rows of the micro-kernel's tile) per ISA: a vector is two registers, and the tile's
# accumulators, the loaded vector and a broadcast fill at most the register file (32 or 16 registers)
TILES = {"avx512": (128, 8), "avx2": (64, 6), "neon": (32, 8), "sse": (32, 6), "generic": (16, 6)}


def _target() -> tuple[str, str, frozenset[str]]:
    """(architecture, CPU name, enabled features) of the code Numba generates, as JITCPUCodegen picks them."""
    cpu = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    enabled = frozenset(flag[1:] for flag in features.split(",") if flag.startswith("+"))
    return llvm.get_process_triple().split("-")[0], cpu, enabled


def instruction_set(arch: str, features: frozenset[str]) -> str:
    """The vector instruction set of a target: avx512, avx2, neon, sse or generic."""
    if arch in ("x86_64", "i386", "i686"):
        if "avx512f" in features:
            return "avx512"
        return "avx2" if {"avx2", "fma"} <= features else "sse"
    return "neon" if arch in ("aarch64", "arm64") else "generic"


def _override(variable: str, choices: tuple[str, ...], meaning: str) -> str | None:
    value = os.environ.get(variable, "").strip()
    if value and value not in choices:
        raise ValueError(f"{variable}={value!r}: expected one of {', '.join(choices)} ({meaning})")
    return value or None


_ARCH, _CPU, _FEATURES = _target()
MACHINE_ISA = instruction_set(_ARCH, _FEATURES)  # what the machine code uses
LAYOUT_OVERRIDDEN = _override(LAYOUT_OVERRIDE, tuple(TILES), "the instruction set whose layout the kernels take")
ISA = LAYOUT_OVERRIDDEN or MACHINE_ISA  # whose layout and per-ISA rules the kernels follow
_width = _override(OVERRIDE, tuple(map(str, WIDTHS)), "bytes per vector")
OVERRIDDEN = int(_width) if _width else None
WIDTH = OVERRIDDEN or TILES[ISA][0]
ROWS = TILES[ISA][1]


def code_generation() -> dict:
    """What the Numba kernels are compiled for: {"isa", "layout", "vector_bytes", "tile_rows", "cpu",
    "source"}: the machine code's instruction set, the one whose layout the kernels take (the same unless
    overridden), and source "isa" (nothing overridden) or the override variables in effect."""
    overrides = [name for name, value in ((LAYOUT_OVERRIDE, LAYOUT_OVERRIDDEN), (OVERRIDE, OVERRIDDEN)) if value]
    return {"isa": MACHINE_ISA, "layout": ISA, "vector_bytes": WIDTH, "tile_rows": ROWS, "cpu": _CPU,
            "source": ", ".join(overrides) or "isa"}


def _cache_base() -> Path:
    """NUMBA_CACHE_DIR if set, else where Numba would cache these kernels: their __pycache__ if it can be
    written (a source checkout), else Numba's folder in the user's cache (an installed package)."""
    if config.CACHE_DIR:
        return Path(config.CACHE_DIR)
    here = Path(__file__).parent
    if os.access(here, os.W_OK):
        return here / "__pycache__"
    return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)


@contextlib.contextmanager
def cache_folder() -> Iterator[None]:
    """Numba functions decorated inside this block cache their machine code under a folder per layout and
    width when either is overridden (the cache does not see them), in the usual place otherwise."""
    if OVERRIDDEN is None and LAYOUT_OVERRIDDEN is None:
        yield
        return
    saved = config.CACHE_DIR
    layout = f"layout-{ISA}-" if LAYOUT_OVERRIDDEN else ""
    config.CACHE_DIR = str(_cache_base() / f"minicv-{layout}vector-bytes-{WIDTH}")
    try:
        yield
    finally:
        config.CACHE_DIR = saved
