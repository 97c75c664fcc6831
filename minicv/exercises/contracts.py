'''What a learner is asked to write: the exercises in the lecture's order, and each kernel's contract.

This is the one place the exercise text lives. ``minicv exercises init`` turns ``CONTRACTS`` into the
docstrings of the learner's stubs and ``EXERCISES`` into their notebooks and README; the grader
grades the kernels in ``LECTURE_ORDER``. The ``>>>`` examples are doctests, run against the
specification by the tests, so a worked example cannot drift from what the grader expects.
'''

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Exercise:
    """One notebook: a module of the learner's package, its kernels, questions and hints."""

    number: int
    title: str
    module: str  # the file the learner edits, without .py (the spec's module of the same name)
    kernels: tuple[str, ...]
    idea: str  # the lecture's idea, one paragraph of markdown
    questions: tuple[str, ...]
    hints: tuple[str, ...]


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        1,
        "Per-pixel softmax cross-entropy",
        "loss",
        ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"),
        "Semantic segmentation gives every pixel a class: the network outputs C scores per pixel and the "
        "loss is a softmax cross-entropy per pixel. Logits arrive as (N, C, P), P pixels per image.",
        (
            "Why must you subtract each pixel's largest logit before `exp`? What does `np.exp(1000.0)` give?",
            "A pixel whose target is `ignore_index` contributes nothing. Which two quantities of the mean "
            "loss does it leave out (the engine divides the summed loss by the summed weight of the valid "
            "pixels)?",
            "Why can the backward recompute the softmax from `stats` instead of storing it?",
        ),
        (
            "`largest = x.max(axis=1)`; `shifted = x - largest[:, None]`; "
            "`log_sum = np.log(np.exp(shifted).sum(axis=1))`; the log-softmax is `shifted - log_sum[:, None]`.",
            "Pick the target's log-probability with `np.take_along_axis(lp, t[:, None], axis=1)`, after "
            "replacing ignored targets by class 0 so the index is legal; zero those pixels at the end.",
            "The gradient of -log softmax[t] with respect to x[c] is softmax[c] - [c == t].",
        ),
    ),
    Exercise(
        2,
        "Max pooling with indices, and max unpooling",
        "pooling",
        ("max_pool2d_forward", "unpool_scatter", "unpool_gather"),
        "Max pooling halves the resolution and remembers where each maximum came from; SegNet's decoder "
        "puts values back at those places (max unpooling). One scatter kernel is both max-unpool's "
        "forward and max-pool's backward.",
        (
            "Why are the indices flat offsets in the whole input plane (h * W + w), and not positions "
            "inside the window?",
            "With ceil_mode the last window may hang over the bottom/right edge. Which values may it "
            "read, and why can it never be empty?",
            "Two overlapping windows can pick the same input element. What must max pool's backward do "
            "with their two gradients, and why is that different from max_unpool2d's forward?",
        ),
        (
            "Pad with -inf (never with 0: a window of negative numbers must not pick the padding).",
            "Window (oh, ow) starts at row oh * sH - pH and column ow * sW - pW of the input; tap (i, j) "
            "reads row start + i * dH, column start + j * dW. A tap outside the input is -inf.",
            "`np.add.at(out, offsets, values)` adds at repeated offsets; `out[offsets] = values` keeps one.",
        ),
    ),
    Exercise(
        3,
        "Nearest-neighbour upsampling",
        "upsample",
        ("upsample_nearest_forward", "upsample_nearest_backward"),
        "The simplest decoder enlarges feature maps by copying each pixel into a block. The engine works "
        "out which input row and column each output pixel copies (src_h, src_w); the kernels only copy, "
        "and send gradients back.",
        (
            "Upsampling 2 -> 4 copies every input pixel into 2 x 2 outputs. What is the gradient of one "
            "input pixel?",
            "Downsampling 6 -> 4 skips some input rows. What gradient do they get?",
        ),
        (
            "Forward: `x[:, :, src_h[:, None], src_w[None, :]]` (outer indexing).",
            "Backward: add rows first (`np.add.at` along axis 2), then columns (along axis 3).",
        ),
    ),
    Exercise(
        4,
        "Convolution, strided and transposed",
        "conv",
        ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight"),
        "A convolution slides a kernel over the padded input. Its input gradient is the transposed "
        "convolution, the learned upsampling of the lecture: one kernel, two uses.",
        (
            "A 3x3 convolution with stride 2 and padding 1 over a 7x7 input: how large is the output?",
            "Why is the transposed convolution exactly the input gradient of a convolution? (Write the "
            "1-D case with stride 2 as a matrix.)",
            "conv_transpose2d's output_padding adds rows that no window reads. What values do they get?",
        ),
        (
            "Write the forward with loops over (co, oh, ow) first; vectorise with "
            "`np.lib.stride_tricks.sliding_window_view` and `np.einsum` once it passes.",
            "Backward input: for every tap (i, j) add `sum_co gy[n, co] * w[co, ci, i, j]` into the padded "
            "gradient at rows i*dH + oh*sH, then crop the padding. Take the size from x_shape, never from gy.",
            "Groups: channel c of the input belongs to group c // (C_in / groups), output channel co to "
            "co // (C_out / groups); a group's outputs see only its own inputs.",
        ),
    ),
    Exercise(
        5,
        "Batch normalisation",
        "batchnorm",
        ("batch_norm_forward", "batch_norm_backward"),
        "Every segmenter runs batch norm after every convolution: each channel is shifted and scaled to "
        "mean 0 and variance 1 over the batch (then by a learned weight and bias), which keeps the "
        "activations of a deep network in range while it trains. The engine views any input as (N, C, P).",
        (
            "Why is the variance computed in two passes (the mean first, then the mean of (x - mean)^2) "
            "and not as mean(x^2) - mean(x)^2? Try both in float32 on `1000 + np.arange(4)`.",
            "In training, why is gx not simply weight * inv_std * gy? What does a gradient that is the same "
            "for every value of a channel do to y, and so to the loss?",
            "At eval time the running statistics are used instead of the batch's: why must a model not "
            "normalise one test image by its own statistics?",
        ),
        (
            "Forward: `mean = x.mean(axis=(0, 2))`, then `var = ((x - mean[:, None]) ** 2).mean(axis=(0, 2))`; "
            "`x[:, :, None]`-style broadcasting needs the per-channel arrays as `a[None, :, None]`.",
            "Accumulate the sums in float64 (`x.mean(axis=(0, 2), dtype=np.float64)`) and return the results "
            "in x's dtype.",
            "Backward: gbias = sum of gy, gweight = sum of gy * x_hat over axes (0, 2); in training subtract "
            "the mean of gy and x_hat times the mean of gy * x_hat before scaling by weight * inv_std.",
        ),
    ),
)

