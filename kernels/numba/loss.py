"""Per-pixel softmax cross-entropy on the CPU, forward and backward.

Logits are (N, C, P): for a fixed class the pixels are contiguous, so every loop runs over a block of
pixels (vectorised by LLVM) with the class loop outside: max, sum of exp, log-sum-exp, loss, all per
pixel and numerically stable. Tasks are (n, pixel block) pairs, parallel. ``exp`` is written out
(Cephes' range reduction, bit-built powers of two; Cephes' rational function in float64, and in float32 the
degree-5 polynomial of XNNPACK's softmax kernels: 2.2 ulp at most against Cephes' degree 7 and 1 ulp, and
two multiply-adds fewer, the backward 10-15% faster on Zen 3) because Numba's ``math.exp`` is a scalar
libm call that LLVM cannot vectorise without SVML.
``log`` (once per pixel) likewise in float32, where the libm call took half of the forward's time.
The kernels allow FMA contraction (``fastmath={"contract"}``, nothing else): the polynomials' multiply-adds
fuse, one rounding instead of two, and the exp loops run 10-20% faster. No loop stores only some lanes of
a vector (a select against the value already there): AVX2 has no mask registers, and LLVM makes such a
store vmaskmovps, microcoded on AMD (``_maximum``).
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import target
from .tasks import run_tasks

# Pixels per task, measured at N16 C21 128x128 on Zen 4 (one thread, CPU time). The forward reads a block's
# C rows twice (max, then exp): at 128 pixels they stay in L1 between the passes (1.5x faster than 512).
# The backward reads each row once: long runs of a row stream from memory best (4096: 1.2x faster than 512).
FORWARD_BLOCK = 128
BACKWARD_BLOCK = 4096
# A full block's width as a literal lets LLVM vectorise its loops far better with AVX-512 (the forward 1.5x
# faster on Zen 4, one thread). With AVX2 it pays nothing (Zen 3, N16 C21 128x128: forward 3.9 ms with it,
# 3.8 without, backward 3.8 and 3.6, two threads; 3.6 and 3.7 ms at N32 C21 64x64) and a second copy of
# each kernel's body costs 3.4 s of its cold compile (12.6 -> 8.6 s CPU), so only AVX-512 code has it.
LITERAL_WIDTH = target.ISA == "avx512"


# 1.5 * 2**mantissa bits + the exponent's bias: t + ROUNDER rounds t to an integer n held in the sum's low
# mantissa bits as n + bias, from which _pow2 takes 2**n; (t + ROUNDER) - ROUNDER is n as a float.
# No float -> int conversion (undefined for NaN in LLVM, and two more instructions than this per vector).
ROUNDER_F32 = np.float32(1.5 * 2**23 + 127)
ROUNDER_F64 = 1.5 * 2**52 + 1023


@intrinsic
def _pow2(typingctx, rounded):
    """2.0 ** n from ``rounded`` = n + ROUNDER_* (n in the normal range): its low bits shifted into the
    exponent field, in LLVM IR, at the float's own width so that the loops around it vectorise fully."""
    if rounded not in (types.float32, types.float64):
        return None
    width, mantissa = (32, 23) if rounded == types.float32 else (64, 52)

    def codegen(context, builder, signature, args):
        integer = ir.IntType(width)
        bits = builder.shl(builder.bitcast(args[0], integer), ir.Constant(integer, mantissa))
        return builder.bitcast(bits, args[0].type)

    return rounded(rounded), codegen


@intrinsic
def _maximum(typingctx, a, b):
    """max(a, b), NaN if either is NaN: LLVM's ``maximum``, never a masked store. Written out
    (``peak[q] = v if (v > peak[q]) | (v != v) else peak[q]``, or as a select), LLVM stores only the lanes
    that change: a masked store (vmaskmovps) in AVX2 code, microcoded on AMD, which took 2.2 of the AVX2
    forward's 6.8 ms (one thread, Zen 4; AVX-512's mask registers have no such cost)."""
    if not (a == b and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        kind = args[0].type
        name = f"llvm.maximum.{'f32' if kind == ir.FloatType() else 'f64'}"
        return builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(kind, [kind, kind]), name),
                            args)

    return a(a, b), codegen


