// batchnorm.cu: batch normalisation of x (N, C, P) over the M = N * P values of each channel.
//
//   inv_std = 1 / sqrt(var + eps),  y = (x - mean) * inv_std * weight + bias
//   gbias = sum gy,  gweight = sum gy * (x - mean) * inv_std
//   gx = weight * inv_std * gy                                             (eval)
//   gx = weight * inv_std * (gy - gbias / M - (x - mean) * inv_std * gweight / M)      (training)
//
// Two kinds of kernel. The per-channel sums (the batch statistics; the backward's gbias and gweight)
// run one block per channel, grid-stride over the channels: each thread sums a strided share of the
// channel's values in double, then the block adds the THREADS partial sums in a shared-memory tree.
// The order of every addition is fixed by the block size alone: no atomics, the same result on every
// run. The variance takes two passes (the mean first, then the mean of (x - mean)^2), never
// E[x^2] - E[x]^2, which cancels away the digits of nearly equal values. The elementwise outputs (y,
// gx) run one thread per element with GRID_STRIDE_LOOP, in T (the per-channel factors too: a double
// sqrt per element would be slow on GPUs with little double throughput), and centre x on the rounded
// mean, then on low[c], the part of the batch mean that rounding it to T dropped (kernels/numpy/
// batchnorm.py says why); the backward finds low again from x, as the mean of x - mean.
//
// Fused ReLU (batch_norm_relu): the transform kernel clamps y at 0 when relu is set (NaN stays NaN);
// the two backward kernels take relu_output, the y of such a forward, or a null pointer: when it is
// given, gy counts as 0 wherever relu_output is not positive (NaN included), in the sums and in gx.
#include "common.cuh"

constexpr int THREADS = 256;  // per block of the per-channel kernels: a power of two, for the tree

// The sum of `value` over the threads of the block, returned to every thread. `partial` is THREADS
// doubles of shared memory, free again when this returns.
__device__ __forceinline__ double block_sum(double value, double* partial) {
    partial[threadIdx.x] = value;
    __syncthreads();
    for (int stride = THREADS / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    const double total = partial[0];
    __syncthreads();  // every thread has read the total before the next call overwrites partial
    return total;
}

// Element i of channel c: x[n, c, p] for i = n * P + p.
__device__ __forceinline__ long long channel_offset(long long i, int C, int c, long long P) {
    return (i / P * C + c) * P + i % P;
}

// mean[c], var[c] (biased) of the batch, for every channel c. Launched with THREADS threads a block.
template <typename T>
__global__ void batch_norm_stats_kernel(const T* __restrict__ x, T* __restrict__ mean, T* __restrict__ var,
                                        T* __restrict__ low, int C, long long M, long long P) {
    __shared__ double partial[THREADS];
    for (int c = blockIdx.x; c < C; c += gridDim.x) {  // every thread of a block takes the same channels
        double sum = 0;
        for (long long i = threadIdx.x; i < M; i += THREADS) sum += x[channel_offset(i, C, c, P)];
        const double channel_mean = block_sum(sum, partial) / M;
        double squares = 0;
        for (long long i = threadIdx.x; i < M; i += THREADS) {
            const double deviation = x[channel_offset(i, C, c, P)] - channel_mean;
            squares += deviation * deviation;
        }
        const double channel_var = block_sum(squares, partial) / M;
        if (threadIdx.x == 0) {
            mean[c] = channel_mean;
            var[c] = channel_var;
            low[c] = channel_mean - static_cast<double>(mean[c]);
        }
    }
}

// y = (x - mean) * (weight * inv_std) + bias, then max(y, 0) when relu is set; one thread per element.
template <typename T>
__global__ void batch_norm_transform_kernel(const T* __restrict__ x, const T* __restrict__ mean,
                                            const T* __restrict__ var, const T* __restrict__ low,
                                            const T* __restrict__ weight, const T* __restrict__ bias,
                                            T* __restrict__ y, long long count, int C, long long P, double eps,
                                            int relu) {
    GRID_STRIDE_LOOP(i, count) {
        const int c = static_cast<int>(i / P % C);
        const T scale = weight[c] / sqrt(var[c] + static_cast<T>(eps));
        const T value = ((x[i] - mean[c]) - low[c]) * scale + bias[c];
        y[i] = relu && value < 0 ? static_cast<T>(0) : value;  // value < 0, not fmax: NaN stays NaN
    }
}

// gy[i], or 0 where the ReLU's output relu_output[i] (when given) is not positive: ReLU's backward.
template <typename T>
__device__ __forceinline__ T relu_masked(const T* __restrict__ gy, const T* __restrict__ relu_output, long long i) {
    return relu_output == nullptr || relu_output[i] > 0 ? gy[i] : static_cast<T>(0);
}

// gbias[c] = sum gy and gweight[c] = sum gy * (x - batch mean) * inv_std, for every channel c, and
// low[c] (training: the mean of x - mean, what the rounded mean dropped; eval: 0). THREADS a block.
template <typename T>
__global__ void batch_norm_backward_reduce_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                                  const T* __restrict__ mean, const T* __restrict__ var,
                                                  const T* __restrict__ relu_output,
                                                  T* __restrict__ gweight, T* __restrict__ gbias, T* __restrict__ low,
                                                  int C, long long M, long long P, double eps, int training) {
    __shared__ double partial[THREADS];
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double sum = 0, weighted = 0, centred = 0;
        for (long long i = threadIdx.x; i < M; i += THREADS) {
            const long long offset = channel_offset(i, C, c, P);
            const double deviation = static_cast<double>(x[offset]) - mean[c];
            const double g = relu_masked(gy, relu_output, offset);
            sum += g;
            weighted += g * deviation;
            centred += deviation;
        }
        const double channel_sum = block_sum(sum, partial);
        const double channel_weighted = block_sum(weighted, partial);
        const double channel_low = training ? block_sum(centred, partial) / M : 0.0;
        if (threadIdx.x == 0) {
            gbias[c] = channel_sum;
            gweight[c] = (channel_weighted - channel_low * channel_sum) / sqrt(static_cast<double>(var[c]) + eps);
            low[c] = channel_low;
        }
    }
}

// gx, one thread per element; gweight and gbias as the reduce kernel wrote them (read in training only).
template <typename T>
__global__ void batch_norm_backward_input_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                                 const T* __restrict__ mean, const T* __restrict__ var,
                                                 const T* __restrict__ relu_output,
                                                 const T* __restrict__ low, const T* __restrict__ weight,
                                                 const T* __restrict__ gweight, const T* __restrict__ gbias,
                                                 T* __restrict__ gx, long long count, int C, long long P, double eps,
                                                 int training) {
    const T M = static_cast<T>(count / C);
    GRID_STRIDE_LOOP(i, count) {
        const int c = static_cast<int>(i / P % C);
        const T inv_std = 1 / sqrt(var[c] + static_cast<T>(eps));
        const T scale = weight[c] * inv_std;
        if (training) {
            const T mean_gy = gbias[c] / M;
            const T projection = inv_std * gweight[c] / M;
            gx[i] = scale * (relu_masked(gy, relu_output, i) - mean_gy - ((x[i] - mean[c]) - low[c]) * projection);
        } else {
            gx[i] = scale * relu_masked(gy, relu_output, i);
        }
    }
}
