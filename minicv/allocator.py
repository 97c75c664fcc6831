"""The process's memory allocator: have glibc keep freed memory for the next allocation.

By default glibc takes every block above a threshold (at most 32 MiB) fresh from the OS and hands it back
when freed, so an op that allocates a large output pays a page fault for each 4 KiB it writes, at every
call: a training step allocates its activations, gradients and the convolutions' padded inputs afresh
each time. On the demo's steps (N32 3x64x64, numba device, two cores) that made learned 167 ms instead of
133 and SegNet 198 instead of 138; a 16-channel stride-2 conv forward alone took 10.1 ms instead of 3.1.
PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for the same reason.

The engine never changes the allocator on import (a library leaves that to the application); the
applications do: the ``minicv`` command for every command it runs, and the benchmark (``--malloc``).
"""

from __future__ import annotations

import ctypes


def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to their maximum for the rest of the process's life, so that
    freed blocks are reused instead of returned to the OS. True where it applied (glibc)."""
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(m_mmap_threshold, 2**31 - 1) and libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
