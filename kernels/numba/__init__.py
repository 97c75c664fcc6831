"""Numba CPU kernels (the ``numba`` device, alias ``cpu``): the kernel table of minicv.kernels.

Every kernel is ``@njit(cache=True)``, parallel over independent work (planes, output rows, pixel
blocks): a kernel runs a range of tasks, and ``tasks.run_tasks`` runs one range per thread; the Python
functions here allocate the outputs and call the compiled cores.
The convolution algorithm is a module setting: ``set_conv_algorithm("direct" | "im2col")``,
``get_conv_algorithm()`` or ``with conv_algorithm(name): ...``. A kernel that is not in numba's
on-disk cache yet compiles on its first call, announced once on stderr (``notice.py``). Vector widths
follow the CPU Numba compiles for (``target.py``); ``code_generation()`` says which.
"""

# ruff: noqa: F401 (these imports are the exports: the kernel table, whose names minicv/ops.py lists)
from . import (
    cache_lock,  # two processes may compile at once (minicv/precompile.py)
    notice,  # says so on stderr when a kernel compiles (a cold cache: the first run on a CPU)
)
from .target import cache_folder, code_generation

with cache_folder():  # every kernel is decorated here, so each caches where its vector width's code lives
    from .batchnorm import batch_norm_backward, batch_norm_forward
    from .conv import (
        conv2d_backward_input,
        conv2d_backward_weight,
        conv2d_forward,
        conv_algorithm,
        get_conv_algorithm,
        set_conv_algorithm,
    )
    from .loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
    from .pooling import max_pool2d_forward, unpool_gather, unpool_scatter
    from .upsample import upsample_nearest_backward, upsample_nearest_forward

# The ops' BLAS products (matmul, linear) on this device run on the calling thread: Numba's pool has
# the cores, and OpenBLAS's own threads, spinning after each product, would take them (minicv/blas.py).
BLAS_THREADS = 1
