"""Numba's on-disk cache, safe for processes that compile one function at the same time.

``IndexDataCacheFile.save`` reads a function's index of cached signatures, names the new entry's data
file by the first free number, then writes the index and the data file. Two processes saving different
signatures of one function at the same moment take the same number, and the index can then name the
other process's machine code. minicv compiles in two processes on a cold cache (minicv/precompile.py),
so here every save holds an exclusive lock on a file in the function's cache folder (``flock``: the
system drops it if the process dies). Loads take no lock: a save writes each file whole, by renaming.
Where there is no ``flock`` (Windows) nothing changes, and ``LOCKED`` says so.
"""

import os

from numba.core import caching

try:
    import fcntl

    LOCKED = True
except ImportError:  # Windows
    LOCKED = False

LOCK_NAME = "minicv-cache.lock"
# Numba's own save, also when this file runs a second time under another name (a source checkout's
# ``kernels.numba`` beside ``minicv.kernels.numba``, which unpickling a cached kernel imports): wrapping
# the wrapper would take the lock again through a second open file, and the process would wait on itself.
_unlocked_save = getattr(caching.IndexDataCacheFile.save, "unlocked", caching.IndexDataCacheFile.save)


def _locked_save(self: caching.IndexDataCacheFile, key: object, data: object) -> None:
    with open(os.path.join(self._cache_path, LOCK_NAME), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        _unlocked_save(self, key, data)


_locked_save.unlocked = _unlocked_save  # type: ignore[attr-defined]
if LOCKED:
    caching.IndexDataCacheFile.save = _locked_save  # type: ignore[method-assign]  # the patch is the point
