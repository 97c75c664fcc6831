"""Judging the rows: ``vs torch`` and the share of copy bandwidth, then each target met or missed."""

from __future__ import annotations

from minicv.bench.cases import BenchCase

COLD_COMPILE_TARGET_S = 30.0  # the target for compiling what the demo uses


def add_ratios(rows: list[dict], copy_gbps: dict[str, float]) -> None:
    """vs torch (torch time / minicv time, same case, same kind of device) and % of copy bandwidth."""
    torch_time = {(r["group"], r["case"], r["pass"], r["device"], r.get("isa")): r["median_s"]
                  for r in rows if r["path"] == "torch" and "median_s" in r}
    for r in rows:
        if "median_s" not in r:
            continue
        baseline = "torch-cuda" if r["device"] in ("cuda", "torch-cuda") else "torch-cpu"
        reference = torch_time.get((r["group"], r["case"], r["pass"], baseline, r.get("isa")))
        if reference is not None and r["path"] != "torch":
            r["vs_torch"] = reference / r["median_s"]
        copy = copy_gbps.get("gpu" if r["device"] in ("cuda", "torch-cuda") else "cpu")
        if "gbps" in r and copy:
            r["pct_copy"] = 100 * r["gbps"] / copy


def judge_targets(rows: list[dict], cases: list[BenchCase]) -> None:
    """Mark each CPU target on numba's op row (what a user calls), under every ISA: met or missed."""
    targets = {(c.group, c.problem.label, c.passes): c.target for c in cases if c.target}
    for r in rows:
        target = targets.get((r["group"], r["case"], r["pass"]))
        if r.get("op") == "cold_start":
            r["target"] = f"compile s <= {COLD_COMPILE_TARGET_S:g}"
            r["met"] = bool(r["compile_s"] <= COLD_COMPILE_TARGET_S)
        if target is None or (r["device"], r["path"]) != ("numba", "op"):
            continue
        metric, threshold = target
        value = r.get("vs_torch" if metric == "vs torch" else "gbps")
        r["target"] = f"{metric} >= {threshold:g}"
        r["met"] = None if value is None else bool(value >= threshold)

