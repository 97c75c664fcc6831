"""Timing: how long one call takes (wall clock on the CPU, CUDA events on a GPU), the loops that warm up
then repeat (``Plan.measure`` for one step, ``Plan.measure_alternating`` for steps compared with each other),
and the statistics of the repeats (``summarize``)."""

from __future__ import annotations

import contextlib
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


Timer = Callable[[Callable[[], Any]], float]


@dataclass(frozen=True)
class Timed:
    """A step to time, its timer, and the context its calls run in (a conv algorithm, say)."""

    step: Callable[[], Any]
    timer: Timer
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@dataclass(frozen=True)
class Plan:
    """How long to time: warm-up calls (the first one compiles), then repeats filling a time budget, in
    ``rounds`` that alternate between the steps compared."""

    warmup: int = 3
    min_repeats: int = 5
    max_repeats: int = 30
    budget_s: float = 1.0
    warmup_s: float = 0.0  # and at least this long: PyTorch's CPU convs take ~40 calls to reach their pace
    rounds: int = 1

    def warm_up(self, step: Callable[[], Any], timer: Timer) -> int:
        """Call ``step`` until warm; the number of repeats its budget then allows."""
        last, spent, i = 0.0, 0.0, 0
        while i < self.warmup or spent < self.warmup_s:
            last = timer(step)
            spent, i = spent + last, i + 1
            if i >= 2 and last > self.budget_s / 2:  # a slow case: the compile call and one more suffice
                break
        return min(self.max_repeats, max(self.min_repeats, math.ceil(self.budget_s / max(last, 1e-9))))

    def measure(self, step: Callable[[], Any], timer: Timer) -> list[float]:
        times = self.measure_alternating([Timed(step, timer)])[0]
        if isinstance(times, Exception):
            raise times
        return times

    def measure_alternating(self, steps: list[Timed]) -> list[list[float] | Exception]:
        """Each step's times: all warmed up first, then ``rounds`` rounds in which each step in turn runs
        its share of its repeats, after one untimed call, so that a machine whose speed drifts (a shared
        VM) affects every step alike. A step that raises gets its exception instead and leaves the rounds;
        the others go on."""
        results: list[list[float] | Exception] = []
        repeats = []
        for timed in steps:
            try:
                with timed.context():
                    repeats.append(self.warm_up(timed.step, timed.timer))
                results.append([])
            except Exception as err:  # a kernel still being written may fail in any way
                repeats.append(0)
                results.append(err)
        for r in range(self.rounds):
            for i, (timed, n) in enumerate(zip(steps, repeats, strict=True)):
                times = results[i]
                if isinstance(times, Exception):
                    continue
                calls = n * (r + 1) // self.rounds - n * r // self.rounds  # the rounds share n
                try:
                    with timed.context():
                        if calls and len(steps) > 1:  # untimed: the caches, and the threads of the step before
                            timed.timer(timed.step)  # (they spin a while after it returns), settle
                        times += [timed.timer(timed.step) for _ in range(calls)]
                except Exception as err:
                    results[i] = err
        return results


FULL_PLAN = Plan(budget_s=0.6, warmup_s=0.6, rounds=5)
QUICK_PLAN = Plan(warmup=2, min_repeats=3, max_repeats=3, budget_s=0.0)


def summarize(times: list[float]) -> dict[str, float | int]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_s": float(median), "q1_s": float(q1), "q3_s": float(q3), "min_s": float(min(times)),
            "max_s": float(max(times)), "repeats": len(times)}
