"""Every kernel of the numba and cudasim tables reads and writes nothing outside its operands.

Each input is copied against an inaccessible page (PROT_NONE): once ending right before it, once starting
right after it, so that a read one byte past either end faults, however the kernel reads (vector loads
included). The outputs are placed the same way where the device allocates them through a function that
can be swapped (every cudasim output; the numba conv's, from ``simd.empty``), so writes are held to them.
The kernels run in a child process (this file run as a script), so that a fault fails the test instead of
ending the test run; the child prints each case before running it, which names the culprit.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import itertools
import mmap
import signal
import subprocess
import sys

import numpy as np
import pytest

PAGE = mmap.PAGESIZE
_PROT_NONE = 0
_mappings: list[mmap.mmap] = []  # alive as long as the arrays placed in them


def guarded(a: np.ndarray, at: str) -> np.ndarray:
    """A copy of ``a`` whose last byte ends (at="end") or whose first byte starts (at="start") at an
    inaccessible page; there is one on both sides, the other one further away."""
    data_pages = max(1, -(-a.nbytes // PAGE))
    mapping = mmap.mmap(-1, (data_pages + 2) * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    libc = ctypes.CDLL(None, use_errno=True)
    for guard in (base, base + (data_pages + 1) * PAGE):
        if libc.mprotect(ctypes.c_void_p(guard), PAGE, _PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    offset = PAGE + (data_pages * PAGE - a.nbytes if at == "end" else 0)
    out = np.frombuffer(mapping, dtype=a.dtype, count=a.size, offset=offset).reshape(a.shape)
    out[...] = a
    _mappings.append(mapping)
    return out


class GuardedArrays:
    """NumPy, but for empty, zeros and full, whose arrays are placed against guard pages."""

    def __init__(self, at: str) -> None:
        self.at = at

    def empty(self, shape, dtype) -> np.ndarray:
        return guarded(np.empty(shape, dtype), self.at)

    def zeros(self, shape, dtype) -> np.ndarray:
        return guarded(np.zeros(shape, dtype), self.at)

    def full(self, shape, value, dtype) -> np.ndarray:
        return guarded(np.full(shape, value, dtype), self.at)

    def __getattr__(self, name: str):
        return getattr(np, name)


# (N, C_in, H, W, C_out, k, stride, padding, dilation, groups): rows narrower and wider than a vector,
# odd sizes, stride 2 (the 4x4 one is the transposed-conv Winograd's), dilation, groups, padding past k.
CONVS = [(2, 3, 7, 9, 4, 3, 1, 1, 1, 1), (1, 4, 5, 33, 6, 3, 2, 1, 1, 2), (2, 2, 6, 6, 2, 4, 2, 1, 1, 1),
         (1, 1, 1, 1, 1, 1, 1, 0, 1, 1), (2, 4, 9, 9, 4, 3, 1, 2, 2, 1), (3, 8, 13, 70, 8, 3, 1, 1, 1, 1),
         (2, 6, 8, 40, 6, 4, 2, 1, 1, 1), (1, 2, 3, 3, 3, 3, 1, 3, 1, 1),
         (2, 3, 6, 70, 5, 3, 1, 1, 1, 1),  # a 3-channel layer, whose weight gradient puts pixels on lanes
         # numba's Winograd weight gradient (bands across rows, parts of an image)
         (1, 33, 5, 37, 40, 3, 1, 1, 1, 1), (2, 32, 1, 2, 32, 3, 1, 2, 1, 1),
         (1, 4, 29, 149, 4, 3, 1, 1, 1, 1)]  # weight gradients: several bands of gy laid out per task, odd edges
CUDASIM_CONVS = CONVS[:5]  # cudasim runs a thread per GEMM element as a fiber: the small ones
POOLS = [((2, 3, 7, 9), 2, 2, 0, 1), ((1, 2, 5, 33), 3, 1, 1, 1), ((2, 1, 8, 8), 2, 1, 1, 1),
         ((1, 1, 1, 1), 1, 1, 0, 1), ((1, 3, 9, 70), 3, 2, 1, 2)]
UPSAMPLES = [((2, 3, 5, 7), (10, 14)), ((1, 1, 1, 1), (3, 1)), ((1, 2, 4, 40), (7, 81))]
CROSS_ENTROPIES = [(2, 5, 37), (1, 1, 1), (1, 21, 1000), (3, 3, 65)]
BATCH_NORMS = [(2, 3, 37), (1, 1, 2), (3, 5, 1), (1, 2, 1000), (4, 16, 65)]


def run_cases(device: str, dtype: type, at: str) -> None:
    kernels = importlib.import_module(f"minicv.kernels.{device}")
    rng = np.random.default_rng(0)

    def place(a: np.ndarray) -> np.ndarray:
        return guarded(np.ascontiguousarray(a), at)

    def say(*case) -> None:
        print(device, np.dtype(dtype).name, at, *case, flush=True)

    # Outputs too, where the device allocates them through a function that can be swapped: writes past
    # them fault. numba: the conv's y and gx (simd.empty); cudasim: every output, workspace and flag.
    if device == "numba":
        simd = importlib.import_module("minicv.kernels.numba.simd")
        simd.empty = lambda shape, dtype: guarded(np.empty(shape, dtype), at)
        conv = importlib.import_module("minicv.kernels.numba.conv")
        # Winograd on the narrow and small 3x3 layers too, their weight gradients included, and on the
        # transposed convs' narrow rows
        conv.WINOGRAD_MIN_CHANNELS, conv.WINOGRAD_MIN_PAIRS, conv.WINOGRAD_WEIGHT_MIN_CHANNELS = (1, 1), 1, 1
        conv.WINOGRAD_MIN_TILES, conv.TRANSPOSED_WINOGRAD_MIN_VECTORS = 1, 0
    if device == "cudasim":
        kernels.backend.xp = GuardedArrays(at)
    algorithms = [""]
    if hasattr(kernels, "conv_algorithm"):
        algorithms = list(importlib.import_module(kernels.conv_algorithm.__module__).ALGORITHMS)
    for algorithm in algorithms:
        for n, c_in, h, w, c_out, k, s, p, d, g in CUDASIM_CONVS if device == "cudasim" else CONVS:
            x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
            weight = rng.standard_normal((c_out, c_in // g, k, k)).astype(dtype)
            out_hw = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size in (h, w)]
            gy = rng.standard_normal((n, c_out, *out_hw)).astype(dtype)
            hyper = ((s, s), (p, p), (d, d), g)
            say("conv", algorithm, (n, c_in, h, w, c_out, k, s, p, d, g))
            with kernels.conv_algorithm(algorithm) if algorithm else contextlib.nullcontext():
                kernels.conv2d_forward(place(x), place(weight), out_hw, *hyper)
                kernels.conv2d_backward_input(place(gy), place(weight), x.shape, *hyper)
                kernels.conv2d_backward_weight(place(x), place(gy), weight.shape, *hyper)
    for shape, k, s, p, d in POOLS:
        x = rng.permutation(np.prod(shape)).reshape(shape).astype(dtype)
        out_hw = tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size in shape[2:])
        pool = ((k, k), (s, s), (p, p), (d, d))
        say("pool", shape, pool)
        y, indices = kernels.max_pool2d_forward(place(x), *pool, out_hw)
        kernels.unpool_scatter(place(y), place(indices), shape[2:])
        kernels.unpool_scatter(place(y), place(indices), shape[2:], pool)
        kernels.unpool_gather(place(x), place(indices))
    for shape, out_hw in UPSAMPLES:
        x = rng.standard_normal(shape).astype(dtype)
        src_h, src_w = (np.arange(o) * i // o for o, i in zip(out_hw, shape[2:], strict=True))
        say("upsample", shape, out_hw)
        y = kernels.upsample_nearest_forward(place(x), place(src_h), place(src_w))
        kernels.upsample_nearest_backward(place(y), place(src_h), place(src_w), shape[2:])
    for n, c, pixels in CROSS_ENTROPIES:
        x = rng.standard_normal((n, c, pixels)).astype(dtype)
        target = rng.integers(0, c, (n, pixels))
        target[0, 0] = -100
        weight, g = rng.random(c).astype(dtype), rng.random((n, pixels)).astype(dtype)
        for label_smoothing in (0.0, 0.1):
            say("cross_entropy", (n, c, pixels), label_smoothing)
            args = (place(x), place(target), place(weight), -100, label_smoothing)
            _, stats = kernels.softmax_cross_entropy_forward(*args)
            kernels.softmax_cross_entropy_backward(*args, place(stats), place(g))
    for shape in BATCH_NORMS:
        x, gy = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
        weight, bias, mean = (rng.standard_normal(shape[1]).astype(dtype) for _ in range(3))
        var = rng.uniform(0.5, 2.0, shape[1]).astype(dtype)
        for training, relu in itertools.product((True, False), (False, True)):
            say("batch_norm", shape, "training" if training else "eval", "relu" if relu else "")
            y, mean_used, var_used = kernels.batch_norm_forward(place(x), None if training else place(mean),
                                                                None if training else place(var), place(weight),
                                                                place(bias), 1e-5, training, relu)
            kernels.batch_norm_backward(place(gy), place(x), place(mean_used), place(var_used), place(weight), 1e-5,
                                        training, place(y) if relu else None)


def main(argv: list[str]) -> None:
    if argv == ["--read-past-the-end"]:  # what every kernel must not do
        a = guarded(np.arange(10.0), "end")
        print("reading past the end", flush=True)
        print(ctypes.c_double.from_address(a.ctypes.data + a.nbytes).value)
    for device in argv:
        for dtype in (np.float32, np.float64):
            for at in ("end", "start"):
                run_cases(device, dtype, at)
    print("all cases ran", flush=True)


def _child(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, timeout=600)


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="places operands against pages with Linux's mprotect")


@linux_only
@pytest.mark.parametrize("device", ["numba", "cudasim"])
def test_kernels_read_nothing_outside_their_operands(device: str) -> None:
    child = _child(device)
    printed = child.stdout.strip().splitlines()
    assert child.returncode == 0 and printed[-1] == "all cases ran", (
        f"exit {child.returncode} in the case: {printed[-1] if printed else '(none)'}\n{child.stderr[-2000:]}")


@linux_only
def test_a_read_past_an_operand_faults() -> None:
    child = _child("--read-past-the-end")
    assert child.returncode == -signal.SIGSEGV and child.stdout.strip() == "reading past the end"


if __name__ == "__main__":
    main(sys.argv[1:])
