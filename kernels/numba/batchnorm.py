"""Batch normalisation on the CPU: one channel per task (parallel over channels), forward and backward.

A channel's values x[:, c, :] are N rows of P contiguous values. The forward makes three passes over
them: the sum (for the mean), the sum of squared deviations from that mean (the variance: two passes, as
in the spec, never E[x^2] - E[x]^2), then y. The backward makes two: the sums of gy and gy * (x - mean),
then gx. Only the first pass reads x from memory; a channel of a typical layer (8 x 64 x 64 float32 is
128 KiB) is still in L2 for the next.

The sums are accumulated in float64 (x converted on the fly) in functions compiled with
``fastmath={"reassoc"}`` (only they: the elementwise passes keep the spec's exact arithmetic): LLVM may
then split a sum into vector lanes, which it must not do for a strict left-to-right sum. The order of
the additions is fixed by the compiled code, not by the thread count: a result does not change from run
to run. The elementwise passes run in x's dtype, with per-channel coefficients computed in float64 and
rounded once, and x centred on the rounded mean, then on ``low``, what rounding dropped (the spec's
arithmetic, and why).

The fused ReLU costs no pass of its own: the forward's y pass clamps, and the backward's two passes read
the saved output beside gy and drop gy where it is not positive. A flag (and, without a ReLU, gy in
relu_output's place, never read) rather than None keeps one compile of each function: a None would
compile a second specialisation of each.
"""

import numpy as np
from numba import njit

from .tasks import run_tasks


@njit(fastmath={"reassoc"}, cache=True)
def _sum(x, ch):
    """sum of x[:, ch, :] in float64."""
    total = 0.0
    for b in range(x.shape[0]):
        row = x[b, ch]  # contiguous (C layout) for a C-contiguous x: LLVM vectorises its loop
        for q in range(row.size):
            total += np.float64(row[q])
    return total


@njit(fastmath={"reassoc"}, cache=True)
def _sum_squared_deviations(x, ch, mean):
    """sum of (x[:, ch, :] - mean)^2 in float64, mean a float64."""
    total = 0.0
    for b in range(x.shape[0]):
        row = x[b, ch]
        for q in range(row.size):
            d = np.float64(row[q]) - mean
            total += d * d
    return total


@njit(fastmath={"reassoc"}, cache=True)
def _sums_of_gradient(gy, x, ch, mean, relu, relu_output):
    """(sum gy, sum gy * (x - mean), sum (x - mean)) over channel ch in float64, mean in x's dtype; with
    relu, gy counts only where relu_output > 0."""
    total, weighted, centred = 0.0, 0.0, 0.0
    for b in range(x.shape[0]):
        g, row, out = gy[b, ch], x[b, ch], relu_output[b, ch]
        for q in range(row.size):
            d = np.float64(row[q]) - np.float64(mean)
            gq = np.float64(g[q]) if not relu or out[q] > 0 else 0.0
            total += gq
            weighted += gq * d
            centred += d
    return total, weighted, centred


@njit(cache=True, error_model="numpy")
def _forward(first_channel, last_channel, x, mean, var, weight, bias, eps, training, relu, y):
    """y = (x - mean) * (weight * inv_std) + bias, then max(y, 0) with relu, for the channels first_channel ..
    last_channel - 1; in training, first mean and var of the batch into mean and var."""
    n, _, p = x.shape
    count = n * p
    for ch in range(first_channel, last_channel):
        low = x.dtype.type(0)  # the given statistics are exact: nothing was dropped
        if training:
            batch_mean = _sum(x, ch) / count
            mean[ch] = batch_mean
            var[ch] = _sum_squared_deviations(x, ch, batch_mean) / count
            low = x.dtype.type(batch_mean - np.float64(mean[ch]))
        scale = x.dtype.type(weight[ch] / np.sqrt(np.float64(var[ch]) + eps))
        shift, offset, zero = bias[ch], mean[ch], x.dtype.type(0)
        for b in range(n):
            row, out = x[b, ch], y[b, ch]
            for q in range(p):
                v = ((row[q] - offset) - low) * scale + shift
                out[q] = zero if relu and v < 0 else v  # v < 0, not max: a NaN stays NaN (np.maximum's)


@njit(cache=True, error_model="numpy")
def _backward(first_channel, last_channel, gy, x, mean, var, weight, eps, training, relu, relu_output, gx, gweight,
              gbias):
    """gx, gweight and gbias of the channels first_channel .. last_channel - 1."""
    n, _, p = x.shape
    count = n * p
    for ch in range(first_channel, last_channel):
        inv_std = 1.0 / np.sqrt(np.float64(var[ch]) + eps)
        total, weighted, centred = _sums_of_gradient(gy, x, ch, mean[ch], relu, relu_output)
        low = centred / count if training else 0.0  # what the rounded batch mean dropped
        weighted -= low * total  # sum gy * (x - batch mean)
        gbias[ch] = total
        gweight[ch] = weighted * inv_std
        scale = x.dtype.type(weight[ch] * inv_std)
        # training: gx = scale * (gy - sum(gy) / M - (x - mean) * inv_std * gweight / M); eval: scale * gy
        mean_gy = x.dtype.type(total / count if training else 0.0)
        projection = x.dtype.type(inv_std * inv_std * weighted / count if training else 0.0)
        offset, low_x, zero = mean[ch], x.dtype.type(low), x.dtype.type(0)
        for b in range(n):
            g, row, out, y = gy[b, ch], x[b, ch], gx[b, ch], relu_output[b, ch]
            for q in range(p):
                gq = g[q] if not relu or y[q] > 0 else zero
                out[q] = scale * (gq - mean_gy - ((row[q] - offset) - low_x) * projection)


def _check_channels(x: np.ndarray, **per_channel: np.ndarray) -> None:
    """The loops index these by channel: each must hold x.shape[1] values."""
    for name, a in per_channel.items():
        if a.shape != x.shape[1:2]:
            raise ValueError(f"batch norm kernels: {name} has shape {a.shape}, expected {x.shape[1:2]}")


def batch_norm_forward(x: np.ndarray, mean: np.ndarray | None, var: np.ndarray | None, weight: np.ndarray,
                       bias: np.ndarray, eps: float, training: bool,
                       relu: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if training:
        mean, var = np.empty(x.shape[1], x.dtype), np.empty(x.shape[1], x.dtype)
    assert mean is not None and var is not None, "batch norm: mean and var are given outside training"
    _check_channels(x, mean=mean, var=var, weight=weight, bias=bias)
    y = np.empty_like(x)
    run_tasks(_forward, x.shape[1], x, mean, var, weight, bias, float(eps), bool(training), bool(relu), y)
    return y, mean, var


def batch_norm_backward(gy: np.ndarray, x: np.ndarray, mean: np.ndarray, var: np.ndarray, weight: np.ndarray,
                        eps: float, training: bool,
                        relu_output: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if gy.shape != x.shape:
        raise ValueError(f"batch_norm_backward: gy has shape {gy.shape}, expected {x.shape}")
    if relu_output is not None and relu_output.shape != x.shape:
        raise ValueError(f"batch_norm_backward: relu_output has shape {relu_output.shape}, expected {x.shape}")
    _check_channels(x, mean=mean, var=var, weight=weight)
    gx = np.empty_like(x)
    gweight, gbias = np.empty(x.shape[1], x.dtype), np.empty(x.shape[1], x.dtype)
    relu = relu_output is not None
    run_tasks(_backward, x.shape[1], gy, x, mean, var, weight, float(eps), bool(training), relu,
              relu_output if relu else gy, gx, gweight, gbias)
    return gx, gweight, gbias
