"""``minicv check``: is every kernel right, on every device present?

For each op of the lecture, each device and each dtype it runs the op forward and backward on a
tie-free random case and compares the output and the input gradients with the ``numpy`` device (the
specification), gradient-checks it in float64 (central differences), and compares the specification
with PyTorch when PyTorch is installed. It prints one table (op x device x dtype: forward, backward,
gradcheck, largest error), each row as soon as it is computed (on a cold numba cache the first rows
wait for their kernels to compile), and returns non-zero when anything fails, naming the op. A user
who changes a kernel runs it to see what broke.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

import minicv.functional as F
from minicv.devices import available_devices
from minicv.gradcheck import GradcheckError, gradcheck
from minicv.tensor import Tensor

TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


@dataclass(frozen=True)
class CheckCase:
    """An op applied to fixed differentiable inputs (and fixed non-differentiable ones)."""

    make: Callable[[np.random.Generator], tuple[list[np.ndarray], dict]]
    run: Callable[..., Tensor]


def _distinct(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Random values with no ties (a permutation), so max ops are differentiable everywhere."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape) - 0.5) * 4


def _pool_then_unpool(x: Tensor) -> Tensor:
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    return F.max_unpool2d(y * 1.5, idx, 2, output_size=x.shape[-2:])


def _labels(rng: np.random.Generator) -> np.ndarray:
    labels = rng.integers(0, 5, (2, 5, 6))
    labels[0, 0, :3] = -100  # a few ignored pixels
    return labels


CASES: dict[str, CheckCase] = {
    "conv2d": CheckCase(
        lambda rng: ([rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3))], {}),
        lambda x, w: F.conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
    ),
    "conv_transpose2d": CheckCase(
        lambda rng: ([rng.standard_normal((2, 4, 4, 5)), rng.standard_normal((4, 3, 4, 4))], {}),
        lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
    ),
    "max_pool2d": CheckCase(
        lambda rng: ([_distinct(rng, 2, 3, 9, 8)], {}),
        lambda x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
    ),
    "max_unpool2d": CheckCase(lambda rng: ([_distinct(rng, 2, 3, 8, 6)], {}), _pool_then_unpool),
    "interpolate": CheckCase(
        lambda rng: ([rng.standard_normal((2, 3, 5, 4))], {}),
        lambda x: F.interpolate(x, size=(11, 8), mode="nearest"),
    ),
    "cross_entropy": CheckCase(
        lambda rng: ([rng.standard_normal((2, 5, 5, 6))], {"target": _labels(rng)}),
        lambda x, target: F.cross_entropy(x, target, label_smoothing=0.1),
    ),
    "batch_norm": CheckCase(
        lambda rng: ([rng.standard_normal((3, 4, 5, 6)) * 2 + 1, rng.standard_normal(4), rng.standard_normal(4)], {}),
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
    ),
}


def _run(case: CheckCase, arrays: list[np.ndarray], extra: dict, device: str, dtype: str):
    """Output and input gradients (NumPy) of the op on ``device`` in ``dtype``."""
    inputs = [Tensor(a.astype(dtype), requires_grad=True, device=device) for a in arrays]
    fixed = {k: Tensor(v, device=device) for k, v in extra.items()}
    out = case.run(*inputs, **fixed)
    weights = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    (out * Tensor(weights, device=device)).sum().backward()
    grads = [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(inputs, arrays)]
    return out.detach().numpy(), grads  # None: the input did not reach the output, a zero gradient


def _error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest error relative to the reference's scale."""
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b))))) if a.size else 0.0


def check_op(name: str, device: str, dtype: str) -> dict:
    """One row of the table: forward/backward errors against the spec, gradcheck, and PyTorch."""
    case = CASES[name]
    arrays, extra = case.make(np.random.default_rng(0))
    row: dict[str, Any] = {"op": name, "device": device, "dtype": dtype}
    try:
        out, grads = _run(case, arrays, extra, device, dtype)
        ref_out, ref_grads = _run(case, arrays, extra, "numpy", dtype)
        row["forward"] = _error(out, ref_out)
        row["backward"] = max(_error(g, r) for g, r in zip(grads, ref_grads))
        row["ok"] = row["forward"] <= TOLERANCE[dtype] and row["backward"] <= TOLERANCE[dtype]
        if dtype == "float64":
            inputs = [Tensor(a, requires_grad=True, device=device) for a in arrays]
            fixed = {k: Tensor(v, device=device) for k, v in extra.items()}
            row["gradcheck"] = gradcheck(lambda *xs: case.run(*xs, **fixed), inputs)
    except GradcheckError as err:
        row.update(ok=False, gradcheck=False, error=str(err).splitlines()[0])
    except Exception as err:  # a broken kernel may fail in any way: report it, keep checking the rest
        row.update(ok=False, error=f"{type(err).__name__}: {err}".splitlines()[0])
    return row


