"""The specification kernels: plain, vectorised NumPy that reads like the formulas of the kernel table.

Every other device (numba, cuda, cudasim) is tested against these. See minicv.kernels for the contract.
"""

# ruff: noqa: F401 (these imports are the exports: the kernel table, whose names minicv/ops.py lists)
from .batchnorm import batch_norm_backward, batch_norm_forward
from .conv import conv2d_backward_input, conv2d_backward_weight, conv2d_forward
from .loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .pooling import max_pool2d_forward, unpool_gather, unpool_scatter
from .upsample import upsample_nearest_backward, upsample_nearest_forward
