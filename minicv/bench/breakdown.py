"""Where the time of one training step goes: each kernel-table function, each op outside its kernels, the
optimizer, and the rest (autograd engine, Python), timed layer by layer on one device."""

from __future__ import annotations

import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from minicv import optim
from minicv.autograd import Function
from minicv.bench.train_step import TrainStepProblem
from minicv.devices import get_device
from minicv.models import TASKS
from minicv.ops import kernel_table


class _Timers:
    """Self time per label: a call's time less that of the timed calls inside it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._inner: list[float] = []  # per open call, the time of the timed calls inside it

    def time(self, label: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        self._inner.append(0.0)
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total = time.perf_counter() - began
            self.seconds[label] += total - self._inner.pop()
            self.calls[label] += 1
            if self._inner:
                self._inner[-1] += total

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def _subclasses(cls: type) -> Iterator[type]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@contextlib.contextmanager
def _timed(timers: _Timers, kernels: Any) -> Iterator[None]:
    """Time every kernel-table function of ``kernels``, every op's forward and backward (outside its
    kernels) and the optimizer's step and zero_grad, restoring them all on exit."""
    patched: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, replacement: Any) -> None:
        patched.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, replacement)

    def kernel(name: str, fn: Callable) -> Callable:
        return lambda *args, **kwargs: timers.time(f"kernel {name}", fn, *args, **kwargs)

    def method(kind: str, name: str, fn: Callable) -> Callable:
        return lambda obj, *args, **kwargs: timers.time(f"{kind} {type(obj).__name__}.{name}", fn, obj, *args, **kwargs)

    try:
        for name in kernel_table():
            patch(kernels, name, kernel(name, getattr(kernels, name)))
        for cls in _subclasses(Function):
            for name in ("forward", "backward"):
                if name in cls.__dict__:
                    patch(cls, name, method("op", name, cls.__dict__[name]))
        for name in ("step", "zero_grad"):
            patch(optim.Optimizer, name, method("optimizer", name, optim.Optimizer.__dict__[name]))
        yield
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


BREAKDOWN_STEPS = 20  # timed steps: 3 left a SegNet step's mean 214-245 ms apart between runs


def breakdown(model: str = "segnet", device: str = "numba", n: int = 8, hw: int = 128, steps: int = BREAKDOWN_STEPS,
              seed: int = 0) -> dict:
    """Time ``steps`` training steps of ``model`` (after one untimed step that compiles): the mean per step
    of each kernel-table function, of each op outside its kernels, of the optimizer, and of the rest."""
    if model not in TASKS:
        raise SystemExit(f"minicv bench: unknown model {model!r} for --breakdown; expected one of {', '.join(TASKS)}")
    problem = TrainStepProblem(model, n, hw)
    step = problem.minicv_step(device, problem.arrays(np.random.default_rng(seed), np.float32))
    step()  # compiles, allocates: not timed
    timers = _Timers()
    with _timed(timers, get_device(device).kernels):
        step()  # each wrapper's first call (and a kernel specialised for a traced layout) is not timed either
        timers.reset()
        began = time.perf_counter()
        for _ in range(steps):
            step()
        total = (time.perf_counter() - began) / steps
    parts: list[dict[str, Any]] = [{"what": label, "ms": 1e3 * s / steps, "calls": timers.calls[label] // steps}
             for label, s in timers.seconds.items()]
    parts.append({"what": "other (autograd engine, Tensor wrapping, Python)",
                  "ms": 1e3 * (total - sum(timers.seconds.values()) / steps), "calls": None})
    parts.sort(key=lambda p: -p["ms"])
    for p in parts:
        p["share"] = p["ms"] / (1e3 * total)
    return {"model": model, "device": device, "case": problem.label, "steps": steps, "step_ms": 1e3 * total,
            "parts": parts}


def breakdown_markdown(result: dict, machine: dict) -> str:
    lines = [
        f"## {result['model']} training step, {result['case']}, {result['device']} device",
        "",
        f"{machine['cpu']} ({machine.get('cpu_arch') or '?'}), {machine['cores']} cores, {machine['date']}, "
        f"load average {machine['load_average']:.1f}, host memory {machine.get('malloc', 'system')} (see "
        f"`--malloc`); mean of {result['steps']} steps after a warm-up step: "
        f"**{result['step_ms']:.1f} ms per step**. Self times: an op's row excludes the kernels it calls.",
        "",
        "| where | ms per step | share | calls per step |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {p['what']} | {p['ms']:.2f} | {100 * p['share']:.1f}% | {'' if p['calls'] is None else p['calls']} |"
              for p in result["parts"]]
    return "\n".join(lines) + "\n"
