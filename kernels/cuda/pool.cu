// pool.cu: max pooling with argmax indices, and the unpooling kernels that move values along them.
//
// Every kernel has one thread per element it writes (a gather), so none needs atomics for its results and
// each result is the same on every run. Planes are the (n, c) slices of NCHW arrays; a pooling index is
// the flat offset h * W + w inside its plane.
#include "common.cuh"

// Window (oh, ow) of a plane reads the taps x[h, w] with h = oh*sH - pH + i*dH, w = ow*sW - pW + j*dW
// (i < kH, j < kW), skipping those outside the input (the -inf padding never wins). Scanning row-major,
// a tap wins when value > best or value is NaN (PyTorch's rule): the first maximum wins a tie and the
// last NaN wins among NaNs; a window of -inf reports its first tap inside the input.
template <typename T>
__global__ void max_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                          long long* __restrict__ indices, long long count, int H, int W,
                                          int H_out, int W_out, int kH, int kW, int sH, int sW, int pH, int pW,
                                          int dH, int dW) {
    GRID_STRIDE_LOOP(o, count) {
        const int ow = o % W_out;
        const int oh = o / W_out % H_out;
        const T* plane = x + o / (static_cast<long long>(H_out) * W_out) * H * W;
        T best = -infinity<T>();
        long long best_index = -1;
        for (int i = 0; i < kH; ++i) {
            const int h = oh * sH - pH + i * dH;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < kW; ++j) {
                const int w = ow * sW - pW + j * dW;
                if (w < 0 || w >= W) continue;
                const T value = plane[h * W + w];
                if (best_index < 0 || value > best || isnan(value)) {
                    best = value;
                    best_index = h * W + w;
                }
            }
        }
        y[o] = best;
        indices[o] = best_index;
    }
}

// max_unpool2d forward: out[plane, indices[e]] = values[e], out zero-filled beforehand. A duplicate index
// keeps one of its values (which one depends on scheduling, as in PyTorch).
template <typename T>
__global__ void unpool_scatter_kernel(const T* __restrict__ values, const long long* __restrict__ indices,
                                      T* __restrict__ out, long long count, long long in_plane_size,
                                      long long out_plane_size, long long* first_bad) {
    GRID_STRIDE_LOOP(e, count) {
        const long long index = indices[e];
        if (index < 0 || index >= out_plane_size) {
            report_bad_position(first_bad, e);
            continue;
        }
        out[e / in_plane_size * out_plane_size + index] = values[e];
    }
}

// max_pool2d backward as a gather: gx[plane, h, w] = sum of gy[plane, oh, ow] over the windows (oh, ow)
// that contain (h, w) and chose it (indices[plane, oh, ow] == h*W + w). Tap i of the window rows
// oh = (h + pH - i*dH) / sH contains row h; windows are visited in row-major order, the order in which
// PyTorch's scatter adds them.
template <typename T>
__global__ void max_pool2d_backward_kernel(const T* __restrict__ gy, const long long* __restrict__ indices,
                                           T* __restrict__ gx, long long count, int H, int W, int H_out,
                                           int W_out, int kH, int kW, int sH, int sW, int pH, int pW, int dH,
                                           int dW) {
    GRID_STRIDE_LOOP(e, count) {
        const int w = e % W;
        const int h = e / W % H;
        const long long plane_offset = e / (static_cast<long long>(H) * W) * H_out * W_out;
        T sum = 0;
        for (int i = kH - 1; i >= 0; --i) {
            const int row = h + pH - i * dH;  // oh * sH
            if (row < 0 || row % sH != 0 || row / sH >= H_out) continue;
            for (int j = kW - 1; j >= 0; --j) {
                const int col = w + pW - j * dW;  // ow * sW
                if (col < 0 || col % sW != 0 || col / sW >= W_out) continue;
                const long long o = plane_offset + row / sH * W_out + col / sW;
                if (indices[o] == h * W + w) sum += gy[o];
            }
        }
        gx[e] = sum;
    }
}

// The range check of max_pool2d_backward_kernel, which skips indices it never meets.
__global__ void find_bad_index_kernel(const long long* __restrict__ indices, long long count,
                                      long long plane_size, long long* first_bad) {
    GRID_STRIDE_LOOP(e, count) {
        if (indices[e] < 0 || indices[e] >= plane_size) report_bad_position(first_bad, e);
    }
}

// max_unpool2d backward: out[e] = g[plane, indices[e]] (0 where the index is out of range).
template <typename T>
__global__ void unpool_gather_kernel(const T* __restrict__ g, const long long* __restrict__ indices,
                                     T* __restrict__ out, long long count, long long in_plane_size,
                                     long long g_plane_size, long long* first_bad) {
    GRID_STRIDE_LOOP(e, count) {
        const long long index = indices[e];
        if (index < 0 || index >= g_plane_size) {
            report_bad_position(first_bad, e);
            out[e] = 0;
            continue;
        }
        out[e] = g[e / in_plane_size * g_plane_size + index];
    }
}
