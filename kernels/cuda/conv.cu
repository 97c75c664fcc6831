// conv.cu: 2-D convolution (NCHW, groups, stride, padding, dilation) as three implicit GEMMs.
//
// For one group g, each kernel computes a matrix product C[i][j] = sum_k A[i][k] * B[k][j] without ever
// materialising its operands: A and B are *views* that work out, for an index pair, which element of x,
// w or gy they stand for (zero where the index falls into the padding). docs/kernels/cuda_conv.md has
// the three GEMMs side by side.
//
//   kernel                  C (rows x columns)                  k runs over             A          B
//   forward                 y:  co x (n, oh, ow)                (ci, kh, kw)            w          patches of x
//   backward-input          gx: ci x (n, h, w)                  (co, kh, kw)            w^T        gathered gy
//   backward-weight         gw: co x (ci, kh, kw)               (n, oh, ow)             gy         patches of x
//
// Each block owns a TILE_M x TILE_N tile of C and each thread a 4 x 4 sub-tile of it, accumulated in
// registers while TILE_K-deep slices of A and B pass through shared memory. Every element of C is
// written by exactly one thread, so there are no atomics and the result does not depend on scheduling.
// backward-weight has a long k (every output pixel of the batch) and a small C, so it may split k over
// blocks; each split writes its own partial C to a workspace and sum_k_splits_kernel adds the partials
// in a fixed order.

#include "common.cuh"

constexpr int TILE_M = 64;                     // rows of C per block
constexpr int TILE_N = 64;                     // columns of C per block
constexpr int TILE_K = 16;                     // depth of one slice of A and B in shared memory
constexpr int BLOCK_X = 16;                    // the block is BLOCK_X x BLOCK_Y threads
constexpr int BLOCK_Y = 16;
constexpr int BLOCK_THREADS = BLOCK_X * BLOCK_Y;
constexpr int ROWS_PER_THREAD = TILE_M / BLOCK_Y;
constexpr int COLS_PER_THREAD = TILE_N / BLOCK_X;

// The shape of one convolution x (N, C_in, H, W) * w (C_out, C_in/groups, kH, kW) -> y (N, C_out,
// H_out, W_out). Every kernel takes it as the same list of int arguments.
struct Conv {
    int N, C_in, H, W, C_out, H_out, W_out, kH, kW, sH, sW, pH, pW, dH, dW, groups;

    __device__ int in_per_group() const { return C_in / groups; }
    __device__ int out_per_group() const { return C_out / groups; }
    __device__ int taps() const { return in_per_group() * kH * kW; }  // (ci, kh, kw) of one filter
};

#define CONV_PARAMS                                                                                     \
    int N, int C_in, int H, int W, int C_out, int H_out, int W_out, int kH, int kW, int sH, int sW,     \
        int pH, int pW, int dH, int dW, int groups
#define CONV_ARGS {N, C_in, H, W, C_out, H_out, W_out, kH, kW, sH, sW, pH, pW, dH, dW, groups}

// ----------------------------------------------------------------------------------------------------
// Views. A view is read as view(row, k) (for B, "row" is the column j of C) and is only ever asked for
// indices inside the GEMM; it returns zero where the index falls into the padding. k_contiguous says
// which index walks memory contiguously, so that the tile loader hands consecutive addresses to
// consecutive threads.

// An NCHW tensor as a matrix: row = channel of the group, column = pixel (n, h, w) of the batch.
// Read as A (gy in backward-weight) and written as C (y in forward, gx in backward-input).
template <typename P>
struct ChannelByPixel {
    P* data;
    int C, H, W;   // of the whole tensor
    int channel0;  // first channel of the group
    static constexpr bool k_contiguous = true;

    __device__ P& operator()(int channel, int pixel) const {
        const int w = pixel % W, h = pixel / W % H, n = pixel / W / H;
        return data[((static_cast<long long>(n) * C + channel0 + channel) * H + h) * W + w];
    }
};

// A weight tensor (C_out, C_in/groups, kH, kW) as the matrix co x (ci, kh, kw) of one group.
// Read as A in forward, written as C (a partial sum of gw) in backward-weight.
template <typename P>
struct FilterByTap {
    P* data;
    int taps;      // (C_in/groups) * kH * kW
    int channel0;  // first output channel of the group
    static constexpr bool k_contiguous = true;

    __device__ P& operator()(int co, int tap) const {
        return data[static_cast<long long>(channel0 + co) * taps + tap];
    }
};

// The implicit im2col matrix of x: pixel (n, oh, ow) of y by tap (ci, kh, kw) of a filter,
// x[n, ci, oh*sH - pH + kh*dH, ow*sW - pW + kw*dW], zero in the padding.
template <typename T>
struct InputPatches {
    const T* x;
    Conv conv;
    int channel0;  // first input channel of the group
    static constexpr bool k_contiguous = false;  // neighbouring pixels are neighbours in x

