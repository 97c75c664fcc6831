"""A run of the benchmark: the backends and cases asked for, their jobs timed (here or in an ISA's child
process), the cold start, the ratios and targets, and the files written; or a training step's breakdown."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minicv.allocator import reuse_freed_memory
from minicv.bench import isa as bench_isa
from minicv.bench.backends import BenchBackend, baseline_of, minicv_backend, torch_backends
from minicv.bench.breakdown import BREAKDOWN_STEPS, breakdown, breakdown_markdown
from minicv.bench.cases import BenchCase, gpu_cases, issue_cases, registry_cases, sweep_cases
from minicv.bench.jobs import Job, plan_jobs, time_together
from minicv.bench.judge import add_ratios, judge_targets
from minicv.bench.machine import copy_bandwidth, machine_info, machine_slug, numba_code
from minicv.bench.options import CUDASIM_NEEDS_QUICK, MALLOC_CHOICES, SELECTIONS
from minicv.bench.plot import plot
from minicv.bench.report import markdown
from minicv.bench.timing import FULL_PLAN, QUICK_PLAN, Plan
from minicv.bench.train_step import QUICK_TRAIN_SIZES, TrainStepProblem, train_cases
from minicv.devices import canonical_name


def select_backends(device: str | Sequence[str] | None, quick: bool) -> tuple[list[BenchBackend], dict[str, str]]:
    """The minicv devices to time (those present, or those asked for) and notes on those left out."""
    notes: dict[str, str] = {}
    if device is not None:
        names = list(dict.fromkeys(canonical_name(d) for d in ([device] if isinstance(device, str) else device)))
        if "cudasim" in names and not quick:
            raise SystemExit(f"minicv bench: {CUDASIM_NEEDS_QUICK}")
    else:
        names = ["numpy", "numba", "cuda"] + (["cudasim"] if quick else [])
        if not quick:
            notes["cudasim"] = "left out (CUDA threads as CPU fibers: run with --quick)"
    backends = []
    for name in names:
        backend = minicv_backend(name)
        if backend is None:
            notes[name] = "not present on this machine"
            if device is not None:
                raise SystemExit(f"minicv bench: device {name!r} is not available here")
            continue
        if backend.note:
            notes[name] = backend.note
        backends.append(backend)
    return backends, notes


@dataclass
class Setup:
    """What one process times: its backends, the cases and their jobs, and how long to time each."""

    backends: list[BenchBackend]
    torches: list[BenchBackend]
    notes: dict[str, str]
    cases: list[BenchCase]
    jobs: list[Job]
    plan: Plan


def setup(device: str | Sequence[str] | None, op: str | None, quick: bool) -> Setup:
    """The backends, cases and jobs of a run (``op``: one of SELECTIONS, or None for all but the cold start
    of a quick run)."""
    if op is not None and op not in SELECTIONS:
        raise SystemExit(f"minicv bench: unknown op {op!r}; expected one of {', '.join(SELECTIONS)}")
    backends, notes = select_backends(device, quick)
    torches = [t for t in torch_backends() if any(baseline_of(b) == t.name for b in backends)]
    if not torches:
        notes["torch"] = "PyTorch is not installed: no baseline, no ratios"
    gpu = any(b.on_gpu for b in backends)
    stepped = any(b.name in TrainStepProblem.devices for b in backends)  # a device that runs the training steps
    cases = issue_cases(quick) + (gpu_cases() if gpu and not quick else []) + sweep_cases(quick, gpu)
    cases += registry_cases({c.problem.op for c in cases}) + (train_cases(quick) if stepped else [])
    cases = [c for c in cases if op is None or c.problem.op == op]
    return Setup(backends, torches, notes, cases, plan_jobs(cases, backends + torches),
                 QUICK_PLAN if quick else FULL_PLAN)


# The readable specification is not a contender: its rows are timed alone, before a case's engines. Its
# BLAS products leave OpenBLAS's threads spinning for a while after they return, taking the cores of
# whichever engine runs next (conv3x3 N16 64->64 64x64 fwd: the numba op 17 ms alone, 28-51 right after).
SPEC_DEVICE = "numpy"


def time_jobs(jobs: list[Job], plan: Plan, seed: int, isa: str, rows: list[dict],
              on_rows: Callable[[], None] = lambda: None) -> None:
    """Time the jobs in this process, appending their rows to ``rows`` (then calling ``on_rows``): a case's
    spec rows each alone, then its other rows together, in alternating rounds."""
    from tqdm import tqdm

    arrays: dict[str, np.ndarray] = {}
    arrays_of = None
    with tqdm(total=len(jobs), desc=f"minicv bench ({isa})", unit="job") as progress:
        for case, group in itertools.groupby(jobs, key=lambda job: job.case):
            case_jobs = list(group)
            progress.set_postfix_str(f"{case.problem.label} {case.passes}", refresh=False)
            if case.problem != arrays_of:  # one problem's inputs are held at a time (its passes share them;
                arrays, arrays_of = {}, case.problem  # the previous ones freed before the next are made)
                arrays = case.problem.arrays(np.random.default_rng(seed), np.float32)
            # the spec first, each of its rows alone; then the engines compared, in alternating rounds
            spec = [i for i, job in enumerate(case_jobs) if job.backend.name == SPEC_DEVICE]
            engines = [i for i in range(len(case_jobs)) if i not in spec]
            timed = {i: time_together([case_jobs[i]], plan, arrays, isa)[0] for i in spec}
            timed.update(zip(engines, time_together([case_jobs[i] for i in engines], plan, arrays, isa)))
            rows += [timed[i] for i in range(len(case_jobs))]
            progress.update(len(case_jobs))
            on_rows()


def time_isa(isa: str, device: str | Sequence[str] | None, op: str | None, quick: bool, seed: int,
             malloc: str) -> list[dict]:
    """The rows of a run's jobs, timed in this process (a child running ``isa``'s code)."""
    if malloc == "reuse":
        reuse_freed_memory()
    run = setup(device, op, quick)
    rows: list[dict] = []
    time_jobs(run.jobs, run.plan, seed, isa, rows)
    return rows


def run_bench(out: Path, device: str | Sequence[str] | None = None, op: str | None = None, quick: bool = False,
              seed: int = 0, malloc: str = "reuse", isa: str | Sequence[str] = "native") -> dict:
    """Time the cases, write ``<out>/<machine>[-quick].json``, ``.md`` and ``.png``; return the results.

    ``malloc="reuse"`` makes the process keep freed memory (``reuse_freed_memory``) for the rest of its
    life; ``"system"`` leaves glibc's default. ``isa``: "native" (this process), "avx2" (a child process
    running AVX2 code, minicv.bench.isa), or both ("native,avx2"); every row names its ISA.
    """
    isas = bench_isa.parse_isas(isa)
    if malloc not in MALLOC_CHOICES:
        raise SystemExit(f"minicv bench: unknown malloc {malloc!r}; expected one of {', '.join(MALLOC_CHOICES)}")
    missing = [name for name in isas if not bench_isa.host_has(name)]
    if missing:
        raise SystemExit(f"minicv bench: --isa {','.join(missing)}: this CPU has no {', '.join(missing).upper()}")
    run = setup(device, op, quick)
    if malloc == "reuse" and not reuse_freed_memory():
        malloc = "system"
    cold = any(b.name == "numba" for b in run.backends) and (op == "cold_start" or (op is None and not quick))
    copy_gbps: dict[str, float] = {}
    for b in run.backends:
        copy_gbps.setdefault("gpu" if b.on_gpu else "cpu", copy_bandwidth(b, run.plan, 2**24 if quick else 2**28))
    evidence: dict[str, dict] = {}

    def results_of(info: dict, rows: list[dict]) -> dict:
        return {"machine": info, "quick": quick, "seed": seed, "malloc": malloc, "plan": run.plan.__dict__,
                "notes": run.notes, "copy_bandwidth_gbps": copy_gbps, "isa": evidence, "results": rows}

    info = machine_info(run.backends + run.torches)
    if any(b.name == "numba" for b in run.backends):
        print(f"minicv bench: {numba_code(info)}")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (machine_slug(info) + ("-quick" if quick else ""))
    # The rows so far, rewritten after each one: a run cut short (a time limit, Ctrl-C) keeps them.
    partial = stem.with_suffix(".partial.json")
    rows: list[dict] = []

    def save_partial() -> None:
        partial.write_text(json.dumps(results_of(info, rows), indent=1) + "\n")

    options = dict(device=device, op=op, quick=quick, seed=seed, malloc=malloc)
    for name in isas:
        if name == "native":
            if len(isas) > 1:  # the evidence beside the other ISA's (it compiles one kernel afresh)
                evidence[name] = bench_isa.isa_evidence(name)
            time_jobs(run.jobs, run.plan, seed, name, rows, save_partial)
        else:
            child = bench_isa.run_child(name, options)
            evidence[name] = child["evidence"]
            rows += child["rows"]
            save_partial()
    for name in isas if cold else ():
        print(f"minicv bench: cold start ({name}): a fresh process compiling every kernel the demo uses...")
        rows.append(bench_isa.cold_start(name))
        save_partial()
    add_ratios(rows, copy_gbps)
    if not quick:  # the targets are for the issue's sizes: a quick run's tiny ones would "miss" them
        judge_targets(rows, run.cases)

    results = results_of(machine_info(run.backends + run.torches), rows)  # the load average at the end
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    stem.with_suffix(".md").write_text(markdown(results))
    plot(results, stem.with_suffix(".png"))
    results["files"] = [str(stem.with_suffix(s)) for s in (".json", ".md", ".png")]
    print(f"minicv bench: wrote {', '.join(results['files'])}")
    return results


def run_from_args(args: Any) -> dict:
    """What the parsed options of either command ask for: the benchmark, or a step's breakdown."""
    if args.breakdown is None:
        return run_bench(Path(args.out), device=args.device, op=args.op, quick=args.quick, seed=args.seed,
                         malloc=args.malloc, isa=args.isa)
    n, hw = QUICK_TRAIN_SIZES[0] if args.quick else (8, 128)
    # as the benchmark's rows: a step's fresh activations would otherwise pay a page fault per 4 KiB
    malloc = "reuse" if args.malloc == "reuse" and reuse_freed_memory() else "system"
    result = breakdown(args.breakdown, n=n, hw=hw, seed=args.seed, steps=3 if args.quick else BREAKDOWN_STEPS)
    info = {**machine_info([]), "malloc": malloc}
    table = breakdown_markdown(result, info)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{machine_slug(info)}-breakdown-{args.breakdown}{'-quick' if args.quick else ''}.md"
    path.write_text(table)
    print(table + f"\nminicv bench: wrote {path}")
    return {**result, "files": [str(path)]}