LECTURE_ORDER: tuple[str, ...] = tuple(k for exercise in EXERCISES for k in exercise.kernels)

_ARRAYS = textwrap.fill(
    "Arrays are C-contiguous NumPy arrays, float32 or float64 (every float operand of one call has the "
    "same dtype, and the result has it too); indices and targets are int64. Pairs are (h, w) tuples of "
    "ints. Do not write into the arguments.",
    96,
).replace("\n", "\n    ")  # the docstrings' indentation

CONTRACTS: dict[str, str] = {
    "softmax_cross_entropy_forward": f"""Per-pixel softmax cross-entropy: (loss, stats).

    x: (N, C, P) logits. target: (N, P) int64 class per pixel. weight: (C,) class weights, x's dtype.
    ignore_index: a target value that means "no label here". label_smoothing: eps in [0, 1].
    Returns loss (N, P) in x's dtype and stats (2, N, P) in x's dtype.

    With lp = log_softmax of x over the classes C and valid = target != ignore_index:
        loss[n, p] = valid * ((1 - eps) * -weight[t] * lp[t] + eps / C * -sum_c weight[c] * lp[c])
    stats[0] = max_c x[n, c, p] and stats[1] = log sum_c exp(x[n, c, p] - stats[0]): the backward
    recomputes the softmax from them. Subtract the max before exp: logits of 1000 must not overflow.
    An ignored pixel has loss 0 whatever its target; any other target outside [0, C) raises IndexError.

    {_ARRAYS}

    Example: two classes, two pixels, the second one ignored (its huge logits must not overflow):
    >>> x = np.array([[[0.0, 1000.0], [0.0, 1000.0]]])  # x[0, c, p]
    >>> loss, stats = softmax_cross_entropy_forward(x, np.array([[0, -100]]), np.ones(2), -100, 0.0)
    >>> loss.round(4).tolist(), stats.round(4).tolist()
    ([[0.6931, 0.0]], [[[0.0, 1000.0]], [[0.6931, 0.6931]]])
    """,
    "softmax_cross_entropy_backward": f"""The gradient of the per-pixel loss with respect to the logits.

    x, target, weight, ignore_index, label_smoothing: as in the forward. stats: the forward's stats.
    g: (N, P), the upstream gradient of each pixel's loss. Returns gx (N, C, P) in x's dtype.

    With softmax = exp((x - stats[0]) - stats[1]) and valid = target != ignore_index:
        gx[n, c, p] = g[n, p] * valid * ((1 - eps) * weight[t] * (softmax[c] - [c == t])
                                          + eps / C * (softmax[c] * sum(weight) - weight[c]))
    Ignored pixels get a zero gradient.

    {_ARRAYS}

    Example: equal logits, target 0, so softmax = (0.5, 0.5):
    >>> x = np.zeros((1, 2, 1)); stats = np.array([[[0.0]], [[np.log(2)]]])
    >>> softmax_cross_entropy_backward(x, np.array([[0]]), np.ones(2), -100, 0.0, stats, np.ones((1, 1))).tolist()
    [[[-0.5], [0.5]]]
    """,
    "max_pool2d_forward": f"""Max pooling: (y, indices), the maximum of each window and where it came from.

    x: (N, C, H, W). kernel_size, stride, padding, dilation: pairs. out_hw: (H_out, W_out), worked out
    by the engine (with ceil_mode the last window may start in the input and run past the padded edge).
    Returns y (N, C, H_out, W_out) in x's dtype and indices (N, C, H_out, W_out) int64.

    Window (oh, ow) reads the taps x[h, w] with h = oh*sH - pH + i*dH, w = ow*sW - pW + j*dW, i < kH,
    j < kW, scanned row-major; taps outside the input count as -inf. y is the largest tap; indices is
    its flat offset h * W + w in the (n, c) input plane, NOT its position in the window. Ties go to
    the first maximum in scan order; NaN propagates.

    {_ARRAYS}

    Example: a 4x4 plane, 2x2 windows, stride 2 (the 9 at row 3, column 1 is flat index 3*4 + 1 = 13):
    >>> x = np.array([[3, 1, 2, 8], [0, 5, 5, 1], [7, 2, 0, 4], [1, 9, 3, 3]], dtype=float)[None, None]
    >>> y, indices = max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), (2, 2))
    >>> y.tolist(), indices.tolist()
    ([[[[5.0, 8.0], [9.0, 4.0]]]], [[[[5, 3], [13, 11]]]])
    """,
    "unpool_scatter": f"""Scatter values to flat indices: max_unpool2d's forward, and max_pool2d's backward.

    values: (N, C, h, w). indices: (N, C, h, w) int64, flat offsets into an out_hw plane.
    out_hw: (H, W). pool: None, or (kernel_size, stride, padding, dilation) of the max pool that made
    the indices. Returns out (N, C, H, W) in values' dtype, zero but for
        out[n, c].flat[indices[n, c, i, j]] = values[n, c, i, j]
    pool=None (unpooling): at a repeated index the last value in row-major order wins.
    pool given (max pool's backward): values at a repeated index are ADDED (overlapping windows that
    picked the same input element each send it their gradient).
    An index outside [0, H*W) raises IndexError; never write out of bounds.

    {_ARRAYS}

    Example: the 2x2 pool above, unpooled to 4x4:
    >>> values = np.array([[[[5.0, 8.0], [9.0, 4.0]]]]); indices = np.array([[[[5, 3], [13, 11]]]])
    >>> unpool_scatter(values, indices, (4, 4))[0, 0].tolist()
    [[0.0, 0.0, 0.0, 8.0], [0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 0.0, 4.0], [0.0, 9.0, 0.0, 0.0]]
    >>> pool = ((2, 2), (1, 1), (0, 0), (1, 1))  # a 2x3 plane's two windows both picked element 4: added
    >>> unpool_scatter(np.ones((1, 1, 1, 2)), np.array([[[[4, 4]]]]), (2, 3), pool=pool).tolist()
    [[[[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]]]]
    """,
    "unpool_gather": f"""Gather at flat indices: max_unpool2d's backward.

    g: (N, C, H, W). indices: (N, C, h, w) int64, flat offsets into an H x W plane.
    Returns out (N, C, h, w) in g's dtype: out[n, c, i, j] = g[n, c].flat[indices[n, c, i, j]].
    An index outside [0, H*W) raises IndexError; never read out of bounds.

    {_ARRAYS}

    Example:
    >>> g = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> unpool_gather(g, np.array([[[[5, 3], [13, 11]]]])).tolist()
    [[[[5.0, 3.0], [13.0, 11.0]]]]
    """,
    "upsample_nearest_forward": f"""Nearest-neighbour resizing: a gather along rows and columns.

    x: (N, C, H, W). src_h: (H_out,) int64, src_w: (W_out,) int64, the input row/column each output
    row/column copies (non-decreasing, in range). Returns y (N, C, H_out, W_out) in x's dtype:
        y[n, c, i, j] = x[n, c, src_h[i], src_w[j]]

    {_ARRAYS}

    Example: 2x2 -> 4x3:
    >>> x = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> upsample_nearest_forward(x, np.array([0, 0, 1, 1]), np.array([0, 1, 1])).tolist()
    [[[[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [2.0, 3.0, 3.0], [2.0, 3.0, 3.0]]]]
    """,
    "upsample_nearest_backward": f"""The adjoint of upsample_nearest_forward: gradients go back where they came from.

    gy: (N, C, H_out, W_out). src_h, src_w: as in the forward. in_hw: (H, W), the input's size.
    Returns gx (N, C, H, W) in gy's dtype:
        gx[n, c, h, w] = sum of gy[n, c, i, j] over src_h[i] == h and src_w[j] == w
    Input pixels no output copied get 0.

    {_ARRAYS}

    Example: the 2x2 -> 4x3 above, with a gradient of ones:
    >>> upsample_nearest_backward(np.ones((1, 1, 4, 3)), np.array([0, 0, 1, 1]), np.array([0, 1, 1]), (2, 2)).tolist()
    [[[[2.0, 4.0], [2.0, 4.0]]]]
    """,
    "conv2d_forward": f"""2-D convolution (cross-correlation) with symmetric zero padding, no bias.

    x: (N, C_in, H, W). w: (C_out, C_in / groups, kH, kW). out_hw: (H_out, W_out), worked out by the
    engine: use it as given, never recompute it. stride, padding, dilation: pairs. groups: int.
    Returns y (N, C_out, H_out, W_out) in x's dtype, with g = co // (C_out / groups):
        y[n, co, oh, ow] = sum_{{ci, i, j}} x_pad[n, g*C_in/groups + ci, oh*sH + i*dH, ow*sW + j*dW] * w[co, ci, i, j]
    where x_pad is x with pH (pW) zero rows (columns) on both sides (taps past its end read 0 too).

    {_ARRAYS}

    Example: a 2x2 box filter with stride 2 over a 4x4 ramp (0 + 1 + 4 + 5 = 10):
    >>> conv2d_forward(np.arange(16.0).reshape(1, 1, 4, 4), np.ones((1, 1, 2, 2)), (2, 2), (2, 2), (0, 0), (1, 1),
    ...                1).tolist()
    [[[[10.0, 18.0], [42.0, 50.0]]]]
    """,
    "conv2d_backward_input": f"""The input gradient of conv2d_forward, which is also the transposed convolution.

    gy: (N, C_out, H_out, W_out). w: (C_out, C_in / groups, kH, kW). x_shape: (N, C_in, H, W), the
    shape of the result. stride, padding, dilation: pairs; groups: int. Returns gx of shape x_shape
    in gy's dtype: every gy[n, co, oh, ow] * w[co, ci, i, j] is added into
        gx_pad[n, g*C_in/groups + ci, oh*sH + i*dH, ow*sW + j*dW]
    and the padding is cropped off. Take the output size from x_shape: as conv_transpose2d's forward it
    may have extra rows and columns (output_padding) that no window reads; they get 0.

    {_ARRAYS}

    Example: the transposed convolution 2x2 -> 4x4 (kernel 2, stride 2): each gy value stamps w:
    >>> gy = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]]); w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> conv2d_backward_input(gy, w, (1, 1, 4, 4), (2, 2), (0, 0), (1, 1), 1)[0, 0].tolist()
    [[1.0, 2.0, 10.0, 20.0], [3.0, 4.0, 30.0, 40.0], [100.0, 200.0, 1000.0, 2000.0], [300.0, 400.0, 3000.0, 4000.0]]
    >>> x_shape = (1, 1, 5, 5)  # output_padding 1: a last row and column that no window reads
    >>> conv2d_backward_input(gy, w, x_shape, (2, 2), (0, 0), (1, 1), 1)[0, 0, 4].tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0]
    """,
    "conv2d_backward_weight": f"""The weight gradient of conv2d_forward.

    x: (N, C_in, H, W). gy: (N, C_out, H_out, W_out) (its size is authoritative). w_shape: (C_out,
    C_in / groups, kH, kW), the shape of the result. stride, padding, dilation: pairs; groups: int.
    Returns gw of shape w_shape in x's dtype:
        gw[co, ci, i, j] = sum_{{n, oh, ow}} gy[n, co, oh, ow]
                                             * x_pad[n, g*C_in/groups + ci, oh*sH + i*dH, ow*sW + j*dW]

    {_ARRAYS}

    Example: the box filter above; with gy all ones each weight sums the pixels it touched:
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> conv2d_backward_weight(x, np.ones((1, 1, 2, 2)), (1, 1, 2, 2), (2, 2), (0, 0), (1, 1), 1).tolist()
    [[[[20.0, 24.0], [36.0, 40.0]]]]
    """,
    "batch_norm_forward": f"""Batch normalisation: (y, mean, var), each channel normalised over the batch.

    x: (N, C, P). mean, var: (C,), the running statistics (read only when training is False; they may
    be None when it is True). weight, bias: (C,). eps: float. training, relu: bool.
    Returns y (N, C, P), mean (C,) and var (C,), all in x's dtype. Over the M = N * P values of channel c,
    with the batch's own mean and (biased: divided by M) variance in training, the given ones otherwise:
        y[n, c, p] = (x[n, c, p] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]
    and with relu true (batch_norm_relu: the ReLU after batch norm, in the same pass) max(y, 0) instead,
    a NaN staying NaN as in np.maximum.
    Return the mean and var you normalised by (the engine updates the running statistics from them).
    Compute the variance as the mean of (x - mean)^2, summing in float64: E[x^2] - E[x]^2 loses every
    digit on nearly equal values.

    {_ARRAYS}

    Example: one channel holding 1, 5, 5, 1 (mean 3, variance 4), weight 2, bias 0.5:
    >>> x = np.array([[[1.0, 5.0]], [[5.0, 1.0]]]); w, b = np.array([2.0]), np.array([0.5])  # x[n, 0, p]
    >>> y, mean, var = batch_norm_forward(x, None, None, w, b, 0.0, True, False)
    >>> y.tolist(), mean.tolist(), var.tolist()
    ([[[-1.5, 2.5]], [[2.5, -1.5]]], [3.0], [4.0])
    >>> relu = True  # the negatives become 0
    >>> batch_norm_forward(x, None, None, w, b, 0.0, True, relu)[0].tolist()
    [[[0.0, 2.5]], [[2.5, 0.0]]]
    >>> running_mean, running_var = np.array([1.0]), np.array([4.0])  # eval: the given statistics
    >>> batch_norm_forward(x, running_mean, running_var, w, b, 0.0, False, False)[0].tolist()
    [[[0.5, 4.5]], [[4.5, 0.5]]]
    """,
    "batch_norm_backward": f"""The gradients of batch normalisation: (gx, gweight, gbias).

    gy, x: (N, C, P). mean, var: (C,), what the forward returned. weight: (C,). eps, training: as in
    the forward. relu_output: None, or the y of a forward with relu true: then first set gy to 0 wherever
    relu_output is not > 0 (ReLU's backward; a NaN output counts as not > 0), and use that gy for
    everything below. Returns gx (N, C, P), gweight (C,) and gbias (C,) in x's dtype. With
    inv_std = 1 / sqrt(var + eps) and x_hat = (x - mean) * inv_std, sums over the M = N * P values of a
    channel:
        gbias = sum gy        gweight = sum gy * x_hat
        gx = weight * inv_std * gy                                        (training False)
        gx = weight * inv_std * (gy - gbias / M - x_hat * gweight / M)    (training True: the batch's
                                                                           mean and var depend on x too)

    {_ARRAYS}

    Example: the channel above (mean 3, var 4, so x_hat = -1, 1, 1, -1), weight 2, and a gradient on the
    first value only:
    >>> x = np.array([[[1.0, 5.0]], [[5.0, 1.0]]]); gy = np.array([[[1.0, 0.0]], [[0.0, 0.0]]])
    >>> mean, var, w = np.array([3.0]), np.array([4.0]), np.array([2.0])
    >>> gx, gweight, gbias = batch_norm_backward(gy, x, mean, var, w, 0.0, True, None)
    >>> gx.tolist(), gweight.tolist(), gbias.tolist()
    ([[[0.5, 0.0]], [[0.0, -0.5]]], [-1.0], [1.0])
    >>> same_everywhere = np.ones((2, 1, 2))  # shifts every y alike: the batch mean takes it all back
    >>> batch_norm_backward(same_everywhere, x, mean, var, w, 0.0, True, None)[0].tolist()
    [[[0.0, 0.0]], [[0.0, 0.0]]]
    >>> relu_output = np.array([[[0.0, 2.5]], [[2.5, 0.0]]])  # the relu forward's y: gy's 1 sits at its 0
    >>> batch_norm_backward(gy, x, mean, var, w, 0.0, True, relu_output)[0].tolist()
    [[[0.0, 0.0]], [[0.0, 0.0]]]
    """,
}