@intrinsic
def _frexp_f32(typingctx, x):
    """(m, e) with x = m * 2**e, m in [0.5, 1), for a positive normal float32, from its bits in LLVM IR
    (vectorisable, unlike libm's frexpf)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        exponent = builder.sub(builder.and_(builder.lshr(bits, ir.Constant(i32, 23)), ir.Constant(i32, 0xFF)),
                               ir.Constant(i32, 126))
        mantissa_bits = builder.or_(builder.and_(bits, ir.Constant(i32, 0x807FFFFF)), ir.Constant(i32, 0x3F000000))
        parts = [builder.bitcast(mantissa_bits, ir.FloatType()), builder.sitofp(exponent, ir.FloatType())]
        return context.make_tuple(builder, signature.return_type, parts)

    return types.UniTuple(types.float32, 2)(x), codegen


@njit(inline="always", cache=True)
def _log_f32(x):
    """log for positive normal x (Cephes' logf, ~1 ulp); NaN passes through, +inf gives NaN (the sums of exps
    logged here are in [1, C] or NaN)."""
    m, e = _frexp_f32(x)
    if m < np.float32(0.707106781186547524):  # m in [sqrt(1/2), sqrt(2)): the polynomial's range
        e -= np.float32(1.0)
        m = m + m
    m -= np.float32(1.0)
    z = m * m
    p = np.float32(7.0376836292e-2)
    p = p * m - np.float32(1.1514610310e-1)
    p = p * m + np.float32(1.1676998740e-1)
    p = p * m - np.float32(1.2420140846e-1)
    p = p * m + np.float32(1.4249322787e-1)
    p = p * m - np.float32(1.6668057665e-1)
    p = p * m + np.float32(2.0000714765e-1)
    p = p * m - np.float32(2.4999993993e-1)
    p = p * m + np.float32(3.3333331174e-1)
    y = p * m * z + e * np.float32(-2.12194440e-4) - np.float32(0.5) * z
    result = m + y + e * np.float32(0.693359375)
    # NaN passes through as x - x, not by a select: log_sum is logged in place, and LLVM makes a select
    # between a value and the one loaded from its destination a masked store (see _maximum)
    return result + (x - x)


# exp's constants, handed to the kernels as an argument (``_exp_constants``) rather than written in the
# code: a constant vector in AVX2 code is a broadcast from memory (after a 64-bit move of its address)
# inside the loop at each use, 17 of the exp loop's 41 instructions, since LLVM does not hoist them;
# AVX-512 folds them into the instructions. Values the kernel receives are splatted once, before the loop
# (AVX2 forward 4.1 -> 3.6 ms, one thread; native unchanged).
EXP_F32 = tuple(np.float32(c) for c in (
    1.44269504, ROUNDER_F32, 0.693359375, 2.12194440e-4,  # log2(e), the rounder, ln(2) = high - low
    8.289290592074394e-3, 4.189782217144966e-2, 1.6667652130126953e-1, 4.999915063381195e-1,
    9.999997019767761e-1, -87.0, 0.0))  # the polynomial's c5 .. c1; the lowest x whose exp is not 0; zero
EXP_F64 = (
    1.4426950408889634, ROUNDER_F64, 6.93145751953125e-1, 1.42860682030941723212e-6,
    1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1,  # the numerator's
    3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,  # the denominator's
    2.00000000000000000009e0, 1.0, 2.0, -708.0, 0.0)


def _exp_constants(dtype: np.dtype) -> tuple:
    return EXP_F32 if dtype == np.float32 else EXP_F64


@njit(inline="always", cache=True)
def _exp_f32(x, constants):
    """exp for x <= 0 (all softmax needs); NaN stays NaN and -inf gives 0. ``constants`` is EXP_F32.
    exp(x) = 2**n * exp(r), r = x - n ln2 in [-ln2/2, ln2/2], exp(r) ~ 1 + r * p(r), p of degree 4 (minimax)."""
    log2e, rounder, ln2_high, ln2_low, c5, c4, c3, c2, c1, lowest, zero = constants
    # no clamp: below -87, where n would leave the exponent's range, the result is 0 whatever e is; a NaN x
    # makes n, r, p and e NaN
    rounded = x * log2e + rounder
    n = rounded - rounder
    r = x - n * ln2_high + n * ln2_low
    p = c5
    p = p * r + c4
    p = p * r + c3
    p = p * r + c2
    p = p * r + c1
    scale = _pow2(rounded)
    e = (r * scale) * p + scale
    return zero if x <= lowest else e


@njit(inline="always", cache=True)
def _exp_f64(x, constants):
    """exp for x <= 0 (all softmax needs); NaN stays NaN and -inf gives 0. ``constants`` is EXP_F64."""
    log2e, rounder, ln2_high, ln2_low, p0, p1, p2, q0, q1, q2, q3, one, two, lowest, zero = constants
    rounded = x * log2e + rounder  # no clamp, as in _exp_f32
    n = rounded - rounder
    r = x - n * ln2_high - n * ln2_low
    rr = r * r
    px = r * ((p0 * rr + p1) * rr + p2)
    qx = ((q0 * rr + q1) * rr + q2) * rr + q3
    e = (one + two * px / (qx - px)) * _pow2(rounded)
    return zero if x <= lowest else e


def _exp(x, constants):
    """exp in x's own precision (float32 stays float32), vectorisable; constants: _exp_constants(x's dtype)."""


@overload(_exp)
def _exp_overload(x, constants):
    return (lambda x, constants: _exp_f32(x, constants)) if x == types.float32 else \
        (lambda x, constants: _exp_f64(x, constants))


def _log(x):
    """log of a positive normal x (NaN passes through): vectorisable in float32, libm's in float64."""


