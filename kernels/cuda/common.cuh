// common.cuh: what the memory-bound kernels (pool.cu, upsample.cu, loss.cu) share. (launch.read_source
// inlines it once per file, hence no include guard.)

// Walks the elements [0, count) with every thread of the grid: element i, then i + (all threads), ...
// With at least `count` threads this is one element per thread; with fewer, the same code still covers
// them all, which lets cudasim run a few long-lived threads instead of millions of short ones.
#define GRID_STRIDE_LOOP(i, count)                                                                  \
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < (count); \
         i += static_cast<long long>(gridDim.x) * blockDim.x)

// +infinity in T, from its bit pattern: NVRTC has no INFINITY macro.
template <typename T>
__device__ __forceinline__ T infinity();
template <>
__device__ __forceinline__ float infinity<float>() {
    return __int_as_float(0x7f800000);
}
template <>
__device__ __forceinline__ double infinity<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

// Index checks: a kernel that meets an out-of-range index skips it and records its position here; the
// host reads back the smallest position (the first bad index in row-major order) and raises.
__device__ __forceinline__ void report_bad_position(long long* first_bad, long long position) {
    atomicMin(first_bad, position);
}
