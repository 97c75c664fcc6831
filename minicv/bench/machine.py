"""The machine: its CPU, GPU and library versions (each result records them), and its copy bandwidth (the
yardstick of memory-bound ops)."""

from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import platform
import re
from pathlib import Path

import numpy as np

import minicv
from minicv.bench.backends import BenchBackend
from minicv.bench.timing import Plan


def copy_bandwidth(backend: BenchBackend, plan: Plan, nbytes: int) -> float:
    """GB/s of one large copy on the backend's device (bytes read + bytes written per second)."""
    xp = backend.xp
    src = xp.ones(nbytes // 4, dtype=np.float32)
    dst = xp.empty_like(src)
    times = plan.measure(lambda: xp.copyto(dst, src), backend.timer())
    return 2 * nbytes / float(np.median(times)) / 1e9


def machine_info(backends: list[BenchBackend]) -> dict:
    info = {
        "cpu": _cpu_model(),
        "cpu_arch": _cpu_arch(),
        "cores": os.cpu_count(),
        "gpu": None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "minicv": minicv.__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_average": os.getloadavg()[0],  # a shared machine's other work slows every timing
    }
    for module in ("numba", "torch", "cupy"):
        with contextlib.suppress(ImportError):
            info[module] = importlib.import_module(module).__version__
    with contextlib.suppress(ImportError):
        import numba

        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
        from minicv.kernels.numba import code_generation

        info["numba_code"] = code_generation()  # the ISA and vector width its kernels are compiled for
    with contextlib.suppress(ImportError):
        import torch

        info["torch_threads"] = torch.get_num_threads()
    for backend in backends:
        if backend.on_gpu and not backend.is_torch:
            info["gpu"] = backend.xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        elif backend.on_gpu and info["gpu"] is None:
            import torch

            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_arch() -> str:
    """The CPU's microarchitecture as LLVM names it (e.g. znver5): virtual machines often report only
    "AMD EPYC", and two generations of it differ twofold in vector width."""
    with contextlib.suppress(ImportError):
        import llvmlite.binding

        return llvmlite.binding.get_host_cpu_name()
    return ""


def numba_code(info: dict) -> str:
    """The numba kernels' code generation, in words: 'numba code avx512, 128-byte vectors (znver4)', and
    the layout when MINICV_LAYOUT_ISA gives another instruction set's."""
    code = info.get("numba_code")
    if not code:
        return "numba code -"
    layout = f", {code['layout']} layout" if code.get("layout", code["isa"]) != code["isa"] else ""
    return f"numba code {code['isa']}{layout}, {code['vector_bytes']}-byte vectors ({code['cpu']})"


def machine_slug(info: dict) -> str:
    """A file name for the machine: CPU model and microarchitecture, core count, and GPU name when present."""
    parts = [info["cpu"], info.get("cpu_arch", ""), f"{info['cores']}c"] + ([info["gpu"]] if info["gpu"] else [])
    return re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-")