def check_torch(name: str) -> dict:
    """The specification against PyTorch (float64), when PyTorch is installed."""
    import torch
    import torch.nn.functional as TF

    case = CASES[name]
    arrays, extra = case.make(np.random.default_rng(0))
    out, grads = _run(case, arrays, extra, "numpy", "float64")
    inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    fixed = {k: torch.tensor(v) for k, v in extra.items()}

    def pool_then_unpool(x: torch.Tensor) -> torch.Tensor:
        y, idx = TF.max_pool2d(x, 2, return_indices=True)
        return TF.max_unpool2d(y * 1.5, idx, (2, 2), output_size=x.shape[-2:])

    torch_cases: dict[str, Callable[..., torch.Tensor]] = {
        "conv2d": lambda x, w: TF.conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
        "conv_transpose2d": lambda x, w: TF.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
        "max_pool2d": lambda x: TF.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
        "max_unpool2d": pool_then_unpool,
        "interpolate": lambda x: TF.interpolate(x, size=(11, 8), mode="nearest"),
        "cross_entropy": lambda x, target: TF.cross_entropy(x, target, label_smoothing=0.1),
        "batch_norm": lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
    }
    t_out = torch_cases[name](*inputs, **fixed)
    weights = np.random.default_rng(1).standard_normal(t_out.shape)
    (t_out * torch.tensor(weights)).sum().backward()
    forward = _error(out, t_out.detach().numpy())
    backward = max(_error(g, t.grad.numpy() if t.grad is not None else np.zeros_like(g)) for g, t in zip(grads, inputs))
    return {
        "op": name,
        "device": "torch",
        "dtype": "float64",
        "forward": forward,
        "backward": backward,
        "ok": forward <= 1e-10 and backward <= 1e-10,
    }


def check_rows(ops: list[str], devices: list[str], dtypes: list[str], torch: bool) -> Iterator[dict]:
    """The rows of the table, each as soon as it is computed; then the PyTorch rows when ``torch``."""
    for o in ops:
        for d in devices:
            for t in dtypes:
                yield check_op(o, d, t)
    if torch:
        for o in ops:
            yield check_torch(o)


def _format_row(r: dict) -> str:
    grad = {True: "pass", False: "FAIL", None: "-"}[r.get("gradcheck")]
    fwd, bwd = (f"{r[k]:.1e}" if k in r else "-" for k in ("forward", "backward"))
    verdict = "ok" if r["ok"] else "FAIL " + r.get("error", "error above tolerance")
    return f"{r['op']:<18}{r['device']:<9}{r['dtype']:<9}{fwd:>10}{bwd:>10}{grad:>11}  {verdict}"


def run_check(device: str | None = None, op: str | None = None, dtype: str | None = None) -> int:
    """Print the table, a row at a time; return 0 when every row passed, 1 otherwise."""
    if op is not None and op not in CASES:
        raise SystemExit(f"minicv check: unknown op {op!r}; expected one of {', '.join(CASES)}")
    devices = [device] if device else available_devices()
    ops = [op] if op else list(CASES)
    dtypes = [dtype] if dtype else ["float32", "float64"]
    torch = importlib.util.find_spec("torch") is not None
    if not torch:
        print("(PyTorch is not installed: the specification is not compared with it)")
    print(f"{'op':<18}{'device':<9}{'dtype':<9}{'forward':>10}{'backward':>10}{'gradcheck':>11}  result", flush=True)
    rows = []
    for r in check_rows(ops, devices, dtypes, torch):
        rows.append(r)
        print(_format_row(r), flush=True)  # flushed: a pipe or a log file sees each row as it finishes
    failed = sorted({r["op"] for r in rows if not r["ok"]})
    if failed:
        print(f"minicv check: FAILED: {', '.join(failed)}")
        return 1
    print(f"minicv check: all {len(rows)} checks passed")
    return 0
