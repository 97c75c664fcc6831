"""kernels/numba/tasks.py: the launcher every parallel numba kernel runs through."""

import numba
import numpy as np
import pytest
from minicv.kernels.numba.tasks import run_tasks
from numba import njit


@njit
def _mark(first, last, hits, pairs, scale):
    """hits[task] += 1 and pairs[task] = task * scale[0] + scale[1] for the range's tasks."""
    for task in range(first, last):
        hits[task] += 1
        pairs[task] = task * scale[0] + scale[1]


@njit
def _fail_at(first, last, bad, out):
    for task in range(first, last):
        if task == bad:
            raise ValueError("task failed")
        out[task] = 1


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64, 1001])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_task_runs_once_whatever_the_count_and_threads(count, threads):
    """One range per thread, together every task once; a tuple argument arrives whole (the launcher passes
    it flattened, the kernel gets it as its tuple)."""
    hits, pairs = np.zeros(count + 1, np.int64), np.zeros(count + 1, np.int64)
    saved = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        run_tasks(_mark, count, hits, pairs, (3, 5))
    finally:
        numba.set_num_threads(saved)
    np.testing.assert_array_equal(hits, [1] * count + [0])  # the last slot: no task past count
    np.testing.assert_array_equal(pairs[:count], np.arange(count) * 3 + 5)


def test_no_task_runs_nothing():
    hits = np.zeros(4, np.int64)
    run_tasks(_mark, 0, hits, hits.copy(), (1, 1))
    assert not hits.any()


@pytest.mark.parametrize("bad", [2, 7])
def test_an_exception_in_a_kernel_reaches_the_caller(bad):
    """Raised inside a task, on this thread (task 2) or on a worker (task 7 of 10, in the second range where
    there are two), the kernel's own exception reaches the caller."""
    with pytest.raises(ValueError, match="^task failed$"):
        run_tasks(_fail_at, 10, bad, np.zeros(10))
