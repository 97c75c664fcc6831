#!/usr/bin/env bash
# Issue #4's GPU checks in one call of the device tool, for a session lent an NVIDIA GPU:
#   run: bash benchmarks/gpu_session.sh        (results under $OUT, which the device tool brings back)
# 1. the test suite's cuda-device tests (pytest -m gpu: every conformance test's cuda case, the
#    CUDA-only kernel tests, NVRTC compiling every .cu); 2. the benchmarks on numba and cuda in one run
#    (CUDA events, TF32 off for PyTorch), whose sweep plot is the CPU-vs-GPU time over problem size.
# Each step has a time limit so that whatever finished comes back; commit $OUT/results/* under
# benchmarks/results/ (the file names carry the CPU and the GPU). The limits add up to under the device
# tool's 600 s a call. The benchmarks have ~150 timed rows here (~1.3 s each, plus ~30 s compiling the
# Numba kernels cold), so they get the larger share; cut short, they leave results/*.partial.json.
set -uo pipefail
OUT=${OUT:-/tmp/minicv-gpu}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python -c "import cupy; print('cupy', cupy.__version__)"; } \
    > "$OUT/gpu.txt" 2>&1
pip install --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 || { tail "$OUT/install.log"; exit 1; }
timeout "${PYTEST_LIMIT:-180}" python -m pytest -q -m gpu -rs -p no:cacheprovider > "$OUT/pytest-gpu.log" 2>&1
echo "pytest exit $?" >> "$OUT/pytest-gpu.log"
timeout "${BENCH_LIMIT:-400}" python -m benchmarks --device numba --device cuda --out "$OUT/results" \
    > "$OUT/bench.log" 2>&1
echo "bench exit $?" >> "$OUT/bench.log"
tail -n 3 "$OUT/pytest-gpu.log" "$OUT/bench.log"
