"""The kernel table of the two CUDA devices, written once against a backend (launch.py).

Every function takes the backend first, then the arguments of the table (minicv.kernels documents the
contract): it allocates the outputs with ``backend.xp``, launches the kernels of pool.cu, upsample.cu,
loss.cu, batchnorm.cu (here) or conv.cu (conv.py), and turns the bad-index flag a kernel raises into an IndexError.
``bind(backend)`` gives the table's functions with the backend filled in: minicv.kernels.cuda binds them
to CuPy, minicv.kernels.cudasim to cudasim.

The checks here are the ones that keep the kernels inside their buffers (shapes that must agree, indices
that must be in range); the engine validates everything else before it calls a kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from .conv import conv2d_backward_input, conv2d_backward_weight, conv2d_forward
from .launch import Backend, ctype, launch_elements

BATCH_NORM_THREADS = 256  # THREADS of batchnorm.cu

Pair = tuple[int, int]
Array = Any  # numpy.ndarray or cupy.ndarray

_INT32_MAX = np.iinfo(np.int32).max


def _int32(*values: int, largest: int = 0) -> tuple[np.int32, ...]:
    """The int parameters of a kernel; ``largest`` is the largest int the kernel forms from them (h*W+w)."""
    if max(*values, largest) > _INT32_MAX:
        raise ValueError(f"CUDA kernels: sizes {values} exceed the int32 range of the kernels")
    return tuple(np.int32(v) for v in values)


def _contiguous(backend: Backend, *arrays: Array) -> list[Array]:
    """The engine hands C-contiguous arrays already; the copy stays because the .cu kernels index their
    operands as C-contiguous from the first element: a strided view would have them read past it."""
    return [backend.xp.ascontiguousarray(a) for a in arrays]


def _check(name: str, array: Array, shape: tuple, dtype: Any) -> None:
    """The shape and dtype a kernel relies on to stay inside the buffer."""
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"CUDA kernels: {name} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    if array.dtype != dtype:
        raise TypeError(f"CUDA kernels: {name} has dtype {array.dtype}, expected {np.dtype(dtype)}")


def _first_bad_flag(backend: Backend, count: int) -> Array:
    """The device int64 in which kernels record the first bad position: count means none."""
    return backend.xp.full(1, count, dtype=np.int64)


def _first_bad(flag: Array, count: int) -> int | None:
    position = int(flag[0])  # on the GPU this waits for the kernel
    return position if position < count else None


# ---- max pooling and unpooling (pool.cu) --------------------------------------------------------------

def _check_pool_indices(flag: Array, indices: Array, plane_hw: Pair) -> None:
    position = _first_bad(flag, indices.size)
    if position is not None:
        bad = int(indices.ravel()[position])
        raise IndexError(f"Found an invalid max index: {bad} (output volumes are of size "
                         f"{plane_hw[0]}x{plane_hw[1]})")


def max_pool2d_forward(backend: Backend, x: Array, kernel_size: Pair, stride: Pair, padding: Pair,
                       dilation: Pair, out_hw: Pair) -> tuple[Array, Array]:
    """(y, indices): the maximum of each window and its flat h*W + w offset in the unpadded input plane."""
    (x,) = _contiguous(backend, x)
    n, c, h, w = x.shape
    y = backend.xp.empty((n, c, *out_hw), dtype=x.dtype)
    indices = backend.xp.empty(y.shape, dtype=np.int64)
    launch_elements(backend, "pool.cu", f"max_pool2d_forward_kernel<{ctype(x.dtype)}>", y.size,
                    (x, y, indices, np.int64(y.size),
                     *_int32(h, w, *out_hw, *kernel_size, *stride, *padding, *dilation, largest=h * w)))
    return y, indices


def unpool_scatter(backend: Backend, values: Array, indices: Array, out_hw: Pair,
                   pool: tuple[Pair, Pair, Pair, Pair] | None = None) -> Array:
    """out (N, C, *out_hw), zero but for out[n, c].flat[indices[n, c, i, j]] = values[n, c, i, j].

    pool=None (max_unpool2d forward): one thread per value writes it (a duplicate index keeps one of its
    values). pool given (max_pool2d backward): one thread per element of out sums the values of the
    windows that cover it and chose it, a gather without atomics.
    """
    values, indices = _contiguous(backend, values, indices)
    _check("indices", indices, values.shape, np.int64)
    n, c, h_in, w_in = values.shape
    h, w = out_hw
    t = ctype(values.dtype)
    out = backend.xp.zeros((n, c, h, w), dtype=values.dtype)
    if pool is None:
        flag = _first_bad_flag(backend, indices.size)
        launch_elements(backend, "pool.cu", f"unpool_scatter_kernel<{t}>", values.size,
                        (values, indices, out, np.int64(values.size), np.int64(h_in * w_in), np.int64(h * w),
                         flag))
        _check_pool_indices(flag, indices, out_hw)
    else:
        # A gather: each output element reads the indices of the windows covering it and compares
        # them with its own position, so no index is ever used to address memory.
        kernel_size, stride, padding, dilation = pool
        launch_elements(backend, "pool.cu", f"max_pool2d_backward_kernel<{t}>", out.size,
                        (values, indices, out, np.int64(out.size),
                         *_int32(h, w, h_in, w_in, *kernel_size, *stride, *padding, *dilation,
                                 largest=max(h * w, h_in * w_in))))  # oh * W_out + ow is an int too
    return out


def unpool_gather(backend: Backend, g: Array, indices: Array) -> Array:
    """out[n, c, i, j] = g[n, c].flat[indices[n, c, i, j]] (max_unpool2d backward)."""
    g, indices = _contiguous(backend, g, indices)
    _check("indices", indices, (*g.shape[:2], *indices.shape[2:]), np.int64)
    out = backend.xp.empty(indices.shape, dtype=g.dtype)
    flag = _first_bad_flag(backend, indices.size)
    plane_hw = g.shape[2:]
    launch_elements(backend, "pool.cu", f"unpool_gather_kernel<{ctype(g.dtype)}>", out.size,
                    (g, indices, out, np.int64(out.size), np.int64(indices.shape[2] * indices.shape[3]),
                     np.int64(plane_hw[0] * plane_hw[1]), flag))
    _check_pool_indices(flag, indices, plane_hw)
    return out


# ---- nearest upsampling (upsample.cu) -----------------------------------------------------------------

def upsample_nearest_forward(backend: Backend, x: Array, src_h: Array, src_w: Array) -> Array:
    """y[n, c, i, j] = x[n, c, src_h[i], src_w[j]]."""
    x, src_h, src_w = _contiguous(backend, x, src_h, src_w)
    n, c, h, w = x.shape
    _check("src_h", src_h, src_h.shape[:1], np.int64)
    _check("src_w", src_w, src_w.shape[:1], np.int64)
    for name, src, size in (("src_h", src_h, h), ("src_w", src_w, w)):
        if src.size and not bool(((src >= 0) & (src < size)).all()):  # memory: the kernel reads x[src]
            raise IndexError(f"upsample_nearest_forward: {name} must lie in [0, {size}), got values "
                             f"from {int(src.min())} to {int(src.max())}")
    y = backend.xp.empty((n, c, src_h.size, src_w.size), dtype=x.dtype)
    launch_elements(backend, "upsample.cu", f"upsample_nearest_forward_kernel<{ctype(x.dtype)}>", y.size,
                    (x, src_h, src_w, y, np.int64(y.size),
                     *_int32(h, w, src_h.size, src_w.size, largest=h * w)))
    return y


def upsample_nearest_backward(backend: Backend, gy: Array, src_h: Array, src_w: Array, in_hw: Pair) -> Array:
    """gx[n, c, h, w] = sum of gy[n, c, i, j] over src_h[i] == h and src_w[j] == w.

    src_h and src_w are non-decreasing, so the rows i with src_h[i] == h are one run [begin, end):
    searchsorted finds the runs, and one thread per input pixel sums its rectangle of gy.
    """
    xp = backend.xp
    gy, src_h, src_w = _contiguous(backend, gy, src_h, src_w)
    n, c, h_out, w_out = gy.shape
    _check("src_h", src_h, (h_out,), np.int64)
    _check("src_w", src_w, (w_out,), np.int64)
    h, w = in_hw
    row_begin, row_end = (xp.searchsorted(src_h, xp.arange(h), side=side) for side in ("left", "right"))
    col_begin, col_end = (xp.searchsorted(src_w, xp.arange(w), side=side) for side in ("left", "right"))
    gx = xp.empty((n, c, h, w), dtype=gy.dtype)
    launch_elements(backend, "upsample.cu", f"upsample_nearest_backward_kernel<{ctype(gy.dtype)}>", gx.size,
                    (gy, row_begin, row_end, col_begin, col_end, gx, np.int64(gx.size),
                     *_int32(h, w, h_out, w_out, largest=max(h * w, h_out * w_out))))
    return gx


# ---- softmax cross-entropy (loss.cu) ------------------------------------------------------------------

def _cross_entropy_operands(backend: Backend, x: Array, target: Array, weight: Array) -> list[Array]:
    x, target, weight = _contiguous(backend, x, target, weight)
    _check("target", target, (x.shape[0], x.shape[2]), np.int64)
    _check("weight", weight, x.shape[1:2], x.dtype)
    return [x, target, weight]


def _check_targets(flag: Array, target: Array) -> None:
    position = _first_bad(flag, target.size)
    if position is not None:
        raise IndexError(f"Target {int(target.ravel()[position])} is out of bounds.")


def softmax_cross_entropy_forward(backend: Backend, x: Array, target: Array, weight: Array, ignore_index: int,
                                  label_smoothing: float) -> tuple[Array, Array]:
    """(loss (N, P), stats (2, N, P)): one thread per pixel, looping over the C classes."""
    x, target, weight = _cross_entropy_operands(backend, x, target, weight)
    n, c, p = x.shape
    loss = backend.xp.empty((n, p), dtype=x.dtype)
    stats = backend.xp.empty((2, n, p), dtype=x.dtype)
    flag = _first_bad_flag(backend, target.size)
    launch_elements(backend, "loss.cu", f"softmax_cross_entropy_forward_kernel<{ctype(x.dtype)}>", loss.size,
                    (x, target, weight, loss, stats, np.int64(loss.size), *_int32(c), np.int64(p),
                     np.int64(ignore_index), x.dtype.type(label_smoothing), flag))
    _check_targets(flag, target)
    return loss, stats


def softmax_cross_entropy_backward(backend: Backend, x: Array, target: Array, weight: Array,
                                   ignore_index: int, label_smoothing: float, stats: Array, g: Array) -> Array:
    """gx (N, C, P): g times d loss / d x; one thread per pixel, looping over the C classes."""
    x, target, weight = _cross_entropy_operands(backend, x, target, weight)
    stats, g = _contiguous(backend, stats, g)
    _check("stats", stats, (2, *target.shape), x.dtype)
    _check("g", g, target.shape, x.dtype)
    n, c, p = x.shape
    gx = backend.xp.empty(x.shape, dtype=x.dtype)
    flag = _first_bad_flag(backend, target.size)
    launch_elements(backend, "loss.cu", f"softmax_cross_entropy_backward_kernel<{ctype(x.dtype)}>",
                    target.size,
                    (x, target, weight, stats, g, gx, np.int64(target.size), *_int32(c), np.int64(p),
                     np.int64(ignore_index), x.dtype.type(label_smoothing), flag))
    _check_targets(flag, target)
    return gx


# ---- batch norm (batchnorm.cu) -----------------------------------------------------------------------

def _launch_per_channel(backend: Backend, name_expression: str, channels: int, args: tuple) -> None:
    """One block of batchnorm.cu's THREADS threads per channel (at most backend.max_blocks blocks, which
    take the channels grid-stride)."""
    blocks = min(channels, backend.max_blocks)
    backend.kernel("batchnorm.cu", name_expression)((blocks, 1, 1), (BATCH_NORM_THREADS, 1, 1), args)


def _batch_norm_operands(backend: Backend, x: Array, **per_channel: Array) -> list[Array]:
    (x,) = _contiguous(backend, x)
    if x.ndim != 3:
        raise ValueError(f"CUDA kernels: batch norm takes x of shape (N, C, P), got {tuple(x.shape)}")
    arrays = _contiguous(backend, *per_channel.values())
    for name, a in zip(per_channel, arrays, strict=True):
        _check(name, a, x.shape[1:2], x.dtype)
    return [x, *arrays]


def batch_norm_forward(backend: Backend, x: Array, mean: Array | None, var: Array | None, weight: Array,
                       bias: Array, eps: float, training: bool, relu: bool) -> tuple[Array, Array, Array]:
    """(y, mean, var): in training the batch statistics first (one block per channel), then y (one thread
    per element, through the ReLU when relu is true)."""
    if training:
        mean, var = (backend.xp.empty(x.shape[1:2], dtype=x.dtype) for _ in range(2))
    x, mean, var, weight, bias = _batch_norm_operands(backend, x, mean=mean, var=var, weight=weight, bias=bias)
    n, c, p = x.shape
    (channels,) = _int32(c)
    low = backend.xp.zeros(x.shape[1:2], dtype=x.dtype)  # what rounding the batch mean dropped
    if training and c:
        _launch_per_channel(backend, f"batch_norm_stats_kernel<{ctype(x.dtype)}>", c,
                            (x, mean, var, low, channels, np.int64(n * p), np.int64(p)))
    y = backend.xp.empty(x.shape, dtype=x.dtype)
    launch_elements(backend, "batchnorm.cu", f"batch_norm_transform_kernel<{ctype(x.dtype)}>", y.size,
                    (x, mean, var, low, weight, bias, y, np.int64(y.size), channels, np.int64(p), np.float64(eps),
                     np.int32(bool(relu))))
    return y, mean, var


def batch_norm_backward(backend: Backend, gy: Array, x: Array, mean: Array, var: Array, weight: Array, eps: float,
                        training: bool, relu_output: Array | None) -> tuple[Array, Array, Array]:
    """(gx, gweight, gbias): the sums first (one block per channel), then gx (one thread per element);
    relu_output None is passed as the kernels' null pointer."""
    x, mean, var, weight = _batch_norm_operands(backend, x, mean=mean, var=var, weight=weight)
    (gy,) = _contiguous(backend, gy)
    _check("gy", gy, x.shape, x.dtype)
    if relu_output is not None:
        (relu_output,) = _contiguous(backend, relu_output)
        _check("relu_output", relu_output, x.shape, x.dtype)
    n, c, p = x.shape
    (channels,) = _int32(c)
    gweight, gbias, low = (backend.xp.empty(x.shape[1:2], dtype=x.dtype) for _ in range(3))
    gx = backend.xp.empty(x.shape, dtype=x.dtype)
    t = ctype(x.dtype)
    if c:
        _launch_per_channel(backend, f"batch_norm_backward_reduce_kernel<{t}>", c,
                            (gy, x, mean, var, relu_output, gweight, gbias, low, channels, np.int64(n * p),
                             np.int64(p), np.float64(eps), np.int32(bool(training))))
    launch_elements(backend, "batchnorm.cu", f"batch_norm_backward_input_kernel<{t}>", gx.size,
                    (gy, x, mean, var, relu_output, low, weight, gweight, gbias, gx, np.int64(gx.size), channels,
                     np.int64(p), np.float64(eps), np.int32(bool(training))))
    return gx, gweight, gbias


# ---- binding ------------------------------------------------------------------------------------------

_FUNCTIONS: dict[str, Callable] = {
    f.__name__: f
    for f in (conv2d_forward, conv2d_backward_input, conv2d_backward_weight, max_pool2d_forward,
              unpool_scatter, unpool_gather, upsample_nearest_forward, upsample_nearest_backward,
              softmax_cross_entropy_forward, softmax_cross_entropy_backward, batch_norm_forward,
              batch_norm_backward)
}


def bind(backend: Backend) -> dict[str, Callable]:
    """The kernel table's functions with ``backend`` as their first argument."""
    table: dict[str, Callable] = {}
    for name, function in _FUNCTIONS.items():
        bound = functools.partial(function, backend)
        # a partial takes attributes (typeshed declares none); update_wrapper would add __wrapped__, through
        # which inspect.signature would show the backend argument
        bound.__name__, bound.__qualname__ = name, name  # type: ignore[attr-defined]
        bound.__doc__ = function.__doc__
        bound.__module__ = function.__module__
        table[name] = bound
    return table
