"""minicv.kernels: every hand-written kernel, and nothing else.

A kernel is a plain function on raw arrays (numpy.ndarray, or cupy.ndarray on the GPU). It knows
nothing of Tensor or autograd and checks nothing beyond what protects memory: the engine
(minicv.functional) validates arguments and works out every output shape once, then calls the kernels
of the tensor's device. Every device supplies the same table, with the same signatures; ``numpy`` is
the specification the others are tested against.

Each decision has one home, the engine; kernels re-derive nothing:
- Output sizes: every kernel is handed the size of what it returns (an ``out_hw``, a ``*_shape``, the
  length of ``src_h``/``src_w``, or the shape of an operand it is handed, such as gy), worked out by the
  engine's shape helpers (``conv_output_hw``, ``conv_transpose_output_hw``, ``pooled_size``,
  ``unpool_output_size``, interpolate's source indices). A kernel sizes its result and its loops by what
  it is handed and never recomputes a size from the hyper-parameters; whatever it is handed it reads
  and writes nothing out of bounds (taps outside the input read the padding value: 0, or -inf when
  pooling).
- Empty tensors: the engine launches no kernel on an empty operand or for an empty result (it makes the
  zeros itself); kernels need not handle them (the CUDA launchers still skip a grid of no blocks, which
  CUDA refuses).
- Arrays arrive C-contiguous and of one float dtype (int64 indices and targets); hyper-parameters
  arrive as ``(h, w)`` tuples of Python ints, already clamped (conv strides: below). A kernel that
  copies or converts anyway does so only where a mistaken caller would otherwise make it touch memory
  outside its arrays, and says so where it does.
- Batched NCHW only: the engine runs an unbatched (C, H, W) input as a batch of one, for every op the
  same way (``minicv.functional.basic.batched``: unsqueeze and squeeze graph nodes).

The kernel table (the registry of ops, ``minicv/ops.py``, lists which op runs on which kernels; the
engine checks every device's table against it, as kernels never import the engine):

conv2d_forward(x, w, out_hw, stride, padding, dilation, groups) -> y
    x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW) -> y (N, C_out, *out_hw), no bias.
    Cross-correlation with symmetric zero padding (taps past the padded input read 0 too). out_hw is
    the engine's conv_output_hw, or, for the input gradient of conv_transpose2d, x's own (H, W), which
    is smaller than gy's conv2d when output_padding >= stride (x only fed its first rows/columns).
conv2d_backward_input(gy, w, x_shape, stride, padding, dilation, groups) -> gx
    The gradient of conv2d_forward with respect to x, of shape x_shape. With the same arguments this
    is also the forward of conv_transpose2d (x_shape carries output_padding). In both backward
    kernels gy's spatial size is authoritative (it need not follow from x_shape when
    output_padding >= stride, which dilation allows).
    In all three the engine passes no stride past size + 2p - d(k-1) of x (x_shape) along its axis: a
    larger one leaves the same single output there, and the kernels may size buffers by the stride.
conv2d_backward_weight(x, gy, w_shape, stride, padding, dilation, groups) -> gw
    The gradient of conv2d_forward with respect to w, of shape w_shape; gy's spatial size is the
    number of windows summed over.

max_pool2d_forward(x, kernel_size, stride, padding, dilation, out_hw) -> (y, indices)
    y, indices (N, C, *out_hw): out_hw is the engine's pooled_size, with ceil_mode's last window, which
    may run past the padded input (taps there read -inf). -inf padding; ties go to the first maximum in
    row-major scan order; NaN propagates (the last NaN wins). indices (int64, shape of y) are flat
    h*W + w offsets in each unpadded (n, c) input plane.
unpool_scatter(values, indices, out_hw, pool=None) -> out
    out (N, C, *out_hw) is zero but for out[n, c].flat[indices[n, c, i, j]] = values[n, c, i, j].
    out_hw is the engine's: max_unpool2d's unpool_output_size, or the pooled input's (H, W).
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
    y (N, C, len(src_h), len(src_w)), y[n, c, i, j] = x[n, c, src_h[i], src_w[j]]. src_h, src_w (int64,
    non-decreasing, in range) are worked out by the engine, which is where the output size and
    'nearest' / 'nearest-exact' are decided.
upsample_nearest_backward(gy, src_h, src_w, in_hw) -> gx
    gx (N, C, *in_hw), the exact adjoint: gx[n, c, h, w] = sum of gy[n, c, i, j] over src_h[i] == h and
    src_w[j] == w.

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

batch_norm_forward(x, mean, var, weight, bias, eps, training, relu) -> (y, mean, var)
    x (N, C, P) (the engine views NC, NCL, NCHW, ... input so); weight, bias, mean, var (C,) in x's
    dtype (the engine passes ones and zeros for an absent weight and bias). Over the M = N * P values
    of each channel, with inv_std = 1 / sqrt(var + eps):
      y[n, c, p] = (x[n, c, p] - mean[c]) * inv_std[c] * weight[c] + bias[c]
    training: mean and var are the batch's own (var biased: divided by M), computed by the kernel and
    returned (the given ones are not read and may be None); otherwise the given (running) ones are used
    and returned. The statistics are accumulated in float64 in two passes (mean, then the mean of
    (x - mean)^2): the variance of nearly equal values is ill-conditioned, and E[x^2] - E[x]^2 would
    cancel away its digits. The running-statistics update (momentum, unbiased variance) is the engine's.
    relu (bool): y = max(y, 0) instead, NaN staying NaN as in np.maximum (batch_norm_relu: BatchNorm2d
    then ReLU, in the pass that writes y rather than a pass of its own).
batch_norm_backward(gy, x, mean, var, weight, eps, training, relu_output) -> (gx, gweight, gbias)
    gy, x (N, C, P); mean, var as the forward returned them. relu_output: None, or the y of a relu=True
    forward: gy is then taken as 0 wherever relu_output <= 0 or NaN (ReLU's backward, from the saved
    output: a y recomputed from x could differ in its last bit and flip the mask) before anything else
    below, so gbias, gweight and gx all see the masked gy. With x_hat = (x - mean) * inv_std:
      gbias = sum gy and gweight = sum gy * x_hat over (n, p), accumulated in float64;
      gx = weight * inv_std * gy                                         (not training)
      gx = weight * inv_std * (gy - gbias / M - x_hat * gweight / M)     (training: the batch
    statistics depend on x too). The gradients of the running mean and var are not computed.
"""