    __device__ T operator()(int pixel, int tap) const {
        const Conv& c = conv;
        const int ow = pixel % c.W_out, oh = pixel / c.W_out % c.H_out, n = pixel / c.W_out / c.H_out;
        const int kw = tap % c.kW, kh = tap / c.kW % c.kH, ci = tap / c.kW / c.kH;
        const int h = oh * c.sH - c.pH + kh * c.dH;
        const int w = ow * c.sW - c.pW + kw * c.dW;
        if (h < 0 || h >= c.H || w < 0 || w >= c.W) return T(0);
        return x[((static_cast<long long>(n) * c.C_in + channel0 + ci) * c.H + h) * c.W + w];
    }
};

// The same matrix read the other way round: tap by pixel (B of backward-weight).
template <class View>
struct Transposed {
    View view;
    static constexpr bool k_contiguous = !View::k_contiguous;

    __device__ auto operator()(int row, int k) const { return view(k, row); }
};

// w^T of one group: input channel ci by (co, kh, kw), w[co, ci, kh, kw] (A of backward-input).
template <typename T>
struct FilterTransposed {
    const T* w;
    Conv conv;
    int channel0;  // first output channel of the group
    static constexpr bool k_contiguous = true;  // (kh, kw) runs are contiguous in w

    __device__ T operator()(int ci, int k) const {
        const int window = conv.kH * conv.kW;
        const int co = k / window, kernel_offset = k % window;
        return w[(static_cast<long long>(channel0 + co) * conv.in_per_group() + ci) * window + kernel_offset];
    }
};

// The gather of backward-input: pixel (n, h, w) of x by (co, kh, kw). x[n, ci, h, w] met w[co, ci, kh,
// kw] at output pixel (oh, ow) iff h = oh*sH - pH + kh*dH (and likewise for w), so the entry is
// gy[n, co, oh, ow] when that oh is a whole number inside [0, H_out) (and ow inside [0, W_out)), else zero.
template <typename T>
struct GradOutputGather {
    const T* gy;
    Conv conv;
    int channel0;  // first output channel of the group
    static constexpr bool k_contiguous = false;  // neighbouring pixels of x read neighbours of gy

    __device__ T operator()(int pixel, int k) const {
        const Conv& c = conv;
        const int w = pixel % c.W, h = pixel / c.W % c.H, n = pixel / c.W / c.H;
        const int kw = k % c.kW, kh = k / c.kW % c.kH, co = k / c.kW / c.kH;
        const int oh_strided = h + c.pH - kh * c.dH;
        const int ow_strided = w + c.pW - kw * c.dW;
        if (oh_strided < 0 || ow_strided < 0 || oh_strided % c.sH != 0 || ow_strided % c.sW != 0) return T(0);
        const int oh = oh_strided / c.sH, ow = ow_strided / c.sW;
        if (oh >= c.H_out || ow >= c.W_out) return T(0);
        return gy[((static_cast<long long>(n) * c.C_out + channel0 + co) * c.H_out + oh) * c.W_out + ow];
    }
};

// ----------------------------------------------------------------------------------------------------
// The tiled GEMM shared by the three kernels.

// tile[k][r] = view(row0 + r, k0 + k) for the rows < rows and the k < k_end, zero elsewhere. The tile
// has one column of padding so that k-contiguous loads do not all fall into one shared-memory bank.
template <int TILE_ROWS, typename T, class View>
__device__ void load_tile(T (&tile)[TILE_K][TILE_ROWS + 1], const View& view, int row0, int rows, int k0,
                          int k_end) {
    const int thread = threadIdx.y * BLOCK_X + threadIdx.x;
    for (int e = thread; e < TILE_ROWS * TILE_K; e += BLOCK_THREADS) {
        const int r = View::k_contiguous ? e / TILE_K : e % TILE_ROWS;
        const int k = View::k_contiguous ? e % TILE_K : e / TILE_ROWS;
        const int row = row0 + r, kk = k0 + k;
        tile[k][r] = (row < rows && kk < k_end) ? T(view(row, kk)) : T(0);
    }
}

