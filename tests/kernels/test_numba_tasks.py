"""kernels/numba/tasks.py: the launcher every parallel numba kernel runs through."""

import collections

import numba
import numpy as np
import pytest
from minicv.kernels.numba import tasks
from minicv.kernels.numba.tasks import AnyLayout, run_tasks
from numba import njit

from tests.conftest import numba_threads


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
    with numba_threads(threads):
        run_tasks(_mark, count, hits, pairs, (3, 5))
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
    with numba_threads(threads):
        run_tasks(_fill_rows, 3, 1.0, AnyLayout(contiguous))
        run_tasks(_fill_rows, 3, 1.0, AnyLayout(wide[:, ::2]))
    assert [signature[-1].layout for signature in _fill_rows.signatures] == ["A"]
    np.testing.assert_array_equal(contiguous, np.repeat([[1.0], [2.0], [3.0]], 4, axis=1))
    np.testing.assert_array_equal(wide[:, ::2], contiguous)
    assert not wide[:, 1::2].any()


@njit
def _copy_arguments(first, last, out, count, scale, ratio, flag, pair, nested):
    """out[task] = the scalars, tuples and an array inside a tuple the kernel was handed, for every task."""
    weights, (offset, table) = nested
    for task in range(first, last):
        out[task, 0] = count
        out[task, 1] = scale
        out[task, 2] = ratio
        out[task, 3] = flag
        out[task, 4] = pair[0] * pair[1]
        out[task, 5] = weights[task] + offset + table[1, task]


def test_every_kind_of_argument_reaches_the_kernel_on_every_thread():
    """The launcher hands a kernel its arguments as 64-bit words (_pack): an int64, a float64, a float32 and a
    bool, a tuple, and arrays inside a nested tuple arrive as the kernel's own call would have them."""
    tasks_count = 6
    out = np.zeros((tasks_count, 6))
    weights, table = np.arange(tasks_count, dtype=np.float64), np.arange(2 * tasks_count).reshape(2, tasks_count)
    with numba_threads(2):
        run_tasks(_copy_arguments, tasks_count, out, -(2**40), 0.1, np.float32(0.75), True, (3, -7),
                  (weights, (np.int32(5), table)))
    expected = np.array([[-(2**40), 0.1, 0.75, 1.0, -21.0, t + 5 + table[1, t]] for t in range(tasks_count)])
    np.testing.assert_array_equal(out, expected)


def test_one_launcher_compile_serves_kernels_of_any_arguments():
    """The parallel launcher's arguments are the same whatever the kernel's (its compile is the expensive one):
    after kernels of different argument types, it holds one compile."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread: run_tasks calls the kernel itself, no launcher")
    run_tasks(_mark, 4, np.zeros(4, np.int64), np.zeros(4, np.int64), (1, 1))
    run_tasks(_fill_rows, 3, 1.0, AnyLayout(np.zeros((3, 4))))
    run_tasks(_fail_at, 4, -1, np.zeros(4))
    assert len(tasks._launch.signatures) == 1


def _pack(*args):
    """What run_tasks hands the launcher on two threads or more (called here whatever the thread count)."""
    return tasks._pack(args, np.empty(tasks.MAX_WORDS, np.int64))


def test_arguments_past_max_words_are_refused_by_name():
    """Ten 4-d arrays make 130 words, past MAX_WORDS: the compile stops with an error saying so, never writing
    past the words."""
    with pytest.raises(numba.core.errors.TypingError, match="130 words, more than MAX_WORDS = 128"):
        _pack(*(np.zeros((2, 1, 1, 1)) for _ in range(10)))


def test_an_argument_of_another_type_is_refused_by_name():
    """Only arrays, numbers, bools, None and tuples of them reach a kernel as words: an array inside another
    type (a named tuple) would keep a reference count released before the kernel runs, so it is refused."""
    pair = collections.namedtuple("pair", "a b")
    with pytest.raises(numba.core.errors.TypingError, match="run_tasks: a kernel argument of type .*pair"):
        _pack(np.zeros(4), pair(np.ones(1), np.ones(1)))
