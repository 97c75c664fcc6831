"""The cuda device: the kernels of kernels/cuda/*.cu on an NVIDIA GPU, through CuPy.

Importing this works anywhere; CuPy is imported on the first call, which raises RuntimeError
(``launch.NO_CUDA_MESSAGE``, naming the install command) where there is none. The cudasim device
runs the same sources and the same table (table.py) on the CPU.
"""

from .. import KERNEL_TABLE
from .launch import CudaBackend
from .table import bind

backend = CudaBackend()
globals().update(bind(backend))  # the functions of minicv.kernels.KERNEL_TABLE
__all__ = list(KERNEL_TABLE)
