"""Differentiable ops with PyTorch's names, argument order and defaults: ``import minicv.functional as F``.

Each op validates its arguments once, works out output shapes once, then calls the kernels of its
inputs' device.
"""

from minicv.functional.basic import (
    abs,
    add,
    batch_norm,
    batch_norm_relu,
    cat,
    div,
    exp,
    flatten,
    linear,
    log,
    log_softmax,
    matmul,
    mean,
    mul,
    pad,
    permute,
    relu,
    reshape,
    sigmoid,
    softmax,
    sqrt,
    sub,
    sum,
    transpose,
)
from minicv.functional.conv import conv2d, conv_transpose2d
from minicv.functional.loss import cross_entropy, l1_loss, mse_loss, smooth_l1_loss
from minicv.functional.pooling import max_pool2d, max_unpool2d
from minicv.functional.upsample import interpolate

__all__ = [
    "abs",
    "add",
    "batch_norm",
    "batch_norm_relu",
    "cat",
    "conv2d",
    "conv_transpose2d",
    "cross_entropy",
    "div",
    "exp",
    "flatten",
    "interpolate",
    "l1_loss",
    "linear",
    "log",
    "log_softmax",
    "matmul",
    "max_pool2d",
    "max_unpool2d",
    "mean",
    "mse_loss",
    "mul",
    "pad",
    "permute",
    "relu",
    "reshape",
    "sigmoid",
    "smooth_l1_loss",
    "softmax",
    "sqrt",
    "sub",
    "sum",
    "transpose",
]
