"""Vectors that live in registers: what Numba's loops cannot say, in a few intrinsics.

LLVM vectorises a loop along its innermost index, so a matrix product written in scalars either sums
along the reduction (each output then costs a horizontal sum of a vector of partial sums) or keeps its
tile of outputs in memory. The fast form, an outer-product micro-kernel, keeps a tile of outputs in
vector registers and broadcasts the other operand into them; it needs a value that *is* a vector. Here
it is: ``Vector`` is an LLVM ``<lanes x float>`` value of ``VECTOR_BYTES``, and the intrinsics load,
broadcast, multiply-add, add, subtract, interleave, deinterleave and store it. LLVM splits it into the
machine's registers and keeps it there while it is a loop variable; ``VECTOR_BYTES`` is chosen for the
CPU Numba compiles for (``target.py``: two registers on AVX-512 and NEON); ``load_width`` and
``splat`` make narrower ones, for rows too short for it. Max pooling's compare and select
(``take_greater_or_nan``) are here too: a loop whose selects LLVM did not vectorise ran them as
branches, mispredicted on real data.

The loads and stores do not check bounds: a caller reads only buffers it laid out itself, and checks
once, before the loop, that the last vector it will touch ends inside (conv's ``_strides``). ``empty``
allocates buffers that start on a cache line, so that aligned vectors touch as few lines as they can.

Numba's on-disk cache checks only the source file of each cached function: after changing an
intrinsic here, delete ``kernels/numba/__pycache__`` or the kernels keep their old machine code.
"""

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from . import target

VECTOR_BYTES = target.WIDTH  # on AVX-512, 128: 32 float32 or 16 float64 lanes, two zmm registers
SHORT_BYTES = 16  # one SSE or NEON register: the narrowest vector of every ISA here
CACHE_LINE = 64


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array starting on a cache line (numpy's start 16 bytes in): a
    vector at a multiple of 64 bytes from it then touches two lines, not three (a weight gradient
    reading gy channels-last ran 17% slower on a buffer 16 bytes off)."""
    dtype = np.dtype(dtype)
    raw = np.empty(math.prod(shape) * dtype.itemsize + CACHE_LINE, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start:start + math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)


class Vector(types.Type):
    """``lanes`` values of ``dtype`` as one LLVM vector: VECTOR_BYTES of them unless said otherwise."""

    def __init__(self, dtype: types.Float, lanes: int | None = None):
        self.dtype, self.lanes = dtype, lanes or VECTOR_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes))


def _element_pointer(context, builder, array_type, array, index):
    array = context.make_array(array_type)(context, builder, array)
    if array_type.layout == "C":
        # contiguous by its type: the index is the offset. Multiplying by the stride read at run time cost
        # an imul per load and kept LLVM from folding a tile's broadcasts into constant displacements
        # (the direct correlation's tile loop 1.25-1.4x faster without, AVX2 on Zen 3)
        return builder.gep(array.data, [index])
    stride = cgutils.unpack_tuple(builder, array.strides, 1)[0]
    offset = builder.mul(index, builder.sdiv(stride, ir.Constant(stride.type, array_type.dtype.bitwidth // 8)))
    return builder.gep(array.data, [offset])


def _vector_pointer(context, builder, sig, args, vector_type):
    """The address of array[index] as a pointer to a vector of vector_type."""
    pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
    return builder.bitcast(pointer, context.get_value_type(vector_type).as_pointer())


def _every_lane(context, builder, vector: Vector, scalar):
    """A vector of type vector with scalar in every lane."""
    vector_type = context.get_value_type(vector)
    first = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, first, ir.Constant(ir.VectorType(ir.IntType(32), vector.lanes),
                                                            [0] * vector.lanes))


def _one_dimensional(array) -> bool:
    return isinstance(array, types.Array) and array.ndim == 1


@intrinsic
def lanes(typingctx, value):
    """The lanes of a vector, or of a vector of an array's dtype: a compile-time constant."""
    count = value.lanes if isinstance(value, Vector) else Vector(value.dtype).lanes

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, count)
    return types.intp(value), codegen


@intrinsic
def zeros(typingctx, array):
    """A vector of zeros of array's dtype."""
    vector = Vector(array.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vector), None)
    return vector(array), codegen


@intrinsic(prefer_literal=True)
def repeat(typingctx, value, count):
    """(value,) * count, count a compile-time constant: the accumulators of a tile, one per row."""
    if not isinstance(count, types.IntegerLiteral):
        return None

    def codegen(context, builder, sig, args):
        return context.make_tuple(builder, sig.return_type, [args[0]] * count.literal_value)
    return types.UniTuple(value, count.literal_value)(value, count), codegen