@overload(_log)
def _log_overload(x):
    return (lambda x: _log_f32(x)) if x == types.float32 else (lambda x: np.log(x))


@njit(inline="always", cache=True)
def _first_bad_target(target, classes, ignore_index, offset):
    """offset + the position in the run ``target`` of its first target outside [0, C) that is not
    ignore_index, or -1. The kernels run it on each block as they go: no separate pass over the targets."""
    any_bad = False
    for i in range(target.size):  # a reduction without an early exit, so LLVM vectorises it
        t = target[i]
        any_bad |= (t != ignore_index) & ((t < 0) | (t >= classes))
    if any_bad:
        for i in range(target.size):
            t = target[i]
            if t != ignore_index and (t < 0 or t >= classes):
                return offset + i
    return -1


@njit(inline="always", cache=True)
def _block_stats(x, b, p, width, peak, log_sum, exp_constants):
    """peak[q] = max over classes of x[b, :, p][:, q] and log_sum[q] = log sum_c exp(x - peak) for one
    block of pixels p (a slice of ``width`` pixels): max first, so exp never overflows; a NaN logit makes
    the maximum (and so the result) NaN. Rows are taken as 1-D slices x[b, c, p], indexed from 0, so
    LLVM vectorises."""
    first = x[b, 0, p]
    for q in range(width):  # a loop, not a slice copy: that compiles its error message
        peak[q] = first[q]
    for c in range(1, x.shape[1]):
        row = x[b, c, p]
        for q in range(width):
            peak[q] = _maximum(peak[q], row[q])
    log_sum[:] = 0
    for c in range(x.shape[1]):
        row = x[b, c, p]
        for q in range(width):
            log_sum[q] += _exp(row[q] - peak[q], exp_constants)
    for q in range(width):
        log_sum[q] = _log(log_sum[q])


