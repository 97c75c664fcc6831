"""Jobs: one row of the results each, a case on a backend through one path; the jobs of a run, and the
timing of one case's jobs together."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from minicv.bench.backends import BenchBackend
from minicv.bench.cases import BenchCase
from minicv.bench.timing import Plan, Timed, summarize


@dataclass(frozen=True)
class Job:
    """One row of the results: a case on a backend through one path (op, kernels, or torch)."""

    case: BenchCase
    backend: BenchBackend
    path: str  # "op", "kernels" or "torch"
    algorithm: str = ""  # the conv algorithm ("" where the device has one, or for memory-bound ops)

    def run(self, plan: Plan, arrays: dict[str, np.ndarray], isa: str = "native") -> dict:
        """Time the job alone on the problem's host ``arrays`` (``time_together`` with itself)."""
        return time_together([self], plan, arrays, isa)[0]

    def head(self, isa: str) -> dict[str, Any]:
        """The row's description of the job; ``isa`` names the instruction set this process's code runs
        (see minicv.bench.isa)."""
        problem = self.case.problem
        return {"group": self.case.group, "op": problem.op, "case": problem.label, "pass": self.case.passes,
                "device": self.backend.name, "path": self.path, "algorithm": self.algorithm or None,
                "bound": problem.bound, "work": problem.work(self.case.backward, 4), "isa": isa}


def time_together(jobs: list[Job], plan: Plan, arrays: dict[str, np.ndarray], isa: str = "native") -> list[dict]:
    """The rows of jobs compared with each other (one case's engines and paths) on the same host ``arrays``,
    timed in alternating rounds (``Plan.measure_alternating``); a job that fails gets an error in place of
    times, and the others go on."""
    rows = [job.head(isa) for job in jobs]
    if jobs:  # one case's jobs: its problem may ask for a longer budget
        plan = dataclasses.replace(plan, budget_s=plan.budget_s * jobs[0].case.problem.budget_scale)
    timed: list[Timed] = []
    timed_rows = []
    for job, row in zip(jobs, rows, strict=True):
        try:
            step = job.case.problem.step(job.path, job.case, job.backend, arrays)
        except Exception as err:  # a kernel still being written may fail in any way: report it, go on
            row["error"] = _error_text(err)
            continue
        timed.append(Timed(step, job.backend.timer(), functools.partial(job.backend.algorithm, job.algorithm)))
        timed_rows.append(row)
    for row, times in zip(timed_rows, plan.measure_alternating(timed), strict=True):
        if isinstance(times, Exception):
            row["error"] = _error_text(times)
            continue
        row.update(summarize(times))
        row["gflops" if row["bound"] == "compute" else "gbps"] = row["work"] / row["median_s"] / 1e9
    return rows


def _error_text(err: Exception) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0][:300]


def plan_jobs(cases: list[BenchCase], backends: list[BenchBackend]) -> list[Job]:
    jobs = []
    for case in cases:
        for backend in backends:
            if case.gpu_only and not backend.on_gpu:
                continue
            runs_on = case.problem.devices
            if runs_on is not None and not backend.is_torch and backend.name not in runs_on:
                continue
            if backend.is_torch:
                if case.problem.has_torch:
                    jobs.append(Job(case, backend, "torch"))
                continue
            conv = case.problem.bound == "compute"
            if backend.ops_load:
                # what a user gets: the device's current (default) conv algorithm, named in the row
                default = backend.kernels.get_conv_algorithm() if conv and backend.algorithms else ""
                jobs.append(Job(case, backend, "op", default))
            if case.group.startswith("sweep") or not case.problem.kernel_path:
                continue  # the sweeps plot what a user sees: the ops
            algorithms = backend.algorithms if conv else ()
            jobs += [Job(case, backend, "kernels", a) for a in algorithms or ("",)]
    return jobs
