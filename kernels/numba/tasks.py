"""Parallel loops: a kernel's tasks, split over the threads, by one compiled launcher for every kernel.

Every parallel kernel here is a plain ``@njit`` function of a range of tasks, ``kernel(first, last,
*args)``, looping ``for task in range(first, last)``; ``run_tasks(kernel, count, *args)`` runs tasks
0 .. count - 1 with one range per thread, as a ``prange`` over the tasks would (Numba's default
schedule: equal consecutive ranges). Kernels take ``error_model="numpy"``, which ``parallel=True``
implied: a float division by zero gives an infinity or a NaN, and divisions carry no test for zero.

Why not ``prange`` in each kernel: Numba compiles a ``parallel=True`` function's loop body as a
function of its own, links it into the caller and optimises it there again, and runs its parallel
passes over the whole body: 1-3 s of compile per kernel on top of the kernel's own, half of the cold
start (docs/kernels/cold_start.md). Here the kernel compiles once, as a plain function, and one launcher
(``_launch``, a ``prange`` over the threads) calls it through its address. The launcher's arguments are
the same for every kernel: the kernel's arguments reach it as 64-bit words, flattened as Numba's calling
convention passes them (an array is its pointer, sizes and strides), written by ``_pack``. ``_pack``
compiles once per kernel's argument types, but it is a few loads and stores, not a parallel loop (0.2 s
of compile where a launcher per argument types took 0.8 s), and it also returns the trampoline that reads
the words back and makes the call (``_trampoline``). Numba's on-disk cache keeps all three (addresses are
read when the process runs, never compiled in).
"""

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba._dispatcher import compute_fingerprint  # the key Numba's own dispatch looks compiled code up by
from numba.core import cgutils, errors
from numba.core.datamodel import default_manager
from numba.core.datamodel.packer import ArgPacker
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic, register_jitable

MAX_WORDS = 128  # words of a kernel's flattened arguments at most (a 4-d array is 13; the demo's kernels use up to 82)
_WORD = ir.IntType(64)
_FLOAT_BITS = {ir.FloatType: 32, ir.DoubleType: 64}
# trampoline(address, first, last, words) -> whether the kernel raised
_TRAMPOLINE = ir.FunctionType(ir.IntType(1), [_WORD, _WORD, _WORD, _WORD.as_pointer()])