@njit(inline="always", cache=True)
def _block_loss(x, b, p, width, target, weight, ignore_index, label_smoothing, peak, log_sum, loss):
    """loss of one block of pixels; target, peak, log_sum and loss are the block's (width,) slices.
    -log_softmax[c] = log_sum - (x[c] - peak), which is lse - x[c] without rounding lse."""
    classes = x.shape[1]
    # coefficients in x's dtype: a float64 factor would widen the float32 loops to half their width
    smooth, keep = x.dtype.type(label_smoothing / classes), x.dtype.type(1 - label_smoothing)
    loss[:] = 0
    if label_smoothing != 0:
        # the smoothing term -sum_c weight[c] * log_softmax[c]
        for c in range(classes):
            row = x[b, c, p]
            for q in range(width):
                loss[q] += weight[c] * (log_sum[q] - (row[q] - peak[q]))
        for q in range(width):
            loss[q] *= smooth
    for q in range(width):
        t = target[q]
        if t == ignore_index or t < 0 or t >= classes:  # bad targets were refused by the caller
            loss[q] = 0
        else:
            loss[q] += keep * weight[t] * (log_sum[q] - (x[b, t, p.start + q] - peak[q]))


@njit(inline="always", cache=True)
def _block_grad(x, b, p, width, target, weight, ignore_index, label_smoothing, peak, log_sum, g, gx, exp_constants):
    """gx[c] = scale * softmax[c] - g * eps/C * weight[c], then -g*(1-eps)*weight[t] at the target, with
    scale = g * ((1-eps) * weight[t] + eps/C * sum(weight)); ignored pixels get 0. Block as above."""
    classes = x.shape[1]
    smooth, keep = x.dtype.type(label_smoothing / classes), x.dtype.type(1 - label_smoothing)
    weight_sum = weight.sum()
    gain = np.empty_like(log_sum)  # g on valid pixels, 0 on ignored ones
    scale = np.empty_like(log_sum)
    for q in range(width):
        t = target[q]
        valid = t != ignore_index and 0 <= t < classes
        gain[q] = g[q] if valid else 0
        scale[q] = gain[q] * (keep * (weight[t] if valid else 0) + smooth * weight_sum)
    for c in range(classes):
        row, out, class_term = x[b, c, p], gx[b, c, p], smooth * weight[c]
        if label_smoothing == 0:  # no class term: one stream fewer in the hot loop
            for q in range(width):
                out[q] = scale[q] * _exp((row[q] - peak[q]) - log_sum[q], exp_constants)
        else:
            for q in range(width):
                out[q] = scale[q] * _exp((row[q] - peak[q]) - log_sum[q], exp_constants) - gain[q] * class_term
    for q in range(width):
        t = target[q]
        if gain[q] != 0:
            gx[b, t, p.start + q] -= gain[q] * keep * weight[t]


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _forward(first_task, last_task, x, target, weight, ignore_index, label_smoothing, loss, stats, first_bad,
             exp_constants):
    """loss and stats of the blocks of FORWARD_BLOCK pixels (b, block) = divmod(task, blocks), task in
    first_task .. last_task - 1."""
    _, classes, pixels = x.shape
    blocks = (pixels + FORWARD_BLOCK - 1) // FORWARD_BLOCK
    for task in range(first_task, last_task):
        b, block = divmod(task, blocks)
        p = slice(block * FORWARD_BLOCK, min(block * FORWARD_BLOCK + FORWARD_BLOCK, pixels))
        first_bad[task] = _first_bad_target(target[b, p], classes, ignore_index, b * pixels + p.start)
        if LITERAL_WIDTH and p.stop - p.start == FORWARD_BLOCK:
            _forward_block(x, b, p, FORWARD_BLOCK, target, weight, ignore_index, label_smoothing, loss, stats,
                           exp_constants)
        else:
            _forward_block(x, b, p, p.stop - p.start, target, weight, ignore_index, label_smoothing, loss, stats,
                           exp_constants)


