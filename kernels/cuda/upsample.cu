// upsample.cu: nearest-neighbour resizing as a gather, and its exact adjoint as a gather too.
//
// The engine works out which input row src_h[i] and column src_w[j] each output pixel copies; here
// nothing depends on how ('nearest' or 'nearest-exact'). One thread per element written, no atomics.
#include "common.cuh"

// y[plane, i, j] = x[plane, src_h[i], src_w[j]]
template <typename T>
__global__ void upsample_nearest_forward_kernel(const T* __restrict__ x, const long long* __restrict__ src_h,
                                                const long long* __restrict__ src_w, T* __restrict__ y,
                                                long long count, int H, int W, int H_out, int W_out) {
    GRID_STRIDE_LOOP(e, count) {
        const int j = e % W_out;
        const int i = e / W_out % H_out;
        const long long plane = e / (static_cast<long long>(H_out) * W_out);
        y[e] = x[plane * H * W + src_h[i] * W + src_w[j]];
    }
}

// gx[plane, h, w] = sum of gy[plane, i, j] over src_h[i] == h and src_w[j] == w. As src_h is
// non-decreasing, the rows i with src_h[i] == h are the run [row_begin[h], row_end[h]) (empty when no
// output row copies h); likewise the columns.
template <typename T>
__global__ void upsample_nearest_backward_kernel(const T* __restrict__ gy, const long long* __restrict__ row_begin,
                                                 const long long* __restrict__ row_end,
                                                 const long long* __restrict__ col_begin,
                                                 const long long* __restrict__ col_end, T* __restrict__ gx,
                                                 long long count, int H, int W, int H_out, int W_out) {
    GRID_STRIDE_LOOP(e, count) {
        const int w = e % W;
        const int h = e / W % H;
        const T* plane = gy + e / (static_cast<long long>(H) * W) * H_out * W_out;
        T sum = 0;
        for (long long i = row_begin[h]; i < row_end[h]; ++i)
            for (long long j = col_begin[w]; j < col_end[w]; ++j) sum += plane[i * W_out + j];
        gx[e] = sum;
    }
}
