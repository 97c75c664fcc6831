"""Softmax cross-entropy per pixel with class weights, ignore_index and label smoothing.

Logits x (N, C, P), targets t (N, P). Over the classes c of each pixel, with eps = label_smoothing:

    log_sum    = log sum_c exp(x[c] - max)          (stable: every term <= 1, the largest 1)
    lp[c]      = (x[c] - max) - log_sum             (log-softmax; x[c] - lse, without rounding lse)
    softmax[c] = exp(lp[c])
    loss       = (1 - eps) * -weight[t] * lp[t]  +  eps / C * -sum_c weight[c] * lp[c]
    d loss / d x[c] = (1 - eps) * weight[t] * (softmax[c] - [c == t])
                      + eps / C * (softmax[c] * sum_c' weight[c'] - weight[c])

Pixels whose target equals ignore_index have zero loss and zero gradient, whatever that target is; any
other target must be a class in [0, C). Everything is computed in x's dtype.
"""

import numpy as np


def _valid_targets(target: np.ndarray, ignore_index: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(valid, safe_target): the mask of non-ignored pixels, and targets with ignored ones set to class 0.

    Raises IndexError on the first (row-major) non-ignored target outside [0, num_classes).
    """
    valid = target != ignore_index
    out_of_bounds = valid & ((target < 0) | (target >= num_classes))
    if out_of_bounds.any():
        raise IndexError(f"Target {target[out_of_bounds][0]} is out of bounds.")
    return valid, np.where(valid, target, 0)


def softmax_cross_entropy_forward(x: np.ndarray, target: np.ndarray, weight: np.ndarray, ignore_index: int,
                                  label_smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """(loss (N, P), stats (2, N, P)): the per-pixel loss, and (max, log_sum) kept for the backward."""
    num_classes, eps = x.shape[1], x.dtype.type(label_smoothing)  # eps in x's dtype: no promotion
    valid, t = _valid_targets(target, ignore_index, num_classes)
    largest = x.max(axis=1)
    shifted = x - largest[:, None]  # <= 0: exp cannot overflow, and the largest term is 1
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    lp = shifted - log_sum[:, None]
    nll = -weight[t] * np.take_along_axis(lp, t[:, None], axis=1)[:, 0]
    loss = (1 - eps) * nll
    if eps > 0:  # skipped at eps = 0 like PyTorch, so a -inf logit cannot give 0 * inf = NaN
        loss += eps / num_classes * -np.einsum("c,ncp->np", weight, lp)
    return np.where(valid, loss, 0), np.stack([largest, log_sum])


def softmax_cross_entropy_backward(x: np.ndarray, target: np.ndarray, weight: np.ndarray, ignore_index: int,
                                   label_smoothing: float, stats: np.ndarray, g: np.ndarray) -> np.ndarray:
    """gx (N, C, P): g (N, P), the gradient of each pixel's loss, times d loss / d x."""
    num_classes, eps = x.shape[1], x.dtype.type(label_smoothing)
    valid, t = _valid_targets(target, ignore_index, num_classes)
    softmax = np.exp((x - stats[0][:, None]) - stats[1][:, None])
    is_target = np.arange(num_classes)[:, None] == t[:, None, :]  # one-hot (N, C, P)
    dloss = (1 - eps) * weight[t][:, None] * (softmax - is_target)
    if eps > 0:
        dloss += eps / num_classes * (softmax * weight.sum() - weight[:, None])
    with np.errstate(invalid="ignore"):  # an infinite g (a 'mean' over zero weight) times 0 is NaN, as in PyTorch
        return np.where(valid, g, 0)[:, None] * dloss
