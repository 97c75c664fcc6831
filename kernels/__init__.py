"""minicv.kernels: every hand-written kernel, and nothing else.

A kernel is a plain function on raw arrays (numpy.ndarray, or cupy.ndarray on the GPU). It knows
nothing of Tensor or autograd and checks nothing beyond what protects memory: the engine
(minicv.functional) validates arguments and works out output shapes once, then calls the kernels of
the tensor's device. Every device supplies the same table, with the same signatures; ``numpy`` is the
specification the others are tested against.

Conventions: arrays are C-contiguous, float32 or float64 (all operands of one call share a dtype);
indices and targets are int64. Spatial hyper-parameters are ``(h, w)`` pairs of ints. Batched NCHW
only: the engine unsqueezes unbatched inputs.

The kernel table (the registry of ops, ``minicv/ops.py``, lists which op runs on which kernels; the
engine checks every device's table against it, as kernels never import the engine):

conv2d_forward(x, w, stride, padding, dilation, groups) -> y
    x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW) -> y (N, C_out, H_out, W_out), no bias.
    Cross-correlation with symmetric zero padding.
conv2d_backward_input(gy, w, x_shape, stride, padding, dilation, groups) -> gx
    The gradient of conv2d_forward with respect to x, of shape x_shape. With the same arguments this
    is also the forward of conv_transpose2d (x_shape carries output_padding). In both backward
    kernels gy's spatial size is authoritative (it need not follow from x_shape when
    output_padding >= stride, which dilation allows).
    In all three the engine passes no stride past size + 2p - d(k-1) of x (x_shape) along its axis: a
    larger one leaves the same single output there, and the kernels may size buffers by the stride.
conv2d_backward_weight(x, gy, w_shape, stride, padding, dilation, groups) -> gw
    The gradient of conv2d_forward with respect to w, of shape w_shape.

max_pool2d_forward(x, kernel_size, stride, padding, dilation, out_hw) -> (y, indices)
    -inf padding; ties go to the first maximum in row-major scan order; NaN propagates (the last NaN
    wins). indices (int64, shape of y) are flat h*W + w offsets in each unpadded (n, c) input plane.
unpool_scatter(values, indices, out_hw, pool=None) -> out
    out (N, C, *out_hw) is zero but for out[n, c].flat[indices[n, c, i, j]] = values[n, c, i, j].
    pool=None: max_unpool2d forward; duplicate indices overwrite (PyTorch's semantics).
    pool=(kernel_size, stride, padding, dilation) of the max-pool that made the indices: max_pool2d
    backward; values at duplicate indices are summed, and a kernel may instead gather, for each output
    element, from the pooling windows that cover it. The indices are then max_pool2d_forward's own:
    a window lying wholly in the padding (dilation allows one) depends on no input, so the engine
    zeroes its value and index first.
    Raises IndexError naming the first out-of-range index (a device that gathers with pool given reads
    no index out of bounds and may skip that check); never writes out of bounds.
unpool_gather(g, indices) -> out
    out[n, c, i, j] = g[n, c].flat[indices[n, c, i, j]]: max_unpool2d backward. Raises IndexError on
    an out-of-range index; never reads out of bounds.

upsample_nearest_forward(x, src_h, src_w) -> y
    y[n, c, i, j] = x[n, c, src_h[i], src_w[j]]. src_h, src_w (int64, non-decreasing, in range) are
    worked out by the engine, which is where 'nearest' and 'nearest-exact' differ.
upsample_nearest_backward(gy, src_h, src_w, in_hw) -> gx
    The exact adjoint: gx[n, c, h, w] = sum of gy[n, c, i, j] over src_h[i] == h and src_w[j] == w.

softmax_cross_entropy_forward(x, target, weight, ignore_index, label_smoothing) -> (loss, stats)
    x (N, C, P) logits, target (N, P) int64, weight (C,) in x's dtype. With lp = log_softmax over C,
    eps = label_smoothing and valid = target != ignore_index:
      loss[n, p] = valid * ((1 - eps) * -weight[t] * lp[t] + eps / C * -sum_c weight[c] * lp[c])
    stats (2, N, P), kept for the backward: stats[0] = max_c x[n, c, p] and stats[1] = log sum_c
    exp(x[n, c, p] - stats[0]); logsumexp is their sum. They stay apart so that the backward's
    log_softmax, (x - stats[0]) - stats[1], is as exact as PyTorch's: a rounded logsumexp of large
    logits (ulp(40) ~ 4e-6 in float32) would shift every probability. An invalid target that is out
    of [0, C) raises IndexError; no kernel reads out of bounds.
softmax_cross_entropy_backward(x, target, weight, ignore_index, label_smoothing, stats, g) -> gx
    gx[n, c, p] = g[n, p] * valid * ((1 - eps) * weight[t] * (softmax[c] - [c == t])
                                     + eps / C * (softmax[c] * sum(weight) - weight[c]))
    g (N, P) is the upstream gradient of each pixel's loss (the engine folds the reduction into it).

batch_norm_forward(x, mean, var, weight, bias, eps, training) -> (y, mean, var)
    x (N, C, P) (the engine views NC, NCL, NCHW, ... input so); weight, bias, mean, var (C,) in x's
    dtype (the engine passes ones and zeros for an absent weight and bias). Over the M = N * P values
    of each channel, with inv_std = 1 / sqrt(var + eps):
      y[n, c, p] = (x[n, c, p] - mean[c]) * inv_std[c] * weight[c] + bias[c]
    training: mean and var are the batch's own (var biased: divided by M), computed by the kernel and
    returned (the given ones are not read and may be None); otherwise the given (running) ones are used
    and returned. The statistics are accumulated in float64 in two passes (mean, then the mean of
    (x - mean)^2): the variance of nearly equal values is ill-conditioned, and E[x^2] - E[x]^2 would
    cancel away its digits. The running-statistics update (momentum, unbiased variance) is the engine's.
batch_norm_backward(gy, x, mean, var, weight, eps, training) -> (gx, gweight, gbias)
    gy, x (N, C, P); mean, var as the forward returned them. With x_hat = (x - mean) * inv_std:
      gbias = sum gy and gweight = sum gy * x_hat over (n, p), accumulated in float64;
      gx = weight * inv_std * gy                                         (not training)
      gx = weight * inv_std * (gy - gbias / M - x_hat * gweight / M)     (training: the batch
    statistics depend on x too). The gradients of the running mean and var are not computed.
"""
