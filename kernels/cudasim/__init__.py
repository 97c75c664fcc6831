"""The cudasim device: the CUDA kernels of kernels/cuda, compiled by g++ and run on the CPU.

Same .cu sources, same launch code, same table as the cuda device; NumPy arrays instead of CuPy's. The
threads of a block run as fibers, so __syncthreads(), __shared__ memory and atomics behave as on a GPU
(see cudasim.h). Needs only g++.
"""

from ..cuda.table import bind
from .runtime import CudasimBackend

backend = CudasimBackend()
_table = bind(backend)  # the kernel table's functions, whose names minicv/ops.py lists
globals().update(_table)
__all__ = list(_table)
