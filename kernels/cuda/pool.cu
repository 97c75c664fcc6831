// pool.cu: max pooling with argmax indices, and the unpooling kernels that move values along them.
//
// Every kernel has one thread per element it writes (a gather), so none needs atomics for its results and
// each result is the same on every run. Planes are the (n, c) slices of NCHW arrays; a pooling index is
// the flat offset h * W + w inside its plane.
#include "common.cuh"

// Window (oh, ow) of a plane reads the taps x[h, w] with h = top + i*dH, w = left + j*dW (i < kH, j < kW),
// top = oh*sH - pH, left = ow*sW - pW; taps in the -inf padding never win. Like PyTorch, the scan starts at
// the first tap with h >= 0 and w >= 0 with best = -inf and keeps a tap when value > best or value is NaN:
// the first maximum wins a tie, the last NaN wins among NaNs, and a window with nothing above -inf reports
// its start tap (even when dilation makes the window miss the input, as PyTorch does).
template <typename T>
__global__ void max_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                          long long* __restrict__ indices, long long count, int H, int W,
                                          int H_out, int W_out, int kH, int kW, int sH, int sW, int pH, int pW,
                                          int dH, int dW) {
    GRID_STRIDE_LOOP(o, count) {
        const int top = o / W_out % H_out * sH - pH;
        const int left = o % W_out * sW - pW;
        const int i_start = top < 0 ? (-top + dH - 1) / dH : 0;
        const int j_start = left < 0 ? (-left + dW - 1) / dW : 0;
        const T* plane = x + o / (static_cast<long long>(H_out) * W_out) * H * W;
        T best = -infinity<T>();
        long long best_index = static_cast<long long>(top + i_start * dH) * W + left + j_start * dW;
        for (int i = i_start; i < kH && top + i * dH < H; ++i) {
            const int h = top + i * dH;
            for (int j = j_start; j < kW && left + j * dW < W; ++j) {
                const int w = left + j * dW;
                const T value = plane[h * W + w];
                if (value > best || isnan(value)) {
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
