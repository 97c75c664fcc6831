"""2-D convolution (cross-correlation), its input gradient and its weight gradient, by im2col views.

Notation: x (N, C_in, H, W), w (C_out, C_in/G, kH, kW), y (N, C_out, H_out, W_out), G groups; stride s,
padding p, dilation d are (h, w) pairs. Channel c of group g is c = g * (channels per group) + c_g.

    y[n, co, oh, ow] = sum_{ci, i, j} x_pad[n, g*Cin_g + ci, oh*sH + i*dH, ow*sW + j*dW] * w[co, ci, i, j]

where x_pad is x with p zeros on every side and g = co // Cout_g. im2col turns this into one contraction:
a strided *view* of x_pad, cols[n, c, oh, ow, i, j] = x_pad[n, c, oh*sH + i*dH, ow*sW + j*dW], copies
nothing; ``einsum`` then sums over (ci, i, j). The input gradient is the adjoint of im2col (col2im): each
kernel tap (i, j) adds its share back into the padded grid, which is cropped at the end. The weight
gradient contracts the same view with gy over (n, oh, ow).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pair = tuple[int, int]


def sliding_windows(x_padded: np.ndarray, kernel_size: Pair, stride: Pair, dilation: Pair,
                    out_hw: Pair) -> np.ndarray:
    """The im2col view: windows[..., oh, ow, i, j] = x_padded[..., oh*sH + i*dH, ow*sW + j*dW].

    A read-only view of shape (..., H_out, W_out, kH, kW) on the last two axes of x_padded, which must be
    large enough for every window (no copy is made, nothing is read out of bounds).
    """
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel_size, stride, dilation, out_hw
    # Every window of the dilated span, then keep every s-th window and every d-th tap inside it.
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    every_window = sliding_window_view(x_padded, span, axis=(-2, -1))
    return every_window[..., : oh * sh : sh, : ow * sw : sw, ::dh, ::dw]


def padded_windows(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair, out_hw: Pair,
                   fill: float = 0.0) -> np.ndarray:
    """The sliding_windows of x padded with `padding` rows/cols of `fill` around H and W, for the out_hw
    windows handed: the bottom/right get more `fill` wherever the last window runs past the padded input
    (max pooling's ceil_mode; any out_hw a caller hands), so taps beyond the input read `fill`."""
    (ph, pw), (_, _, h, w) = padding, x.shape
    eh, ew = (max(0, (o - 1) * s + d * (k - 1) + 1 - (size + 2 * p))
              for o, s, d, k, size, p in zip(out_hw, stride, dilation, kernel_size, (h, w), padding, strict=True))
    x_padded = np.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=fill)
    return sliding_windows(x_padded, kernel_size, stride, dilation, out_hw)


def _by_group(a: np.ndarray, groups: int, axis: int = 1) -> np.ndarray:
    """Split the channel axis of a into (groups, channels per group): a view, no copy."""
    return a.reshape(*a.shape[:axis], groups, a.shape[axis] // groups, *a.shape[axis + 1 :])


def conv2d_forward(x: np.ndarray, w: np.ndarray, out_hw: Pair, stride: Pair, padding: Pair, dilation: Pair,
                   groups: int) -> np.ndarray:
    """y = conv2d(x, w) of spatial size out_hw (the engine's): cross-correlation with zero padding, no bias."""
    n = x.shape[0]
    c_out, _, kh, kw = w.shape
    cols = _by_group(padded_windows(x, (kh, kw), stride, padding, dilation, out_hw), groups)
    # cols: (N, G, Cin_g, H_out, W_out, kH, kW); weights: (G, Cout_g, Cin_g, kH, kW)
    y = np.einsum("ngcyxij,gocij->ngoyx", cols, _by_group(w, groups, axis=0), optimize=True)
    return np.ascontiguousarray(y.reshape(n, c_out, *out_hw))


def conv2d_backward_input(gy: np.ndarray, w: np.ndarray, x_shape: tuple[int, int, int, int], stride: Pair,
                          padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """gx = d(sum(gy * conv2d(x, w))) / dx; also the forward of conv_transpose2d (x_shape sets its size).

    col2im: gcols[n, ci, i, j, oh, ow] = sum_co gy[n, co, oh, ow] * w[co, ci, i, j] is what each
    window tap received; tap (i, j) of window (oh, ow) read x_pad[oh*sH + i*dH, ow*sW + j*dW], so its
    share is added back there. Rows/cols that no window reads (and the padding, cropped) get nothing.
    """
    n, c_in, h, wd = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    _, _, kh, kw = w.shape
    oh, ow = gy.shape[2:]
    gy_g, w_g = _by_group(gy, groups), _by_group(w, groups, axis=0)
    gcols = np.einsum("ngoyx,gocij->ngcijyx", gy_g, w_g, optimize=True).reshape(n, c_in, kh, kw, oh, ow)
    gx_padded = np.zeros((n, c_in, h + 2 * ph, wd + 2 * pw), dtype=gy.dtype)
    for i in range(kh):
        for j in range(kw):
            # Tap (i, j) of all windows: rows i*dH + oh*sH, cols j*dW + ow*sW (a strided slice).
            rows, cols = slice(i * dh, i * dh + oh * sh, sh), slice(j * dw, j * dw + ow * sw, sw)
            gx_padded[:, :, rows, cols] += gcols[:, :, i, j]
    return np.ascontiguousarray(gx_padded[:, :, ph : ph + h, pw : pw + wd])


def conv2d_backward_weight(x: np.ndarray, gy: np.ndarray, w_shape: tuple[int, int, int, int], stride: Pair,
                           padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """gw[co, ci, i, j] = sum_{n, oh, ow} gy[n, co, oh, ow] * cols[n, g*Cin_g + ci, oh, ow, i, j]."""
    _, _, kh, kw = w_shape
    cols = _by_group(padded_windows(x, (kh, kw), stride, padding, dilation, gy.shape[2:]), groups)
    gw = np.einsum("ngcyxij,ngoyx->gocij", cols, _by_group(gy, groups), optimize=True)
    return np.ascontiguousarray(gw.reshape(w_shape))
