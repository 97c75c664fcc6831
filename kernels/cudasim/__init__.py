"""The cudasim device: the CUDA kernels of kernels/cuda, compiled by g++ and run on the CPU.

Same .cu sources, same launch code, same table as the cuda device; NumPy arrays instead of CuPy's. The
threads of a block run as fibers, so __syncthreads(), __shared__ memory and atomics behave as on a GPU
(see cudasim.h). Needs only g++.
"""

from .. import KERNEL_TABLE
from ..cuda.table import bind
from .runtime import CudasimBackend

backend = CudasimBackend()
globals().update(bind(backend))  # the functions of minicv.kernels.KERNEL_TABLE
__all__ = list(KERNEL_TABLE)