@njit(inline="always", cache=True)
def _forward_block(x, b, p, width, target, weight, ignore_index, label_smoothing, loss, stats, exp_constants):
    peak, log_sum = stats[0, b, p], stats[1, b, p]
    _block_stats(x, b, p, width, peak, log_sum, exp_constants)
    _block_loss(x, b, p, width, target[b, p], weight, ignore_index, label_smoothing, peak, log_sum, loss[b, p])


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _backward(first_task, last_task, x, target, weight, ignore_index, label_smoothing, stats, g, gx, first_bad,
              exp_constants):
    """gx of the blocks of BACKWARD_BLOCK pixels (b, block) = divmod(task, blocks), task in first_task ..
    last_task - 1."""
    _, classes, pixels = x.shape
    blocks = (pixels + BACKWARD_BLOCK - 1) // BACKWARD_BLOCK
    for task in range(first_task, last_task):
        b, block = divmod(task, blocks)
        p = slice(block * BACKWARD_BLOCK, min(block * BACKWARD_BLOCK + BACKWARD_BLOCK, pixels))
        first_bad[task] = _first_bad_target(target[b, p], classes, ignore_index, b * pixels + p.start)
        if LITERAL_WIDTH and p.stop - p.start == BACKWARD_BLOCK:
            _block_grad(x, b, p, BACKWARD_BLOCK, target[b, p], weight, ignore_index, label_smoothing, stats[0, b, p],
                        stats[1, b, p], g[b, p], gx, exp_constants)
        else:
            _block_grad(x, b, p, p.stop - p.start, target[b, p], weight, ignore_index, label_smoothing,
                        stats[0, b, p], stats[1, b, p], g[b, p], gx, exp_constants)


def _raise_first_bad(first_bad: np.ndarray, target: np.ndarray) -> None:
    """IndexError naming the first bad target in row-major order, if any: first_bad holds each task's first
    (or -1), and tasks run in row-major order of their blocks."""
    bad = first_bad[first_bad >= 0]
    if bad.size:
        raise IndexError(f"Target {int(target.ravel()[bad.min()])} is out of bounds.")


def _without_classes(x: np.ndarray, target: np.ndarray, ignore_index: int) -> bool:
    """Whether x has no classes: then there is no logit to read and the kernels do not run, and every
    target but ignore_index is out of bounds (IndexError)."""
    if x.shape[1]:
        return False
    _raise_first_bad(np.flatnonzero(target != ignore_index), target)
    return True


def _task_slots(target: np.ndarray, block: int) -> np.ndarray:
    """One slot per (n, pixel block) task of a kernel, for the first bad target it meets."""
    n, pixels = target.shape
    return np.full(n * -(-pixels // block), -1, np.int64)


def softmax_cross_entropy_forward(x: np.ndarray, target: np.ndarray, weight: np.ndarray, ignore_index: int,
                                  label_smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    if _without_classes(x, target, ignore_index):  # the maximum and log-sum-exp of no logits: -inf
        return np.zeros(target.shape, x.dtype), np.full((2, *target.shape), -np.inf, x.dtype)
    loss = np.empty(target.shape, x.dtype)
    stats = np.empty((2, *target.shape), x.dtype)
    first_bad = _task_slots(target, FORWARD_BLOCK)
    run_tasks(_forward, first_bad.size, x, target, weight, int(ignore_index), x.dtype.type(label_smoothing), loss,
              stats, first_bad, _exp_constants(x.dtype))
    _raise_first_bad(first_bad, target)
    return loss, stats


def softmax_cross_entropy_backward(x: np.ndarray, target: np.ndarray, weight: np.ndarray, ignore_index: int,
                                   label_smoothing: float, stats: np.ndarray, g: np.ndarray) -> np.ndarray:
    for name, array, shape in (("stats", stats, (2, *target.shape)), ("g", g, target.shape)):
        if array.shape != shape:  # the loops index them by the target's pixels: never past their end
            raise ValueError(f"softmax_cross_entropy_backward: {name} has shape {array.shape}, expected {shape}")
    gx = np.empty_like(x)
    if _without_classes(x, target, ignore_index):
        return gx
    first_bad = _task_slots(target, BACKWARD_BLOCK)
    run_tasks(_backward, first_bad.size, x, target, weight, int(ignore_index), x.dtype.type(label_smoothing), stats,
              g, gx, first_bad, _exp_constants(x.dtype))
    _raise_first_bad(first_bad, target)
    return gx
