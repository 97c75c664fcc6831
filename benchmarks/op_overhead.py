"""``python -m benchmarks.op_overhead``: what the op path adds to one small conv call on the numba device.

Times, in one process and alternating, single-threaded CPU time (run with NUMBA_NUM_THREADS=1), the
median over rounds of the best of a few calls: the kernel alone (``conv2d_forward`` of the kernel
table), the op without autograd (``F.conv2d`` under ``no_grad``), the op recording the graph (inputs
that require grad), and forward + backward through the op. The difference between the op and the kernel
is the op path's cost per call (argument checks, Tensor wrapping, the graph node).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

import minicv as mc
import minicv.functional as F
from minicv.devices import get_device

ROUNDS, CALLS = 9, 20


def _best(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(CALLS):
        began = time.process_time()
        fn()
        best = min(best, time.process_time() - began)
    return best


def measure(n: int = 1, c_in: int = 3, c_out: int = 16, hw: int = 16) -> dict[str, float]:
    """Microseconds per call of each variant (median over ROUNDS of the best of CALLS calls)."""
    kernels = get_device("numba").kernels
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c_in, hw, hw), np.float32)
    w = rng.standard_normal((c_out, c_in, 3, 3), np.float32)
    xt, wt = mc.Tensor(x, device="numba"), mc.Tensor(w, device="numba")
    xg, wg = (mc.Tensor(a, device="numba", requires_grad=True) for a in (x, w))

    def no_grad() -> object:
        with mc.no_grad():
            return F.conv2d(xt, wt, padding=1)

    def backward() -> None:
        F.conv2d(xg, wg, padding=1).sum().backward()

    variants = {
        "kernel conv2d_forward": lambda: kernels.conv2d_forward(x, w, (hw, hw), (1, 1), (1, 1), (1, 1), 1),
        "op F.conv2d, no_grad": no_grad,
        "op F.conv2d, recording": lambda: F.conv2d(xg, wg, padding=1),
        "op forward + sum + backward": backward,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # compiles
    for r in range(ROUNDS):
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            times[name].append(_best(variants[name]))
    return {name: 1e6 * statistics.median(t) for name, t in times.items()}


if __name__ == "__main__":
    for shape in ((1, 3, 16, 16), (1, 3, 16, 64), (32, 3, 16, 64)):
        result = measure(*shape)
        print(f"N{shape[0]} {shape[1]}->{shape[2]} {shape[3]}x{shape[3]}: "
              + ", ".join(f"{name} {us:.0f} us" for name, us in result.items()), flush=True)
