"""Timing: how long one call takes (wall clock on the CPU, CUDA events on a GPU), the loop that warms up
then repeats (``Plan.measure``), and the statistics of the repeats (``summarize``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def perf_counter_time(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes on the CPU's wall clock (a timer for ``Plan.measure``)."""
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def event_time(fn: Callable[[], Any], event: Callable[[], Any], elapsed_ms: Callable[[Any, Any], float]) -> float:
    """Seconds one call of ``fn`` takes on a GPU, between two of its ``event()``s (CuPy's or PyTorch's)."""
    start, end = event(), event()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return elapsed_ms(start, end) / 1e3


@dataclass(frozen=True)
class Plan:
    """How long to time: warm-up calls (the first one compiles), then repeats filling a time budget."""

    warmup: int = 3
    min_repeats: int = 5
    max_repeats: int = 30
    budget_s: float = 1.0
    warmup_s: float = 0.0  # and at least this long: PyTorch's CPU convs take ~40 calls to reach their pace

    def measure(self, step: Callable[[], Any], timer: Callable[[Callable[[], Any]], float]) -> list[float]:
        last, spent, i = 0.0, 0.0, 0
        while i < self.warmup or spent < self.warmup_s:
            last = timer(step)
            spent, i = spent + last, i + 1
            if i >= 2 and last > self.budget_s / 2:  # a slow case: the compile call and one more suffice
                break
        repeats = min(self.max_repeats, max(self.min_repeats, math.ceil(self.budget_s / max(last, 1e-9))))
        return [timer(step) for _ in range(repeats)]


FULL_PLAN = Plan(budget_s=0.6, warmup_s=0.6)
QUICK_PLAN = Plan(warmup=2, min_repeats=3, max_repeats=3, budget_s=0.0)


def summarize(times: list[float]) -> dict[str, float | int]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_s": float(median), "q1_s": float(q1), "q3_s": float(q3), "min_s": float(min(times)),
            "max_s": float(max(times)), "repeats": len(times)}
