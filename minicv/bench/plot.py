"""The plot: time against problem size (log-log) for the sweeps."""

from __future__ import annotations

from pathlib import Path


def plot(results: dict, path: Path) -> None:
    """Time against problem size (log-log), one panel per sweep, one line per device's op and PyTorch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["results"] if r["group"].startswith("sweep") and "median_s" in r]
    families = list(dict.fromkeys(r["group"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(families)), figsize=(6 * max(1, len(families)), 4.5), squeeze=False)
    for ax, family in zip(axes[0], families):
        mine = [r for r in rows if r["group"] == family]
        compute = mine[0]["bound"] == "compute"
        for device in dict.fromkeys(r["device"] for r in mine):
            line = sorted((r["work"], r["median_s"]) for r in mine if r["device"] == device)
            ax.loglog([w / (1e9 if compute else 1e6) for w, _ in line], [t * 1e3 for _, t in line], "o-",
                      label=device)
        ax.set(title=family.removeprefix("sweep "), xlabel="GFLOP" if compute else "MB moved", ylabel="time (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['machine']['cpu']}" + (f" + {results['machine']['gpu']}" if results["machine"]["gpu"]
                                                    else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
