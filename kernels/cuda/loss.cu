// loss.cu: softmax cross-entropy per pixel, with class weights, ignore_index and label smoothing.
//
// Logits x (N, C, P), targets (N, P); one thread per pixel (n, p) loops over the C classes, reading
// x[n, c, p] with stride P (neighbouring threads read neighbouring pixels). With eps = label_smoothing,
// log_sum = log sum_c exp(x[c] - max) and lp[c] = (x[c] - max) - log_sum (log-softmax, the logsumexp
// max + log_sum never rounded as a whole: the forward keeps stats = (max, log_sum) for the backward):
//
//   loss      = (1 - eps) * -weight[t] * lp[t]  +  eps / C * -sum_c weight[c] * lp[c]
//   dloss/dx[c] = (1 - eps) * weight[t] * (softmax[c] - [c == t])  +  eps / C * (softmax[c] * sum(weight) - weight[c])
//
// A pixel whose target is ignore_index has zero loss and zero gradient; any other target outside [0, C)
// is reported (and its pixel skipped). The eps terms are skipped at eps = 0, as PyTorch does, so that a
// -inf logit cannot turn 0 * inf into NaN.
#include "common.cuh"

// Which pixels count: returns false for an ignored or (reported) out-of-range target.
__device__ __forceinline__ bool valid_target(long long target, int C, long long ignore_index, long long pixel,
                                             long long* first_bad) {
    if (target == ignore_index) return false;
    if (target < 0 || target >= C) {
        report_bad_position(first_bad, pixel);
        return false;
    }
    return true;
}

template <typename T>
__global__ void softmax_cross_entropy_forward_kernel(const T* __restrict__ x, const long long* __restrict__ target,
                                                     const T* __restrict__ weight, T* __restrict__ loss,
                                                     T* __restrict__ stats, long long count, int C, long long P,
                                                     long long ignore_index, T label_smoothing,
                                                     long long* first_bad) {
    GRID_STRIDE_LOOP(pixel, count) {
        const T* logits = x + pixel / P * C * P + pixel % P;  // logits[c * P] is x[n, c, p]
        T largest = -infinity<T>();  // stable: every exp(x - max) <= 1
        for (int c = 0; c < C; ++c) {
            const T value = logits[c * P];
            if (value > largest || isnan(value)) largest = value;  // a NaN sticks, as in the spec (max() drops it)
        }
        T sum = 0;
        for (int c = 0; c < C; ++c) sum += exp(logits[c * P] - largest);
        const T log_sum = log(sum);
        stats[pixel] = largest;
        stats[count + pixel] = log_sum;

        const long long t = target[pixel];
        if (!valid_target(t, C, ignore_index, pixel, first_bad)) {
            loss[pixel] = 0;
            continue;
        }
        T result = (1 - label_smoothing) * -weight[t] * ((logits[t * P] - largest) - log_sum);
        if (label_smoothing > 0) {
            T smooth = 0;
            for (int c = 0; c < C; ++c) smooth -= weight[c] * ((logits[c * P] - largest) - log_sum);
            result += label_smoothing / C * smooth;
        }
        loss[pixel] = result;
    }
}

template <typename T>
__global__ void softmax_cross_entropy_backward_kernel(const T* __restrict__ x, const long long* __restrict__ target,
                                                      const T* __restrict__ weight, const T* __restrict__ stats,
                                                      const T* __restrict__ g, T* __restrict__ gx, long long count,
                                                      int C, long long P, long long ignore_index,
                                                      T label_smoothing, long long* first_bad) {
    GRID_STRIDE_LOOP(pixel, count) {
        const long long offset = pixel / P * C * P + pixel % P;  // of x[n, 0, p] and gx[n, 0, p]
        const long long t = target[pixel];
        if (!valid_target(t, C, ignore_index, pixel, first_bad)) {
            for (int c = 0; c < C; ++c) gx[offset + c * P] = 0;  // exactly 0, even where g is inf or NaN
            continue;
        }
        T weight_sum = 0;
        if (label_smoothing > 0)
            for (int c = 0; c < C; ++c) weight_sum += weight[c];
        const T target_term = (1 - label_smoothing) * weight[t];
        const T largest = stats[pixel], log_sum = stats[count + pixel];
        for (int c = 0; c < C; ++c) {
            const T softmax = exp((x[offset + c * P] - largest) - log_sum);
            T dloss = target_term * (softmax - (c == t ? 1 : 0));
            if (label_smoothing > 0) dloss += label_smoothing / C * (softmax * weight_sum - weight[c]);
            gx[offset + c * P] = g[pixel] * dloss;
        }
    }
}
