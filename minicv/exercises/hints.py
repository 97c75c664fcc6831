"""Classic mistakes, recognised from a failing call: each diagnosis names one and says how to fix it.

A diagnosis looks at one failing call of a kernel (its arguments, the spec's outputs and the
learner's, or the learner's exception) and returns its hint when the failure has that mistake's
signature, else None. The grader asks every failing call, so the mistake is named even when another
case failed first; a failure no diagnosis recognises gets the kernel's general hint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from minicv.functional.conv import conv_transpose_output_hw
from minicv.functional.pooling import pooled_size


@dataclass
class Failure:
    """What went wrong in one call: the learner's outputs (or error) beside the spec's."""

    kernel: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    expected: tuple[np.ndarray, ...]
    got: tuple[Any, ...] | None  # None when the learner's code raised
    part: int = 0  # which output was wrong
    wrong: np.ndarray | None = None  # mask of the wrong elements of that output, when shapes agree
    others_pass: bool = True  # some other call of the kernel passed (it raised in this case only)
    hint: str | None = None  # the hint when no classic mistake is recognised: None for the kernel's general one


Diagnosis = Callable[[Failure], "str | None"]


def flat_indices_in_window(f: Failure) -> str | None:
    if f.kernel != "max_pool2d_forward" or f.got is None or f.part != 1 or f.wrong is None:
        return None
    x, (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = f.args
    expected = f.expected[1]
    oh, ow = expected.shape[2:]
    h, w = np.divmod(expected, x.shape[3])
    i = (h - (np.arange(oh)[:, None] * sh - ph)) // dh
    j = (w - (np.arange(ow) * sw - pw)) // dw
    if np.array_equal(np.asarray(f.got[1]), i * kw + j):
        return ("your indices count inside the window (tap i*kW + j); they must be flat offsets h*W + w in the "
                "whole unpadded input plane, so that max_unpool2d can put each value back where it was: "
                "h = oh*sH - pH + i*dH, w = ow*sW - pW + j*dW")
    return None


def _ceil_mode_rows(f: Failure) -> tuple[bool, bool]:
    """Whether the last output row / column of a max pool is a ceil_mode window (beyond the floor size)."""
    x, kernel, stride, padding, dilation, out_hw = f.args
    return tuple(
        out > pooled_size(size, k, p, s, d, ceil_mode=False)
        for out, size, k, s, p, d in zip(out_hw, x.shape[2:], kernel, stride, padding, dilation, strict=True)
    )


def ceil_mode_last_window(f: Failure) -> str | None:
    if f.kernel != "max_pool2d_forward" or not any(_ceil_mode_rows(f)):
        return None
    out_hw = tuple(f.args[5])
    if f.got is None:
        recognised = f.others_pass  # it raised in the ceil_mode cases only
    else:  # the wrong shape: windows missing
        recognised = f.wrong is None and bool(f.got) and tuple(np.shape(f.got[0])[2:]) not in ((), out_hw)
    if not recognised:
        return None
    return (f"with ceil_mode the output has {out_hw[0]}x{out_hw[1]} windows: the last one starts inside the "
            "input but runs past the padded edge. Use out_hw as given (never recompute it with floor) and "
            "treat the taps beyond the edge as -inf (pad the bottom/right further, or skip those taps)")


def output_padding_ignored(f: Failure) -> str | None:
    if f.kernel != "conv2d_backward_input" or not f.got or f.wrong is not None:
        return None
    gy, w, x_shape, stride, padding, dilation, _ = f.args
    natural = conv_transpose_output_hw(gy.shape[2:], w.shape[2:], stride, padding, dilation, (0, 0))
    got_hw = tuple(np.shape(f.got[0])[2:])
    if got_hw == natural and natural != tuple(x_shape[2:]):
        return (f"the result must have x_shape {tuple(x_shape)}, but you sized it from gy ({got_hw[0]}x{got_hw[1]}): "
                "x_shape has rows/columns no window reads (conv_transpose2d's output_padding, or the rows a "
                "strided conv skipped); they exist and get 0")
    return None


def softmax_overflow(f: Failure) -> str | None:
    if not f.kernel.startswith("softmax_cross_entropy") or f.got is None or f.wrong is None:
        return None
    x = f.args[0]
    got, expected = np.asarray(f.got[f.part]), f.expected[f.part]
    if np.abs(x).max() > 80 and (~np.isfinite(got) & np.isfinite(expected)).any():
        return ("exp overflowed on large logits (np.exp(1000.0) is inf): subtract each pixel's largest logit "
                "before exp (log-sum-exp: log sum exp(x) = m + log sum exp(x - m) with m = max x)")
    return None


def ignored_pixel_counted(f: Failure) -> str | None:
    if not f.kernel.startswith("softmax_cross_entropy") or f.wrong is None or f.part != 0:
        return None
    target, ignore_index = f.args[1], f.args[3]
    ignored = target == ignore_index
    wrong = f.wrong if f.wrong.shape == ignored.shape else f.wrong.any(axis=1)  # the backward's (N, C, P)
    if (wrong & ignored).any():
        return (f"pixels whose target is ignore_index ({ignore_index}) must get loss 0 and gradient 0: they do "
                "not count (the engine's mean divides by the summed weight of the other pixels only)")
    return None


def overlapping_windows_not_summed(f: Failure) -> str | None:
    if f.kernel != "unpool_scatter" or f.wrong is None:
        return None
    values, indices = f.args[0], f.args[1]
    pool = f.args[3] if len(f.args) > 3 else f.kwargs.get("pool")
    if pool is None:
        return None
    n, c = values.shape[:2]
    plane = int(np.prod(f.expected[0].shape[2:]))
    offsets = (np.arange(n * c).reshape(n, c, 1, 1) * plane + indices).ravel()
    repeated = np.bincount(offsets, minlength=n * c * plane) > 1
    if f.wrong.ravel()[~repeated].any() or not f.wrong.any():
        return None
    return ("max pool's backward: overlapping windows can pick the same input element, and each sends it its "
            "gradient: ADD the values at a repeated index (np.add.at), do not overwrite them")


def first_maximum_on_ties(f: Failure) -> str | None:
    if f.kernel != "max_pool2d_forward" or f.got is None or f.part != 1 or f.wrong is None:
        return None
    x = f.args[0]
    n, c, oh, ow = np.argwhere(f.wrong)[0]
    got = int(np.asarray(f.got[1])[n, c, oh, ow])
    if 0 <= got < x.shape[2] * x.shape[3] and x[n, c].flat[got] == f.expected[0][n, c, oh, ow]:
        return ("a tie: this window holds its maximum more than once and the FIRST in row-major scan order wins; "
                "replace the best only when a tap is strictly greater (>), not when it is equal")
    return None


CLASSIC_MISTAKES: tuple[Diagnosis, ...] = (
    flat_indices_in_window,
    ceil_mode_last_window,
    output_padding_ignored,
    softmax_overflow,
    ignored_pixel_counted,
    overlapping_windows_not_summed,
    first_maximum_on_ties,
)

# The CUDA track's: the kernel's own calls pass on cudasim in the forward thread order, fail in reverse.
MISSING_BARRIER = ("passes when threads run in order, fails in reverse: a missing __syncthreads() between writing "
                   "and reading shared memory?")

GENERAL_HINTS = {
    "softmax_cross_entropy_forward": "compute log_softmax = (x - max) - log(sum exp(x - max)) over axis 1 (the "
    "classes), then pick the target class's entry and scale it by its weight",
    "softmax_cross_entropy_backward": "the gradient is g * weight[t] * (softmax - onehot(t)), plus the label "
    "smoothing term; recompute softmax from stats",
    "max_pool2d_forward": "window (oh, ow) starts at row oh*sH - pH, column ow*sW - pW; its taps are dH/dW apart; "
    "taps outside the input are -inf",
    "unpool_scatter": "out[n, c].flat[indices[n, c, i, j]] = values[n, c, i, j]: each (n, c) plane has its own indices",
    "unpool_gather": "out[n, c, i, j] = g[n, c].flat[indices[n, c, i, j]]: each (n, c) plane has its own indices",
    "upsample_nearest_forward": "index with src_h as rows and src_w as columns (outer indexing)",
    "upsample_nearest_backward": "several outputs copy one input pixel: add their gradients (np.add.at), rows "
    "then columns",
    "conv2d_forward": "cross-correlation (no kernel flip), zero padding on both sides, taps dilation apart, "
    "windows stride apart; group g's outputs read only group g's input channels",
    "conv2d_backward_input": "every gy[n, co, oh, ow] * w[co, ci, i, j] goes to padded row oh*sH + i*dH, column "
    "ow*sW + j*dW; crop the padding at the end",
    "conv2d_backward_weight": "gw[co, ci, i, j] sums gy[n, co, oh, ow] * x_pad[n, ci, oh*sH + i*dH, ow*sW + j*dW] "
    "over n, oh and ow",
    "batch_norm_forward": "per channel (axes 0 and 2): in training the batch's mean and biased variance (two passes, "
    "in float64), otherwise the given ones; y = (x - mean) / sqrt(var + eps) * weight + bias, then "
    "np.maximum(y, 0) when relu is true",
    "batch_norm_backward": "with relu_output given, first gy = np.where(relu_output > 0, gy, 0); then gbias = sum "
    "gy, gweight = sum gy * x_hat over axes 0 and 2; in training gx also loses the mean of gy and x_hat times the "
    "mean of gy * x_hat",
}


def hint_for(failures: list[Failure]) -> tuple[Failure, str] | None:
    """The first classic mistake any failure shows, and that failure; None when none is recognised."""
    for diagnose in CLASSIC_MISTAKES:
        for failure in failures:
            hint = diagnose(failure)
            if hint:
                return failure, hint
    return None
