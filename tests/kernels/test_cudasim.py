"""The cudasim runtime: CUDA C on the CPU with fibers. Barriers, shared memory (static and dynamic),
atomics, thread coordinates, argument checking, build errors and the build cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from minicv.kernels.cudasim import runtime

TILED_MATMUL = r"""
#define TILE 16
// c = a @ b, a (M, K), b (K, N): each block computes a TILE x TILE tile of c through shared memory.
template <typename T>
__global__ void matmul_kernel(const T* a, const T* b, T* c, int M, int K, int N) {
    __shared__ T a_tile[TILE][TILE];
    __shared__ T b_tile[TILE][TILE];
    const int row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
    T sum = 0;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        a_tile[threadIdx.y][threadIdx.x] = (row < M && k0 + threadIdx.x < K) ? a[row * K + k0 + threadIdx.x] : 0;
        b_tile[threadIdx.y][threadIdx.x] = (k0 + threadIdx.y < K && col < N) ? b[(k0 + threadIdx.y) * N + col] : 0;
        __syncthreads();
        for (int k = 0; k < TILE; ++k) sum += a_tile[threadIdx.y][k] * b_tile[k][threadIdx.x];
        __syncthreads();
    }
    if (row < M && col < N) c[row * N + col] = sum;
}
"""

TREE_REDUCTION = r"""
// sums[b] = sum of x over the elements of block b, by halving in shared memory (blockDim.x a power of 2).
__global__ void block_sum_kernel(const double* x, double* sums, long long n) {
    __shared__ double partial[1024];
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    partial[threadIdx.x] = i < n ? x[i] : 0.0;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) sums[blockIdx.x] = partial[0];
}
"""

BARRIERS = r"""
// Each thread reads what its right neighbour wrote: wrong unless the barrier waits for all the writes.
__global__ void rotate_kernel(const int* x, int* y, int with_barrier) {
    __shared__ int values[256];
    values[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    if (with_barrier) __syncthreads();
    y[blockIdx.x * blockDim.x + threadIdx.x] = values[(threadIdx.x + 1) % blockDim.x];
}

// Races that only one schedule shows: each thread reads what its left neighbour wrote with no barrier
// between, and each block what the block before it wrote (nothing orders the blocks of a grid).
__global__ void left_neighbour_kernel(const int* x, int* y) {
    __shared__ int values[256];
    values[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    y[blockIdx.x * blockDim.x + threadIdx.x] = values[threadIdx.x > 0 ? threadIdx.x - 1 : 0];
}

__global__ void chain_kernel(int* y) {
    if (threadIdx.x == 0) y[blockIdx.x] = blockIdx.x == 0 ? 0 : y[blockIdx.x - 1] + 1;
}

// Threads that return early do not hold the others at later barriers.
__global__ void early_exit_kernel(int* out, int rounds) {
    __shared__ int counter[1];
    if (threadIdx.x == 0) counter[0] = 0;
    __syncthreads();
    if (threadIdx.x % 2 == 1) return;
    for (int r = 0; r < rounds; ++r) {
        atomicAdd(&counter[0], 1);
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = counter[0];
}

// out[b, t] = every coordinate of thread t of block b, flattened.
__global__ void coordinates_kernel(unsigned* out) {
    const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    unsigned* o = out + (block * blockDim.x * blockDim.y * blockDim.z + thread) * 6;
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
}

// Dynamic shared memory: each block reverses its slice of x.
__global__ void reverse_kernel(const float* x, float* y) {
    extern __shared__ float buffer[];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    buffer[threadIdx.x] = x[i];
    __syncthreads();
    y[i] = buffer[blockDim.x - 1 - threadIdx.x];
}

// A large local array lives on the fiber's stack.
__global__ void local_array_kernel(double* out) {
    double scratch[2048];
    for (int k = 0; k < 2048; ++k) scratch[k] = k * 0.5 + threadIdx.x;
    double sum = 0;
    for (int k = 0; k < 2048; ++k) sum += scratch[k];
    out[threadIdx.x] = sum;
}

__global__ void hello_kernel(int value) {
    printf("thread %u of block %u says %d\n", threadIdx.x, blockIdx.x, value);
}
"""

ATOMICS = r"""
// A histogram of labels in every integer and float flavour of atomicAdd, and the other atomics.
__global__ void atomics_kernel(const int* labels, long long n, int* counts, unsigned long long* counts_u64,
                               float* counts_f32, double* counts_f64, int* minimum, int* maximum,
                               long long* minimum_i64, int* cas_winner, int* exchanged) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int label = labels[i];
        atomicAdd(&counts[label], 1);
        atomicAdd(&counts_u64[label], 1ull);
        atomicAdd(&counts_f32[label], 1.0f);
        atomicAdd(&counts_f64[label], 0.5);
        atomicMin(minimum, label);
        atomicMax(maximum, label);
        atomicMin(minimum_i64, (long long)label - 1000);
        atomicCAS(cas_winner, -1, (int)i);   // only the first thread to get here replaces -1
        atomicExch(exchanged, 7);
    }
}
"""


def _load(source: str, *names: str) -> dict:
    return runtime.load(source, names, label="test_cudasim")


def test_tiled_matmul_with_shared_memory_and_barriers() -> None:
    kernels = _load(TILED_MATMUL, "matmul_kernel<float>", "matmul_kernel<double>")
    rng = np.random.default_rng(0)
    m, k, n = 37, 45, 29  # not multiples of the tile
    for dtype, name in ((np.float32, "matmul_kernel<float>"), (np.float64, "matmul_kernel<double>")):
        a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
        c = np.full((m, n), np.nan, dtype=dtype)
        kernels[name](((n + 15) // 16, (m + 15) // 16), (16, 16), (a, b, c, np.int32(m), np.int32(k), np.int32(n)))
        exact = a.astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(c, exact, **({"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else
                                               {"rtol": 1e-12, "atol": 1e-12}))


def test_launches_from_several_python_threads_keep_their_own_shared_memory() -> None:
    kernel = _load(TILED_MATMUL, "matmul_kernel<double>")["matmul_kernel<double>"]
    failures = []

    def multiply(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(10):
            a, b, c = rng.standard_normal((40, 33)), rng.standard_normal((33, 50)), np.zeros((40, 50))
            kernel((4, 3), (16, 16), (a, b, c, np.int32(40), np.int32(33), np.int32(50)))
            failures.extend([] if np.allclose(c, a @ b, rtol=1e-12) else [seed])

    threads = [threading.Thread(target=multiply, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_block_tree_reduction_with_1024_threads() -> None:
    kernel = _load(TREE_REDUCTION, "block_sum_kernel")["block_sum_kernel"]
    x = np.random.default_rng(1).standard_normal(3 * 1024 + 100)
    sums = np.zeros(4)
    kernel((4,), (1024,), (x, sums, np.int64(x.size)))
    expected = [x[b * 1024 : (b + 1) * 1024].sum() for b in range(4)]
    np.testing.assert_allclose(sums, expected, rtol=1e-12)


def test_barrier_waits_for_every_thread_of_the_block() -> None:
    kernel = _load(BARRIERS, "rotate_kernel")["rotate_kernel"]
    x = np.arange(512, dtype=np.int32)
    expected = np.concatenate([np.roll(x[:256], -1), np.roll(x[256:], -1)])
    y = np.zeros_like(x)
    kernel((2,), (256,), (x, y, np.int32(1)))
    np.testing.assert_array_equal(y, expected)
    # Without the barrier thread t reads its neighbour's slot before the neighbour has written it.
    y = np.zeros_like(x)
    kernel((2,), (256,), (x, y, np.int32(0)))
    assert not np.array_equal(y, expected)


def test_the_reverse_schedule_shows_races_the_forward_one_hides() -> None:
    kernels = _load(BARRIERS, "left_neighbour_kernel", "chain_kernel")
    x = np.arange(512, dtype=np.int32)
    left = np.concatenate([x[:1], x[:-1]]).reshape(2, 256)
    left[1, 0] = x[256]
    results, before = {}, runtime.get_schedule()
    for name in runtime.SCHEDULES:
        y, chain = np.zeros_like(x), np.full(5, -1, dtype=np.int32)
        with runtime.schedule(name):
            kernels["left_neighbour_kernel"]((2,), (256,), (x, y))
            kernels["chain_kernel"]((5,), (32,), (chain,))
        results[name] = (np.array_equal(y, left.ravel()), chain.tolist() == [0, 1, 2, 3, 4])
    assert results == {"forward": (True, True), "reverse": (False, False)}
    assert runtime.get_schedule() == before  # restored
    with pytest.raises(ValueError, match="unknown cudasim schedule 'sideways': expected one of forward, reverse"):
        with runtime.schedule("sideways"):
            pass


def test_the_schedule_comes_from_the_environment() -> None:
    import os
    import subprocess
    import sys

    script = "from minicv.kernels.cudasim import runtime; print(runtime.get_schedule())"
    run = subprocess.run([sys.executable, "-c", script], env={**os.environ, "MINICV_CUDASIM_SCHEDULE": "reverse"},
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "reverse"


def test_threads_that_return_early_do_not_block_barriers() -> None:
    kernel = _load(BARRIERS, "early_exit_kernel")["early_exit_kernel"]
    out = np.zeros(3, dtype=np.int32)
    kernel((3,), (64,), (out, np.int32(5)))
    np.testing.assert_array_equal(out, [32 * 5] * 3)


@pytest.mark.parametrize("schedule", runtime.SCHEDULES)
def test_thread_and_block_coordinates_in_three_dimensions(schedule: str) -> None:
    kernel = _load(BARRIERS, "coordinates_kernel")["coordinates_kernel"]
    grid, block = (3, 2, 2), (4, 3, 2)
    out = np.zeros((2, 2, 3, 2, 3, 4, 6), dtype=np.uint32)  # (bz, by, bx, tz, ty, tx, coordinate)
    with runtime.schedule(schedule):
        kernel(grid, block, (out,))
    bz, by, bx, tz, ty, tx = np.indices(out.shape[:-1])
    expected = np.stack([tx, ty, tz, bx, by, bz], axis=-1)
    np.testing.assert_array_equal(out, expected)


def test_dynamic_shared_memory() -> None:
    kernel = _load(BARRIERS, "reverse_kernel")["reverse_kernel"]
    x = np.arange(3 * 128, dtype=np.float32)
    y = np.zeros_like(x)
    kernel((3,), (128,), (x, y), shared_mem=128 * 4)
    np.testing.assert_array_equal(y, x.reshape(3, 128)[:, ::-1].ravel())
    with pytest.raises(RuntimeError, match="shared memory"):
        kernel((3,), (128,), (x, y), shared_mem=64 * 1024)


def test_large_local_arrays_fit_on_a_fiber_stack() -> None:
    kernel = _load(BARRIERS, "local_array_kernel")["local_array_kernel"]
    out = np.zeros(64)
    kernel((1,), (64,), (out,))
    np.testing.assert_allclose(out, np.arange(2048).sum() * 0.5 + 2048 * np.arange(64))


def test_printf_from_a_kernel(capfd: pytest.CaptureFixture) -> None:
    kernel = _load(BARRIERS, "hello_kernel")["hello_kernel"]
    kernel((2,), (2,), (np.int32(42),))
    lines = capfd.readouterr().out.splitlines()
    assert sorted(lines) == sorted(f"thread {t} of block {b} says 42" for b in range(2) for t in range(2))


def test_atomics() -> None:
    kernel = _load(ATOMICS, "atomics_kernel")["atomics_kernel"]
    labels = np.random.default_rng(2).integers(3, 10, size=5000).astype(np.int32)
    counts, counts_u64 = np.zeros(10, np.int32), np.zeros(10, np.uint64)
    counts_f32, counts_f64 = np.zeros(10, np.float32), np.zeros(10, np.float64)
    minimum, maximum = np.array([100], np.int32), np.array([-100], np.int32)
    minimum_i64, cas_winner, exchanged = np.array([0], np.int64), np.array([-1], np.int32), np.zeros(1, np.int32)
    kernel((4,), (128,), (labels, np.int64(labels.size), counts, counts_u64, counts_f32, counts_f64, minimum,
                          maximum, minimum_i64, cas_winner, exchanged))
    expected = np.bincount(labels, minlength=10)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(counts_u64, expected)
    np.testing.assert_array_equal(counts_f32, expected)
    np.testing.assert_array_equal(counts_f64, expected * 0.5)
    assert (minimum[0], maximum[0], minimum_i64[0]) == (labels.min(), labels.max(), labels.min() - 1000)
    assert 0 <= cas_winner[0] < labels.size and exchanged[0] == 7


def test_arguments_are_checked_against_the_kernel_signature() -> None:
    kernel = _load(TILED_MATMUL, "matmul_kernel<float>")["matmul_kernel<float>"]
    a = np.zeros((4, 4), np.float32)
    good = (a, a, a.copy(), np.int32(4), np.int32(4), np.int32(4))
    assert kernel.parameters == ("*cf", "*cf", "*f", "i", "i", "i")
    kernel((1,), (16, 16), good)
    with pytest.raises(TypeError, match=r"argument 3 .*\(int\): expected np.int32, got 4"):
        kernel((1,), (16, 16), (*good[:3], 4, *good[4:]))
    with pytest.raises(TypeError, match=r"argument 3 .*expected np.int32"):
        kernel((1,), (16, 16), (*good[:3], np.int64(4), *good[4:]))
    with pytest.raises(TypeError, match=r"argument 0 .*expected an array of float32, got float64"):
        kernel((1,), (16, 16), (a.astype(np.float64), *good[1:]))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel((1,), (16, 16), (np.zeros((4, 8), np.float32)[:, ::2], *good[1:]))
    read_only = a.copy()
    read_only.flags.writeable = False
    kernel((1,), (16, 16), (read_only, read_only, a.copy(), *good[3:]))  # const pointers may read it
    with pytest.raises(ValueError, match="read-only"):
        kernel((1,), (16, 16), (a, a, read_only, *good[3:]))
    with pytest.raises(TypeError, match="takes 6 arguments, got 5"):
        kernel((1,), (16, 16), good[:5])


def test_none_is_a_null_pointer_as_in_cupy() -> None:
    """An optional operand (batch norm's relu_output) is passed as None, which CuPy launches as a null
    pointer: cudasim does too."""
    kernel = _load(r"""
__global__ void scale_kernel(const float* factor, float* out, int n) {
    if (threadIdx.x < n) out[threadIdx.x] = factor == nullptr ? -1.0f : out[threadIdx.x] * factor[0];
}""", "scale_kernel")["scale_kernel"]
    out = np.ones(4, np.float32)
    kernel((1,), (4,), (np.full(1, 3.0, np.float32), out, np.int32(4)))
    assert out.tolist() == [3.0] * 4
    kernel((1,), (4,), (None, out, np.int32(4)))
    assert out.tolist() == [-1.0] * 4
    with pytest.raises(TypeError, match="expected a numpy array or None, got list"):
        kernel((1,), (4,), ([3.0], out, np.int32(4)))


def test_invalid_launch_configurations_raise() -> None:
    kernel = _load(BARRIERS, "hello_kernel")["hello_kernel"]
    with pytest.raises(RuntimeError, match="invalid block"):
        kernel((1,), (1025,), (np.int32(0),))
    with pytest.raises(RuntimeError, match="invalid block"):
        kernel((1,), (1, 1, 65), (np.int32(0),))
    with pytest.raises(RuntimeError, match="invalid grid"):
        kernel((0,), (32,), (np.int32(0),))


def test_compile_errors_carry_the_compiler_message() -> None:
    with pytest.raises(runtime.BuildError, match="not_declared_anywhere"):
        _load("__global__ void broken_kernel(float* x) { x[0] = not_declared_anywhere; }", "broken_kernel")


def test_builds_are_cached_by_content(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINICV_CUDASIM_CACHE", str(tmp_path))
    source = "__global__ void fill_kernel(float* x, float v) { x[threadIdx.x] = v; }"
    first = runtime.build("cache_test", source, ["fill_kernel"])
    built_at = first.stat().st_mtime_ns
    assert runtime.build("cache_test", source, ["fill_kernel"]) == first
    assert first.stat().st_mtime_ns == built_at  # not rebuilt
    changed = runtime.build("cache_test", source.replace("= v", "= 2 * v"), ["fill_kernel"])
    assert changed != first and changed.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, changed.name])


def test_extra_compiler_flags_come_from_the_environment(tmp_path) -> None:
    """MINICV_CUDASIM_CXXFLAGS="-g -O0" builds debuggable kernels (a library of their own in the cache)."""
    import os
    import subprocess
    import sys

    script = ("from minicv.kernels.cudasim import runtime; print(runtime.FLAGS[-2:]); "
              "print(runtime.build('flags_test', '__global__ void k(float* x) { x[0] = 1; }', ['k']).name)")
    env = {"MINICV_CUDASIM_CXXFLAGS": "-g -O0", "MINICV_CUDASIM_CACHE": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    assert run.stdout.splitlines()[0] == "('-g', '-O0')"
    library = tmp_path / run.stdout.splitlines()[1]
    assert library.exists() and b".debug_info" in library.read_bytes()  # debug sections: gdb can step
