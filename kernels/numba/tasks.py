"""Parallel loops: a kernel's tasks, split over the threads, by one small compiled launcher.

Every parallel kernel here is a plain ``@njit`` function of a range of tasks, ``kernel(first, last,
*args)``, looping ``for task in range(first, last)``; ``run_tasks(kernel, count, *args)`` runs tasks
0 .. count - 1 with one range per thread, as a ``prange`` over the tasks would (Numba's default
schedule: equal consecutive ranges). Kernels take ``error_model="numpy"``, which ``parallel=True``
implied: a float division by zero gives an infinity or a NaN, and divisions carry no test for zero.

Why not ``prange`` in each kernel: Numba compiles a ``parallel=True`` function's loop body as a
function of its own, links it into the caller and optimises it there again, and runs its parallel
passes over the whole body: 1-3 s of compile per kernel on top of the kernel's own, half of the cold
start (docs/kernels/cold_start.md). Here the kernel compiles once, as a plain function, and the launcher
(``_launch``, a ``prange`` over the threads) calls it through its address, an argument: nothing of the
kernel is linked into the launcher, which compiles in a fraction of a second, once per argument types.
Numba's on-disk cache keeps both (the address is read when the process runs, never compiled in).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba import njit, prange, types
from numba._dispatcher import compute_fingerprint  # the key Numba's own dispatch looks compiled code up by
from numba.core import cgutils, errors
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic, register_jitable


@intrinsic
def _call(typingctx, address, first, last, args):
    """The kernel compiled at ``address`` (Numba's calling convention) called on (first, last, *args), args
    its arguments with tuples flattened (_flat); returns whether it raised (the exception itself stays
    behind: see run_tasks)."""
    if (first, last) != (types.int64, types.int64):  # what the kernel was compiled for (_compile)
        raise errors.TypingError(f"task bounds must be int64, not {first} and {last}")
    argtypes = (first, last, *args.types)

    def codegen(context, builder, signature, values):
        call_conv = context.call_conv
        function = builder.inttoptr(values[0], call_conv.get_function_type(types.none, argtypes).as_pointer())
        arguments = [values[1], values[2], *cgutils.unpack_tuple(builder, values[3])]
        status, _ = call_conv.call_function(builder, function, types.none, argtypes, arguments)
        return status.is_error

    return types.boolean(address, first, last, args), codegen


@njit(parallel=True, cache=True)
def _launch(address, count, failed, args):
    # as many ranges as failed has flags, chosen by the caller: numba.get_num_threads() compiled in here
    # would keep the launcher out of the cache
    for r in prange(failed.size):
        failed[r] = _call(address, *_bounds(r, count, failed.size), args)


@register_jitable
def _bounds(r, count, ranges):
    """(first, last) of range r of ``ranges`` over tasks 0 .. count - 1: equal consecutive ranges."""
    return np.int64(r * count // ranges), np.int64((r + 1) * count // ranges)


@dataclass(frozen=True)
class AnyLayout:
    """An array argument that the kernel is compiled for as layout "A" (any strides) whatever this one's: a
    C-contiguous array and a strided view then share one compile of the kernel, where each layout would
    compile its own (the direct correlation: 3 s each, cold). Worth it where the kernel reaches the array's
    elements through a pointer to a row (``simd.store``): as fast for either layout."""

    array: np.ndarray


def _argument_type(value: Any) -> types.Type:
    return numba.typeof(value.array).copy(layout="A") if isinstance(value, AnyLayout) else numba.typeof(value)


def _argument_key(value: Any) -> Any:
    """Numba's fingerprint of an argument (what its own dispatch looks compiled code up by, in C: tens of
    microseconds a call less than typeof, whose types are objects built anew), an AnyLayout's marked as
    such: its array's layouts then have keys of their own, which all lead to the one "A" compile."""
    return (AnyLayout, compute_fingerprint(value.array)) if isinstance(value, AnyLayout) else compute_fingerprint(value)


# (kernel, argument keys) -> (entry point, address) of its compiled code (the kernel keeps the code)
_compiled: dict[tuple, tuple[Any, int]] = {}


def _compile(kernel: Dispatcher, args: tuple) -> tuple[Any, int, tuple]:
    """``kernel`` compiled for (int64, int64, *args), compiled (or loaded) on first use: the entry point
    Python calls, the address the launcher calls, and the arguments to hand them (an AnyLayout's array)."""
    key = (kernel, *map(_argument_key, args))
    values = tuple(value.array if isinstance(value, AnyLayout) else value for value in args)
    if key not in _compiled:
        signature = (types.int64, types.int64, *map(_argument_type, args))
        kernel.compile(signature)
        compiled: Any = kernel.overloads[signature]  # numba's compile result (its stub lacks these fields)
        _compiled[key] = compiled.entry_point, compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)
    return (*_compiled[key], values)


def run_tasks(kernel: Dispatcher, count: int, *args: Any) -> None:
    """kernel(first, last, *args) over tasks 0 .. count - 1, in one range per thread, in parallel (one
    range: called here). An argument may be an AnyLayout."""
    if count <= 0:
        return
    entry_point, address, values = _compile(kernel, args)
    ranges = min(count, numba.get_num_threads())
    if ranges == 1:  # one thread, or one task: no launcher to compile or to start
        entry_point(0, count, *values)
        return
    failed = np.zeros(ranges, np.bool_)
    flat = values if not any(isinstance(value, tuple) for value in values) else tuple(_flat(values))
    # an array typed C here and A in the kernel is the same value to the call: numba's data model of an array
    # is one struct whatever its layout
    _launch(address, count, failed, flat)
    if failed.any():
        _raise_failure(kernel, entry_point, count, failed, values)


def _raise_failure(kernel: Dispatcher, entry_point: Any, count: int, failed: np.ndarray, args: tuple) -> None:
    """Raise what the kernel raised: an exception on a worker thread never reaches Python, so the first
    range that failed runs again here, on this thread, where it does (the outputs are lost either way)."""
    first, last = map(int, _bounds(int(np.argmax(failed)), count, failed.size))
    entry_point(first, last, *args)
    raise RuntimeError(f"{kernel.py_func.__name__}: tasks {first} .. {last - 1} raised on a worker thread, not "
                       "when run again here")


def _flat(values: tuple) -> Iterator[Any]:
    """The values, tuples among them replaced by their items (recursively). The launcher's parallel loop
    takes a tuple of arrays and scalars only (Numba's parallel loop body refuses a tuple inside one), and
    the call is the same: Numba's calling convention passes a tuple argument as its items, one by one."""
    for value in values:
        if isinstance(value, tuple):
            yield from _flat(value)
        else:
            yield value
