"""Numba's on-disk cache, shared by processes that need the same function at the same time.

minicv compiles in two processes on a cold cache (minicv/precompile.py). Numba alone lets each process
that misses the cache compile the function itself, and save it: when both need one function at once,
both compile it (seconds of work done twice), and their saves can mix up its cache entries
(``IndexDataCacheFile.save`` names a new entry's data file by the first free number in the function's
index, so two saves at once take the same number, and the index can name the other's machine code).

So here a process *claims* a function before it loads, compiles and saves it: an exclusive ``flock`` on
a file beside the function's cache index, held until its machine code is saved (the system drops it if
the process dies). A second process that needs the function meanwhile waits for the claim, then loads
what the first saved instead of compiling it again; saves never overlap. A claim is taken at each
compile request (the first call of a signature in a process, and each time a caller is typed), which
costs an open and an flock when nobody holds it. Where there is no ``flock`` (Windows) nothing changes,
and ``LOCKED`` says so.
"""

import os
from typing import Any

from numba.core import caching, dispatcher

try:
    import fcntl

    LOCKED = True
except ImportError:  # Windows
    LOCKED = False

CLAIM_SUFFIX = ".claim"
# Numba's own compile, also when this file runs a second time under another name (a source checkout's
# ``kernels.numba`` beside ``minicv.kernels.numba``, which unpickling a cached kernel imports): wrapping
# the wrapper would claim twice through two open files, and the process would wait on itself.
_unclaimed_compile = getattr(dispatcher.Dispatcher.compile, "unclaimed", dispatcher.Dispatcher.compile)
_held: set[str] = set()  # the claims this process holds: a nested request for one of them goes ahead


def claim_path(function: dispatcher.Dispatcher) -> str | None:
    """The claim file of an on-disk cached function, or None (a function without ``cache=True``)."""
    cache = function._cache  # type: ignore[attr-defined]  # numba's own, set in its __init__
    if not isinstance(cache, caching.Cache):
        return None
    return os.path.join(cache.cache_path, cache._cache_file._index_name + CLAIM_SUFFIX)


def _claimed_compile(self: dispatcher.Dispatcher, sig: Any) -> Any:
    path = claim_path(self)
    if path is None or path in _held:
        return _unclaimed_compile(self, sig)
    try:
        claim = open(path, "a")  # noqa: SIM115 (held across the compile, closed below)
    except OSError:  # a cache folder not made yet, or read-only: numba reports its own trouble with it
        return _unclaimed_compile(self, sig)
    with claim:
        try:
            fcntl.flock(claim, fcntl.LOCK_EX)  # released when the file closes
        except OSError:  # a file system without flock (some network ones): compile as numba alone would
            return _unclaimed_compile(self, sig)
        _held.add(path)
        try:
            return _unclaimed_compile(self, sig)
        finally:
            _held.discard(path)


_claimed_compile.unclaimed = _unclaimed_compile  # type: ignore[attr-defined]
if LOCKED:
    dispatcher.Dispatcher.compile = _claimed_compile  # type: ignore[method-assign]  # the patch is the point
