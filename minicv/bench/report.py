"""The report: the results as a markdown table, with the machine, the ISAs and the training steps' means."""

from __future__ import annotations

from minicv.bench.isa import describe
from minicv.bench.machine import numba_code
from minicv.bench.train_step import geometric_means


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def markdown(results: dict) -> str:
    info, rows = results["machine"], results["results"]
    lines = [
        f"# minicv benchmark: {info['cpu']} ({info.get('cpu_arch') or '?'}), {info['cores']} cores"
        + (f", {info['gpu']}" if info["gpu"] else ""),
        "",
        f"{info['date']}; numpy {info['numpy']}, numba {info.get('numba', '-')}, torch {info.get('torch', '-')}"
        f" ({info.get('torch_threads', '-')} threads), numba threads {info.get('numba_threads', '-')}, "
        f"{numba_code(info)}, "
        f"load average {info['load_average']:.1f} at the end; host memory: "
        + ("freed blocks reused (`--malloc reuse`, no page fault per call)" if results.get("malloc") == "reuse"
           else "glibc's default (large blocks page-faulted afresh on every call)")
        + ("; **quick run: tiny sizes, targets not judged**" if results["quick"] else ""),
        "",
        "Copy bandwidth (one large copy, read + write): "
        + ", ".join(f"{k} {v:.1f} GB/s" for k, v in results["copy_bandwidth_gbps"].items()),
        "",
        "Times are medians over the repeats (IQR = interquartile range); `vs torch` = torch time / minicv "
        "time in this run (> 1: faster than PyTorch); `op` = minicv.functional, `kernels` = the device's "
        "kernel functions called directly. Convolution rates count the direct sum's 2 * MACs whatever the "
        "algorithm; `winograd` does 16/36 of the products on the 3x3 stride-1 layers and 9/16 on the 4x4 "
        "stride-2 transposed convs it serves, so its rate can pass the machine's FMA peak.",
    ]
    lines += [f"\nNote: {name}: {note}" for name, note in results["notes"].items()]
    lines += _isa_lines(results)
    header = ("| case | pass | device | path | algorithm | median ms | IQR ms | rate | % copy | vs torch | target |\n"
              "|---|---|---|---|---|---:|---:|---:|---:|---:|---|")
    isas = list(dict.fromkeys(r.get("isa", "native") for r in rows))
    for isa in isas:
        for group in dict.fromkeys(r["group"] for r in rows if r.get("isa", "native") == isa):
            lines += ["", f"## {group}" + (f" ({isa})" if len(isas) > 1 else ""), "", header]
            for r in (r for r in rows if r["group"] == group and r.get("isa", "native") == isa):
                lines.append(_markdown_row(r))
    return "\n".join(lines) + "\n"


def _isa_lines(results: dict) -> list[str]:
    """The evidence of each ISA's run, and the training steps' geometric means."""
    lines = []
    if results.get("isa"):
        lines += ["", f"ISAs in this run: {', '.join(results['isa'])} (each row's `isa`; AVX2 rows from a child "
                      "process, numba for haswell and PyTorch with ATEN_CPU_CAPABILITY=avx2 and "
                      "ONEDNN_MAX_CPU_ISA=AVX2):"]
        lines += [f"- {describe(evidence)}" for evidence in results["isa"].values()]
    means = geometric_means(results["results"])
    if means:
        lines += ["", "Training steps, numba vs PyTorch, geometric mean over the five models (target >= 1.2): "
                  + ", ".join(f"{key} {mean:.2f}" for key, mean in means.items())]
    return lines


def _markdown_row(r: dict) -> str:
    cells = [r["case"], r["pass"], r["device"], r["path"], r["algorithm"] or ""]
    if "error" in r:
        return "| " + " | ".join(cells + [f"error: {r['error']}".replace("|", "/")] + [""] * 5) + " |"
    if "compile_s" in r:  # the cold start: one wall time, its compile share, no rate
        rate = f"compile {r['compile_s']:.3g} s (warm {r['warm_s']:.3g} s)"
    else:
        rate = f"{r['gflops']:.3g} GFLOP/s" if "gflops" in r else f"{r['gbps']:.3g} GB/s"
    target = ""
    if "target" in r:
        target = f"{r['target']}: " + {True: "met", False: "**missed**", None: "no torch"}[r["met"]]
    cells += [
        _ms(r["median_s"]),
        f"{_ms(r['q1_s'])}-{_ms(r['q3_s'])}",
        rate,
        f"{r['pct_copy']:.0f}%" if "pct_copy" in r else "",
        f"{r['vs_torch']:.2f}" if "vs_torch" in r else "",
        target,
    ]
    return "| " + " | ".join(cells) + " |"