// C[i][j] = sum over k in [k_begin, k_end) of A(i, k) * B(j, k) for the block's tile of C, i < M, j < N.
// Thread (x, y) owns rows y + BLOCK_Y * r and columns x + BLOCK_X * c of the tile, so that a warp reads
// one row of the B slice and writes neighbouring columns of C.
template <typename T, class AView, class BView, class CStore>
__device__ void block_gemm(const AView& a, const BView& b, const CStore& c, int M, int N, int k_begin,
                           int k_end) {
    __shared__ T a_tile[TILE_K][TILE_M + 1];
    __shared__ T b_tile[TILE_K][TILE_N + 1];
    const int row0 = blockIdx.y * TILE_M, col0 = blockIdx.x * TILE_N;

    T acc[ROWS_PER_THREAD][COLS_PER_THREAD] = {};
    for (int k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        load_tile<TILE_M>(a_tile, a, row0, M, k0, k_end);
        load_tile<TILE_N>(b_tile, b, col0, N, k0, k_end);
        __syncthreads();
        for (int k = 0; k < TILE_K; ++k) {
            T a_col[ROWS_PER_THREAD], b_row[COLS_PER_THREAD];
            for (int r = 0; r < ROWS_PER_THREAD; ++r) a_col[r] = a_tile[k][threadIdx.y + BLOCK_Y * r];
            for (int s = 0; s < COLS_PER_THREAD; ++s) b_row[s] = b_tile[k][threadIdx.x + BLOCK_X * s];
            for (int r = 0; r < ROWS_PER_THREAD; ++r)
                for (int s = 0; s < COLS_PER_THREAD; ++s) acc[r][s] += a_col[r] * b_row[s];
        }
        __syncthreads();  // the slice is consumed before the next one overwrites it
    }
    for (int r = 0; r < ROWS_PER_THREAD; ++r) {
        const int i = row0 + threadIdx.y + BLOCK_Y * r;
        for (int s = 0; s < COLS_PER_THREAD; ++s) {
            const int j = col0 + threadIdx.x + BLOCK_X * s;
            if (i < M && j < N) c(i, j) = acc[r][s];
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// The kernels. Launch with block (BLOCK_X, BLOCK_Y) and grid (ceil(columns / TILE_N), ceil(rows / TILE_M),
// groups); backward-weight has groups * k_splits blocks along z.

// y[n, co, oh, ow] = sum over (ci, kh, kw) of w[co, ci, kh, kw] * x[n, ci, oh*sH - pH + kh*dH, ...]
template <typename T>
__global__ void conv2d_forward_kernel(const T* x, const T* w, T* y, CONV_PARAMS) {
    const Conv conv CONV_ARGS;
    const int g = blockIdx.z;
    const FilterByTap<const T> filters{w, conv.taps(), g * conv.out_per_group()};
    const InputPatches<T> patches{x, conv, g * conv.in_per_group()};
    const ChannelByPixel<T> out{y, conv.C_out, conv.H_out, conv.W_out, g * conv.out_per_group()};
    block_gemm<T>(filters, patches, out, conv.out_per_group(), conv.N * conv.H_out * conv.W_out, 0,
                  conv.taps());
}

// gx[n, ci, h, w] = sum over (co, kh, kw) with an output pixel (oh, ow) of w[co, ci, kh, kw] * gy[n, co, oh, ow]
template <typename T>
__global__ void conv2d_backward_input_kernel(const T* gy, const T* w, T* gx, CONV_PARAMS) {
    const Conv conv CONV_ARGS;
    const int g = blockIdx.z;
    const FilterTransposed<T> filters{w, conv, g * conv.out_per_group()};
    const GradOutputGather<T> gathered{gy, conv, g * conv.out_per_group()};
    const ChannelByPixel<T> grad_in{gx, conv.C_in, conv.H, conv.W, g * conv.in_per_group()};
    block_gemm<T>(filters, gathered, grad_in, conv.in_per_group(), conv.N * conv.H * conv.W, 0,
                  conv.out_per_group() * conv.kH * conv.kW);
}

// gw_partial[split, co, ci, kh, kw] = sum over the split's share of (n, oh, ow) of
// gy[n, co, oh, ow] * x[n, ci, oh*sH - pH + kh*dH, ...]; with k_splits == 1 this is gw itself.
template <typename T>
__global__ void conv2d_backward_weight_kernel(const T* x, const T* gy, T* gw_partial, CONV_PARAMS,
                                              int k_splits) {
    const Conv conv CONV_ARGS;
    const int g = blockIdx.z % conv.groups, split = blockIdx.z / conv.groups;
    const int pixels = conv.N * conv.H_out * conv.W_out;
    // Whole TILE_K slices per split, so that only the last split has a ragged end.
    const int split_depth = (pixels + k_splits * TILE_K - 1) / (k_splits * TILE_K) * TILE_K;
    const int k_begin = min(pixels, split * split_depth), k_end = min(pixels, k_begin + split_depth);

    const ChannelByPixel<const T> grad_out{gy, conv.C_out, conv.H_out, conv.W_out, g * conv.out_per_group()};
    const Transposed<InputPatches<T>> patches{{x, conv, g * conv.in_per_group()}};
    T* partial = gw_partial + static_cast<long long>(split) * conv.C_out * conv.taps();
    const FilterByTap<T> grad_w{partial, conv.taps(), g * conv.out_per_group()};
    block_gemm<T>(grad_out, patches, grad_w, conv.out_per_group(), conv.taps(), k_begin, k_end);
}

// out[i] = partial[0][i] + partial[1][i] + ... in this order (deterministic). A grid-stride launch.
template <typename T>
__global__ void sum_k_splits_kernel(const T* partial, T* out, long long count, int k_splits) {
    GRID_STRIDE_LOOP(i, count) {
        T sum = partial[i];
        for (int s = 1; s < k_splits; ++s) sum += partial[s * count + i];
        out[i] = sum;
    }
}
