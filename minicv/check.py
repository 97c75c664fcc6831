"""``minicv check``: is every kernel right, on every device present?

For each op of the registry (minicv/ops.py), each device and each dtype it runs the op forward and
backward on the op's check case (tie-free, random) and compares the output and the input gradients
with the ``numpy`` device (the specification), gradient-checks it in float64 (central differences),
and compares the specification with PyTorch when PyTorch is installed (for the ops PyTorch has). It
prints one table (op x device x dtype: forward, backward, gradcheck, largest error), each row as soon
as it is computed (on a cold numba cache the first rows wait for their kernels to compile), and
returns non-zero when anything fails, naming the op. A user who changes a kernel runs it to see what
broke.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np

import minicv.functional as F
from minicv.devices import available_devices, canonical_name
from minicv.gradcheck import GradcheckError, gradcheck
from minicv.ops import OPS, Case
from minicv.precompile import check_ahead
from minicv.tensor import Tensor

TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


def _run(case: Case, arrays: list[np.ndarray], extra: dict, device: str, dtype: str):
    """Output and input gradients (NumPy) of the op on ``device`` in ``dtype``."""
    inputs = [Tensor(a.astype(dtype), requires_grad=True, device=device) for a in arrays]
    fixed = {k: Tensor(v, device=device) for k, v in extra.items()}
    out = case.call(F, *inputs, **fixed)
    weights = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    (out * Tensor(weights, device=device)).sum().backward()
    grads = [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(inputs, arrays)]
    return out.detach().numpy(), grads  # None: the input did not reach the output, a zero gradient


def _error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest error relative to the reference's scale."""
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b))))) if a.size else 0.0


def check_op(name: str, device: str, dtype: str) -> dict:
    """One row of the table: forward/backward errors against the spec, gradcheck, and PyTorch."""
    case = OPS[name].check
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
            row["gradcheck"] = gradcheck(lambda *xs: case.call(F, *xs, **fixed), inputs)
    except GradcheckError as err:
        row.update(ok=False, gradcheck=False, error=str(err).splitlines()[0])
    except Exception as err:  # a broken kernel may fail in any way: report it, keep checking the rest
        row.update(ok=False, error=f"{type(err).__name__}: {err}".splitlines()[0])
    return row


def check_torch(name: str) -> dict:
    """The specification against PyTorch (float64), when PyTorch is installed."""
    import torch
    import torch.nn.functional as TF

    case = OPS[name].check
    arrays, extra = case.make(np.random.default_rng(0))
    out, grads = _run(case, arrays, extra, "numpy", "float64")
    inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    fixed = {k: torch.tensor(v) for k, v in extra.items()}
    t_out = case.call(TF, *inputs, **fixed)
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
            if OPS[o].check.torch:
                yield check_torch(o)


def _format_row(r: dict) -> str:
    grad = {True: "pass", False: "FAIL", None: "-"}[r.get("gradcheck")]
    fwd, bwd = (f"{r[k]:.1e}" if k in r else "-" for k in ("forward", "backward"))
    verdict = "ok" if r["ok"] else "FAIL " + r.get("error", "error above tolerance")
    return f"{r['op']:<18}{r['device']:<9}{r['dtype']:<9}{fwd:>10}{bwd:>10}{grad:>11}  {verdict}"


def run_check(device: str | None = None, op: str | None = None, dtype: str | None = None) -> int:
    """Print the table, a row at a time; return 0 when every row passed, 1 otherwise."""
    if op is not None and op not in OPS:
        raise SystemExit(f"minicv check: unknown op {op!r}; expected one of {', '.join(OPS)}")
    devices = [device] if device else available_devices()
    ops = [op] if op else list(OPS)
    dtypes = [dtype] if dtype else ["float32", "float64"]
    if "numba" in map(canonical_name, devices):
        check_ahead(ops, dtypes)  # a cold numba cache compiles in two processes
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