def _to_word(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """One flattened argument (an integer, a float or a pointer) as the 64 bits of a word."""
    if isinstance(value.type, ir.PointerType):
        return builder.ptrtoint(value, _WORD)
    if isinstance(value.type, (ir.FloatType, ir.DoubleType)):  # its bits, as an integer as wide
        value = builder.bitcast(value, ir.IntType(_FLOAT_BITS[type(value.type)]))
    return builder.zext(value, _WORD) if value.type.width < 64 else value


def _from_word(builder: ir.IRBuilder, word: ir.Value, kind: ir.Type) -> ir.Value:
    """The flattened argument of LLVM type ``kind`` that _to_word made ``word`` of."""
    if isinstance(kind, ir.PointerType):
        return builder.inttoptr(word, kind)
    if isinstance(kind, (ir.FloatType, ir.DoubleType)):
        return builder.bitcast(_from_word(builder, word, ir.IntType(_FLOAT_BITS[type(kind)])), kind)
    return builder.trunc(word, kind) if kind.width < 64 else word


def _without_meminfo(context: Any, builder: ir.IRBuilder, kind: Any, value: ir.Value) -> ir.Value:
    """value with each array's meminfo and parent (in tuples too) null. The unboxed arrays' meminfos are
    released when _pack returns, before the kernel runs; the kernels' reference counting skips a null
    meminfo, and run_tasks' caller keeps the arrays alive."""
    if isinstance(kind, types.Array):
        array = cgutils.create_struct_proxy(kind)(context, builder, value=value)
        array.meminfo = cgutils.get_null_value(array.meminfo.type)
        array.parent = cgutils.get_null_value(array.parent.type)
        return array._getvalue()
    if isinstance(kind, (types.Tuple, types.UniTuple)):
        for i, item in enumerate(kind.types):
            item_value = _without_meminfo(context, builder, item, builder.extract_value(value, i))
            value = builder.insert_value(value, item_value, i)
    return value


def _trampoline(context: Any, module: ir.Module, argtypes: tuple[types.Type, ...]) -> ir.Function:
    """This module's trampoline(address, first, last, words): the kernel compiled at ``address`` called on
    (first, last, *args), args of argtypes read back from words; returns whether the kernel raised."""
    function = ir.Function(module, _TRAMPOLINE, "minicv_trampoline")  # one per module: each holds one _pack
    function.linkage = "internal"
    builder = ir.IRBuilder(function.append_basic_block())
    address, first, last, words = function.args
    packer = context.get_arg_packer(argtypes)
    flat = [_from_word(builder, builder.load(builder.gep(words, [ir.Constant(_WORD, i)])), kind)
            for i, kind in enumerate(packer.argument_types)]
    kernel_types = (types.int64, types.int64, *argtypes)
    call_conv = context.call_conv
    kernel = builder.inttoptr(address, call_conv.get_function_type(types.none, kernel_types).as_pointer())
    status, _ = call_conv.call_function(builder, kernel, types.none, kernel_types,
                                        [first, last, *packer.from_arguments(builder, flat)])
    builder.ret(status.is_error)
    return function


def _passable(kind: Any) -> bool:
    """An array, a number, a bool, None, or a tuple of them: what _without_meminfo hands over safely (an array
    inside another type would keep a meminfo that is freed before the kernel runs)."""
    if isinstance(kind, (types.Tuple, types.UniTuple)):
        return all(map(_passable, kind.types))
    return isinstance(kind, (types.Array, types.Number, types.Boolean, types.NoneType))


@intrinsic
def _pack_arguments(typingctx, args, words):
    """Write the tuple args into the int64 array words (MAX_WORDS long), flattened as Numba's calling
    convention passes them; returns the address of the trampoline that calls a kernel on them."""
    for kind in args.types:
        if not _passable(kind):
            raise errors.TypingError(f"run_tasks: a kernel argument of type {kind}; expected arrays, numbers, "
                                     "bools, None and tuples of them")
    count = len(ArgPacker(default_manager, args.types).argument_types)
    if count > MAX_WORDS:
        raise errors.TypingError(f"run_tasks: the arguments make {count} words, more than MAX_WORDS = {MAX_WORDS}")

    def codegen(context, builder, signature, values):
        items = [_without_meminfo(context, builder, kind, item)
                 for kind, item in zip(args.types, cgutils.unpack_tuple(builder, values[0]))]
        data = cgutils.create_struct_proxy(signature.args[1])(context, builder, value=values[1]).data
        for i, value in enumerate(context.get_arg_packer(args.types).as_arguments(builder, items)):
            builder.store(_to_word(builder, value), builder.gep(data, [ir.Constant(_WORD, i)]))
        return builder.ptrtoint(_trampoline(context, builder.module, tuple(args.types)), _WORD)

    return types.int64(args, words), codegen


@njit(cache=True)
def _pack(args, words):
    """words (MAX_WORDS long) = the tuple args flattened; returns the trampoline that calls a kernel on them."""
    return _pack_arguments(args, words)


@intrinsic
def _call(typingctx, trampoline, address, first, last, words):
    """The trampoline's call of the kernel at address on tasks first .. last - 1; returns whether it raised
    (the exception itself stays behind: see run_tasks)."""

    def codegen(context, builder, signature, values):
        function = builder.inttoptr(values[0], _TRAMPOLINE.as_pointer())
        data = cgutils.create_struct_proxy(signature.args[4])(context, builder, value=values[4]).data
        return builder.call(function, [*values[1:4], data])

    return types.boolean(trampoline, address, first, last, words), codegen


@njit(parallel=True, cache=True)
def _launch(trampoline, address, count, failed, words):
    # as many ranges as failed has flags, chosen by the caller: numba.get_num_threads() compiled in here
    # would keep the launcher out of the cache
    for r in prange(failed.size):
        failed[r] = _call(trampoline, address, *_bounds(r, count, failed.size), words)


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
    try:  # in C, argument by argument: most kernels take no AnyLayout (~15 us a call less, in a training step)
        key, values = (kernel, *map(compute_fingerprint, args)), args
    except NotImplementedError:  # an AnyLayout (a value Numba cannot fingerprint at all raises again here)
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
    if ranges == 1:  # one thread, or one task: no launcher to start
        entry_point(0, count, *values)
        return
    failed = np.zeros(ranges, np.bool_)
    words = np.empty(MAX_WORDS, np.int64)
    # an array typed C here and A in the kernel is the same value to the call: numba's data model of an array
    # is one struct whatever its layout
    _launch(_pack(values, words), address, count, failed, words)
    if failed.any():
        _raise_failure(kernel, entry_point, count, failed, values)


def _raise_failure(kernel: Dispatcher, entry_point: Any, count: int, failed: np.ndarray, args: tuple) -> None:
    """Raise what the kernel raised: an exception on a worker thread never reaches Python, so the first
    range that failed runs again here, on this thread, where it does (the outputs are lost either way)."""
    first, last = map(int, _bounds(int(np.argmax(failed)), count, failed.size))
    entry_point(first, last, *args)
    raise RuntimeError(f"{kernel.py_func.__name__}: tasks {first} .. {last - 1} raised on a worker thread, not "
                       "when run again here")