def _load_codegen(context, builder, sig, args):
    pointer = _vector_pointer(context, builder, sig, args, sig.return_type)
    return builder.load(pointer, align=sig.return_type.dtype.bitwidth // 8)


@intrinsic
def load(typingctx, array, index):
    """array[index:index + lanes] as a vector; array is 1-D, its elements adjacent (the caller checks)."""
    if not _one_dimensional(array):
        return None
    return Vector(array.dtype)(array, index), _load_codegen


def _vector_of(dtype, width) -> Vector | None:
    """A vector of dtype as wide as width: a compile-time number of bytes, or a vector (its lanes)."""
    if isinstance(width, types.IntegerLiteral):
        return Vector(dtype, width.literal_value * 8 // dtype.bitwidth)
    return Vector(dtype, width.lanes) if isinstance(width, Vector) else None


@intrinsic(prefer_literal=True)
def load_width(typingctx, array, index, width):
    """load's vector as wide as width (SHORT_BYTES, say, or a vector of the width wanted) instead of VECTOR_BYTES."""
    vector = _vector_of(array.dtype, width) if _one_dimensional(array) else None
    return None if vector is None else (vector(array, index, width), _load_codegen)


@intrinsic
def store(typingctx, array, index, value):
    """array[index:index + value's lanes] = value; array is 1-D, its elements adjacent (the caller checks)."""
    if not (_one_dimensional(array) and isinstance(value, Vector) and value.dtype == array.dtype):
        return None

    def codegen(context, builder, sig, args):
        pointer = _vector_pointer(context, builder, sig, args, value)
        builder.store(args[2], pointer, align=array.dtype.bitwidth // 8)
    return types.void(array, index, value), codegen


@intrinsic
def store_int64(typingctx, array, index, value):
    """array[index:index + value's lanes] = value's lanes as int64: whole numbers from 0 to 2^24
    (float32) or 2^52 (float64), the caller checks; array is int64, 1-D, its elements adjacent. AVX2
    has no vector conversion to int64 (LLVM's was one scalar instruction a lane): float32 goes through
    int32, float64 through the bits of v + 2^52."""
    if not (_one_dimensional(array) and array.dtype == types.int64 and isinstance(value, Vector)):
        return None

    def codegen(context, builder, sig, args):
        int64s = ir.VectorType(ir.IntType(64), value.lanes)
        if value.dtype == types.float32:
            integers = builder.sext(builder.fptosi(args[2], ir.VectorType(ir.IntType(32), value.lanes)), int64s)
        else:
            shifted = builder.fadd(args[2], ir.Constant(args[2].type, [float(2**52)] * value.lanes))
            bits_of_2_52 = ir.Constant(int64s, [0x4330000000000000] * value.lanes)
            integers = builder.sub(builder.bitcast(shifted, int64s), bits_of_2_52)
        pointer = _element_pointer(context, builder, array, args[0], args[1])
        builder.store(integers, builder.bitcast(pointer, int64s.as_pointer()), align=8)
    return types.void(array, index, value), codegen


@intrinsic
def broadcast(typingctx, array, index):
    """array[index] in every lane; array is 1-D, any stride."""
    if not _one_dimensional(array):
        return None
    vector = Vector(array.dtype)

    def codegen(context, builder, sig, args):
        scalar = builder.load(_element_pointer(context, builder, array, args[0], args[1]))
        return _every_lane(context, builder, vector, scalar)
    return vector(array, index), codegen


@intrinsic(prefer_literal=True)
def splat(typingctx, value, width):
    """value, a float scalar, in every lane of a vector as wide as width (bytes, or a vector)."""
    vector = _vector_of(value, width) if isinstance(value, types.Float) else None
    if vector is None:
        return None

    def codegen(context, builder, sig, args):
        return _every_lane(context, builder, vector, args[0])
    return vector(value, width), codegen


@intrinsic
def take_greater_or_nan(typingctx, value, best, tap, best_tap):
    """(value, tap) in the lanes where value > best or value is NaN, (best, best_tap) in the others: max
    pooling's rule (the first maximum wins, and the last NaN). Four vectors of one type."""
    if not (isinstance(value, Vector) and value == best == tap == best_tap):
        return None

    def codegen(context, builder, sig, args):
        value, best, tap, best_tap = args
        take = builder.or_(builder.fcmp_ordered(">", value, best), builder.fcmp_unordered("uno", value, value))
        return context.make_tuple(builder, sig.return_type,
                                  [builder.select(take, value, best), builder.select(take, tap, best_tap)])
    return types.UniTuple(value, 2)(value, best, tap, best_tap), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c, lane by lane, with one rounding."""
    if not (isinstance(a, Vector) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        vector_type = args[0].type
        name = f"llvm.fma.v{vector_type.count}{vector_type.element.intrinsic_name}"
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector_type, [vector_type] * 3), name)
        return builder.call(function, args)
    return a(a, b, c), codegen


def _lane_by_lane(instruction: str, doc: str):
    """An intrinsic applying the LLVM IR builder's ``instruction`` to two vectors of one type, lane by lane."""
    def typer(typingctx, a, b):
        if not (isinstance(a, Vector) and a == b):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, instruction)(*args)
        return a(a, b), codegen
    typer.__name__, typer.__doc__ = instruction, doc
    return intrinsic(typer)


add = _lane_by_lane("fadd", "a + b, lane by lane.")
subtract = _lane_by_lane("fsub", "a - b, lane by lane.")


@intrinsic
def interleave(typingctx, a, b):
    """(a[0], b[0], a[1], b[1], ...): twice the lanes, as the two column phases of a stride-2 output row."""
    if not (isinstance(a, Vector) and a == b):
        return None
    pairs = [k for lane in range(a.lanes) for k in (lane, a.lanes + lane)]

    def codegen(context, builder, sig, args):
        return builder.shuffle_vector(args[0], args[1], ir.Constant(ir.VectorType(ir.IntType(32), len(pairs)), pairs))
    return Vector(a.dtype, 2 * a.lanes)(a, b), codegen


@intrinsic
def deinterleave(typingctx, a, b):
    """((a, b)[0::2], (a, b)[1::2]) of the 2 x lanes values of a then b: the inverse of interleave."""
    if not (isinstance(a, Vector) and a == b):
        return None

    def codegen(context, builder, sig, args):
        def every_other(first):
            mask = ir.Constant(ir.VectorType(ir.IntType(32), a.lanes), list(range(first, 2 * a.lanes, 2)))
            return builder.shuffle_vector(args[0], args[1], mask)
        return context.make_tuple(builder, sig.return_type, [every_other(0), every_other(1)])
    return types.UniTuple(a, 2)(a, b), codegen
