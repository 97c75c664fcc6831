"""PyTorch's float64 answer as the reference for a result of any dtype, with tolerances that follow the
conditioning of the input.

Two float32 computations of an ill-conditioned result (the variance of nearly equal values) can disagree
in the fourth digit while both are as right as float32 allows, so a float32 result is compared with the
float64 answer on the same inputs (float32 inputs are exact in float64), never with PyTorch's float32
one. How much rounding the answer may carry is measured, not guessed: the float64 reference runs again
on inputs moved by their own rounding error (each element by a random fraction of half an ulp of the
tested dtype), and each output element's largest move, times SAFETY, joins the dtype's rtol and atol. A
well-conditioned result barely moves and keeps the usual tolerances; a variance of nearly equal values
moves far and gets the room that rounding its inputs alone would need. SAFETY covers the rounding inside
the computation, which a backward-stable algorithm turns into input perturbations a few ulps large.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from tests.conftest import tolerances

SAFETY = 32
TRIALS = 8  # the moves are random: the largest of 8 is near the worst case for every element


def _run(fn: Callable, arrays: Sequence, grad: Sequence[bool], upstream: np.ndarray | None) -> list[np.ndarray]:
    """fn's outputs, then the gradient of each array marked in ``grad`` for ``upstream`` on output 0."""
    tensors = [torch.from_numpy(np.array(a)).requires_grad_(g) if isinstance(a, np.ndarray) else a
               for a, g in zip(arrays, grad, strict=True)]
    y = fn(*tensors)
    outputs = list(y) if isinstance(y, tuple) else [y]
    results = [o.detach().numpy() for o in outputs]
    if upstream is not None:
        outputs[0].backward(torch.from_numpy(np.asarray(upstream)))
        results += [np.zeros(t.shape) if t.grad is None else t.grad.numpy()
                    for t, g in zip(tensors, grad, strict=True) if g]
    return results


def float64_reference(fn: Callable, arrays: Sequence, dtype, grad: Sequence[bool] | None = None,
                      upstream: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(expected, allowance) for each output of ``fn`` (a PyTorch function) and, when ``upstream`` is
    given, for the gradient of each array marked in ``grad`` (default: every float array).

    Float arrays run in float64; other arguments pass unchanged. ``allowance`` is SAFETY times how far
    the element moves when the float inputs move by rounding errors of ``dtype``."""
    is_float = [isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays]
    grad = is_float if grad is None else grad
    as64 = [a.astype(np.float64) if f else a for a, f in zip(arrays, is_float, strict=True)]
    g64 = None if upstream is None else upstream.astype(np.float64)
    expected = _run(fn, as64, grad, g64)
    spread = [np.zeros(e.shape) for e in expected]
    half_ulp = np.finfo(dtype).eps / 2
    rng = np.random.default_rng(0)

    def move(a: np.ndarray) -> np.ndarray:
        return np.asarray(a * (1 + half_ulp * rng.uniform(-1, 1, a.shape)))

    for _ in range(TRIALS):
        moved = [move(a) if f else a for a, f in zip(as64, is_float, strict=True)]
        for s, e, m in zip(spread, expected, _run(fn, moved, grad, None if g64 is None else move(g64)), strict=True):
            with np.errstate(invalid="ignore"):  # inf - inf: an infinite element has no spread
                move_size = np.abs(m - e)
            np.fmax(s, np.where(np.isfinite(move_size), move_size, 0), out=s)
    return [(e, SAFETY * s) for e, s in zip(expected, spread, strict=True)]


def assert_close(actual: np.ndarray, expected: np.ndarray | torch.Tensor, dtype, what: str = "",
                 allowance: np.ndarray | float = 0.0) -> None:
    """|actual - expected| <= rtol |expected| + atol + allowance elementwise (rtol, atol: the dtype's);
    NaN only where expected is NaN, infinities equal. The message names the first element out of bounds."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = tolerances(dtype)
    with np.errstate(invalid="ignore"):
        bound = tol["rtol"] * np.abs(expected) + tol["atol"] + allowance
        ok = (np.abs(actual - expected) <= bound) | (np.isnan(actual) & np.isnan(expected))
        ok |= np.isinf(expected) & (actual == expected)
    if not ok.all():
        i = tuple(int(k) for k in np.argwhere(~ok)[0])
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.size} elements out of bounds; first at {i}: "
            f"expected {expected[i]!r} (float64), got {actual[i]!r}, allowed difference {bound[i]:.3g}"
        )
