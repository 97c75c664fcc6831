"""Batch normalisation over the channel axis, training and eval, forward and backward.

x (N, C, P): channel c normalises its M = N * P values x[:, c, :]. With the statistics (mean, var) of
the channel, the batch's own in training (var biased: divided by M) and the running ones in eval:

    inv_std = 1 / sqrt(var + eps)
    x_hat   = (x - mean) * inv_std
    y       = x_hat * weight + bias

    gbias   = sum gy                  gweight = sum gy * x_hat       (over the M values of the channel)
    gx      = weight * inv_std * gy                                                   (eval)
    gx      = weight * inv_std * (gy - gbias / M - x_hat * gweight / M)               (training)

In training the mean and the variance depend on x as well: the two subtracted terms are their share of
the gradient (gx is gy, minus its projection onto the constants and onto x_hat).

Fused ReLU (batch_norm_relu): with relu, y = max(y, 0); the backward then takes relu_output, that y,
and zeroes gy wherever it is not positive (NaN included) before everything above.

Precision: the statistics and the two sums of the backward are accumulated in float64 whatever x's
dtype, and the variance takes two passes (the mean first, then the mean of (x - mean)^2): the one-pass
E[x^2] - E[x]^2 cancels catastrophically for nearly equal values, and float32 running sums of a million
values lose digits. The per-channel results are rounded to x's dtype once; the elementwise outputs are
computed in x's dtype from the rounded per-channel coefficients, centred in two steps: x - mean, exact
for the nearly equal values where it matters (Sterbenz), then minus ``low``, the part of the batch mean
that rounding it to x's dtype dropped. Centring on the rounded mean alone would shift every x_hat of
two values that agree to 4 digits by 1e-4 (PyTorch's float32 CPU kernel does). In training the backward
finds ``low`` again from x: the mean of x - mean, summed in float64 with its other sums.
"""

import numpy as np


def _per_channel(a: np.ndarray) -> np.ndarray:
    """A (C,) array of per-channel values as (1, C, 1), to broadcast over (N, C, P)."""
    return a[None, :, None]


def _inv_std(var: np.ndarray, eps: float) -> np.ndarray:
    return 1 / np.sqrt(var.astype(np.float64) + eps)


def batch_norm_forward(x: np.ndarray, mean: np.ndarray | None, var: np.ndarray | None, weight: np.ndarray,
                       bias: np.ndarray, eps: float, training: bool,
                       relu: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, mean, var): the normalised x (through a ReLU when relu is true), and the statistics it was
    normalised by (the batch's in training, where the given mean and var are not read, the given ones
    otherwise)."""
    low = np.zeros(x.shape[1], x.dtype)  # the given statistics are exact: nothing was dropped
    if training:
        mean64 = x.mean(axis=(0, 2), dtype=np.float64)
        var64 = np.square(x - _per_channel(mean64)).mean(axis=(0, 2))  # x - mean in float64: the 2nd pass
        mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
        low = (mean64 - mean).astype(x.dtype)
    assert mean is not None and var is not None, "batch norm: mean and var are given outside training"
    scale = (weight * _inv_std(var, eps)).astype(x.dtype)
    y = ((x - _per_channel(mean)) - _per_channel(low)) * _per_channel(scale) + _per_channel(bias)
    return (np.maximum(y, 0) if relu else y), mean, var


def batch_norm_backward(gy: np.ndarray, x: np.ndarray, mean: np.ndarray, var: np.ndarray, weight: np.ndarray,
                        eps: float, training: bool,
                        relu_output: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gx, gweight, gbias): the gradients of sum(gy * y) for the forward's (mean, var); with relu_output
    (the y of a relu forward), of sum(gy * relu_output)."""
    if relu_output is not None:
        gy = np.where(relu_output > 0, gy, 0)  # ReLU's backward; a where, so a NaN gy there is dropped too
    inv_std = _inv_std(var, eps)
    centered = x - _per_channel(mean).astype(np.float64)  # from the rounded mean: exact in float64
    low = centered.mean(axis=(0, 2)) if training else np.zeros(x.shape[1])  # what the rounded mean dropped
    gbias = gy.sum(axis=(0, 2), dtype=np.float64)
    gweight = ((gy * centered).sum(axis=(0, 2)) - low * gbias) * inv_std  # sum gy * (x - batch mean)
    scale = (weight * inv_std).astype(x.dtype)
    if training:
        count = x.shape[0] * x.shape[2]
        mean_gy, projection = (gbias / count).astype(x.dtype), (inv_std * gweight / count).astype(x.dtype)
        # x_hat * gweight / M = (x - mean) * inv_std * gweight / M, x - mean centred as in the forward
        centered_x = (x - _per_channel(mean)) - _per_channel(low.astype(x.dtype))
        gx = _per_channel(scale) * (gy - _per_channel(mean_gy) - centered_x * _per_channel(projection))
    else:
        gx = gy * _per_channel(scale)
    return gx, gweight.astype(x.dtype), gbias.astype(x.dtype)
