"""Jobs: one row of the results each, a case on a backend through one path, and the jobs of a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minicv.bench.backends import BenchBackend
from minicv.bench.cases import BenchCase
from minicv.bench.timing import Plan, summarize


@dataclass(frozen=True)
class Job:
    """One row of the results: a case on a backend through one path (op, kernels, or torch)."""

    case: BenchCase
    backend: BenchBackend
    path: str  # "op", "kernels" or "torch"
    algorithm: str = ""  # the conv algorithm ("" where the device has one, or for memory-bound ops)

    def run(self, plan: Plan, arrays: dict[str, np.ndarray], isa: str = "native") -> dict:
        """Time the job on the problem's host ``arrays``; the row, with an error in place of times if it fails.

        ``isa`` names the instruction set this process's code runs (see minicv.bench.isa).
        """
        problem = self.case.problem
        row: dict[str, Any] = {
            "group": self.case.group, "op": problem.op, "case": problem.label, "pass": self.case.passes,
            "device": self.backend.name, "path": self.path, "algorithm": self.algorithm or None,
            "bound": problem.bound, "work": problem.work(self.case.backward, 4), "isa": isa,
        }
        try:
            step = problem.step(self.path, self.case, self.backend, arrays)
            with self.backend.algorithm(self.algorithm):
                row.update(summarize(plan.measure(step, self.backend.timer())))
            row["gflops" if problem.bound == "compute" else "gbps"] = row["work"] / row["median_s"] / 1e9
        except Exception as err:  # a kernel still being written may fail in any way: report it, go on
            row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        return row


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
