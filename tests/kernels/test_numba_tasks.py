"""kernels/numba/tasks.py: the launcher every parallel numba kernel runs through."""

import numba
import numpy as np
import pytest
from minicv.kernels.numba.tasks import AnyLayout, run_tasks
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


@njit
def _fill_rows(first, last, value, out):
    for task in range(first, last):
        row = out[task]
        for i in range(row.size):
            row[i] = value + task


@pytest.mark.parametrize("threads", [1, 2])
def test_an_any_layout_argument_compiles_once_for_a_contiguous_array_and_a_strided_view(threads):
    """AnyLayout(out): the kernel compiles once, for layout "A", and writes a C-contiguous array and a strided
    view of another alike, on one thread (called here) and through the launcher."""
    contiguous, wide = np.zeros((3, 4)), np.zeros((3, 8))
    saved = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        run_tasks(_fill_rows, 3, 1.0, AnyLayout(contiguous))
        run_tasks(_fill_rows, 3, 1.0, AnyLayout(wide[:, ::2]))
    finally:
        numba.set_num_threads(saved)
    assert [signature[-1].layout for signature in _fill_rows.signatures] == ["A"]
    np.testing.assert_array_equal(contiguous, np.repeat([[1.0], [2.0], [3.0]], 4, axis=1))
    np.testing.assert_array_equal(wide[:, ::2], contiguous)
    assert not wide[:, 1::2].any()
