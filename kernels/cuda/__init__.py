"""The cuda device: the kernels of kernels/cuda/*.cu on an NVIDIA GPU, through CuPy.

Importing this works anywhere; CuPy is imported on the first call, which raises RuntimeError
(``launch.NO_CUDA_MESSAGE``, naming the install command) where there is none. The cudasim device
runs the same sources and the same table (table.py) on the CPU.
"""

from .launch import CudaBackend
from .table import bind

backend = CudaBackend()
_table = bind(backend)  # the kernel table's functions, whose names minicv/ops.py lists
globals().update(_table)
__all__ = list(_table)
