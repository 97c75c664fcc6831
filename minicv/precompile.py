"""Compile the numba kernels of a run's models in a helper process, beside the run.

On an empty numba cache the demo's first steps wait for ~40 s of compiling (docs/kernels/cold_start.md):
Numba compiles one function at a time, in one thread. Its on-disk cache is shared between processes,
though, so a second process that compiles what this one needs later halves the wait on two cores, as
``make -j`` does. The helper first takes layers alone, in the order that has it finish each before the
run needs it (the loss, a wide and a narrow conv's weight gradient: the run's first model compiles the
convolutions' forward kernels first), then the other models' layers in the reverse of the run's order
(the transposed conv, unpooling, upsampling, pooling) and batch norm, so that the two compile different
kernels; then one training step of each model, last model first, for whatever the layers missed; then a
prediction of each (evaluation comes after an epoch). What the helper has cached when this process gets
there is loaded; what it is compiling, this process waits for (``kernels/numba/cache_lock.py``: a
process claims a function while it compiles it); what it has not reached, this process compiles as it
always did. The helper changes when a kernel compiles, never what runs.

It runs only where this process may use two cores, and where numba's cache can be claimed (``flock``).

``minicv check`` starts one too (``check_ahead``): it runs the check's numba rows, last row first.

Run as ``python -m minicv.precompile models BATCH HEIGHT WIDTH MODEL...`` by ``compile_ahead`` and as
``python -m minicv.precompile check DTYPE,... OP...`` by ``check_ahead``, never by hand.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from collections.abc import Sequence

# pixels of a helper batch at most (the demo's 32 x 64 x 64 is 2^17): past it, a large run's deepest layers may
# take other algorithms in the helper than in the run, which then compiles their kernels itself: later than
# with the helper, never differently
HELPER_PIXELS = 2**20


def compile_ahead(models: Sequence[str], image_hw: tuple[int, int], batch_size: int) -> None:
    """Start the helper for ``models`` (in the order this process will train them) on batches of
    ``batch_size`` images of image_hw (height, width); nothing on one core, or where the cache cannot be
    claimed. On a warm cache the helper loads what it would compile and ends within seconds. The run's own
    batch and size: which algorithm a layer takes, and so which kernels compile, depends on them (Winograd
    needs 512 2x2 tiles a batch: kernels/numba/conv.py)."""
    _start_helper(["models", str(batch_size), *map(str, image_hw), *models])


def check_ahead(ops: Sequence[str], dtypes: Sequence[str]) -> None:
    """Start the helper for ``minicv check``'s numba rows of ``ops`` in ``dtypes`` (on a warm cache it runs
    them, a few seconds)."""
    _start_helper(["check", ",".join(dtypes), *ops])


def _start_helper(args: list[str]) -> None:
    from minicv.kernels.numba import cache_lock

    if _cores() < 2 or not cache_lock.LOCKED:
        return
    command = [sys.executable, "-m", __name__, *args]
    # this process's threads, not one: with one, run_tasks calls each kernel directly and the helper compiled
    # none of what launches kernels on threads (kernels/numba/tasks.py: then a launcher per kernel, ~0.6 s
    # each, now _pack, ~0.2 s), which this process then compiled alone, one after another, at the end
    helper = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(helper.kill)  # a helper still compiling when this process ends is of no more use


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def compile_models(models: Sequence[str], image_hw: tuple[int, int], batch_size: int) -> None:
    """The helper's work, on the numba device (see the module's doc), on the run's batches of images, but
    of at most HELPER_PIXELS pixels (the helper runs beside the run: its memory adds to the run's)."""
    import numpy as np

    import minicv
    import minicv.functional as F
    import minicv.kernels.numba as kernels
    from minicv import nn
    from minicv.data import CLASS_NAMES, OBJECT_NAMES, DataLoader, SceneDataset
    from minicv.models import TASKS, build_model
    from minicv.train import make_task

    def scenes(hw: tuple[int, int]) -> dict:
        """A batch of the demo's scenes: the helper's arrays get the run's dtypes and layouts."""
        return next(iter(DataLoader(SceneDataset("train", batch_size, size=hw), batch_size)))

    batch_size = max(1, min(batch_size, HELPER_PIXELS // (image_hw[0] * image_hw[1])))
    # the shared layers at the run's size rounded down to even: pooling then upsampling gives it back
    even_hw = (max(2, image_hw[0] - image_hw[0] % 2), max(2, image_hw[1] - image_hw[1] % 2))
    half_hw = (even_hw[0] // 2, even_hw[1] // 2)
    channels = 32  # a layer Winograd serves (docs/kernels/conv.md); the mask's classes are fewer

    def tensor(hw: tuple[int, int], requires_grad: bool = True, width: int = channels) -> minicv.Tensor:
        return minicv.Tensor(np.ones((batch_size, width, *hw), np.float32), device="numba",
                             requires_grad=requires_grad)

    def backward(y: minicv.Tensor) -> None:
        y.backward(np.ones(y.shape, np.float32))  # C-contiguous, as the gradient a model's next layer gives

    mask = minicv.Tensor(scenes(even_hw)["mask"], device="numba")
    corners = minicv.Tensor(np.zeros((batch_size, channels, *half_hw), np.int64), device="numba")

    def weight_gradient(width: int) -> None:
        """A 3x3 conv's weight gradient alone, from the kernel table: no forward, whose kernels the run
        compiles first (Winograd's for 32 channels, the direct one for 16)."""
        x = np.ones((batch_size, width, *even_hw), np.float32)
        kernels.conv2d_backward_weight(x, x, (width, width, 3, 3), (1, 1), (1, 1), (1, 1), 1)

    def transposed_conv() -> None:
        """A 4x4 stride-2 transposed conv's forward (the learned model's upsampling): backward-input."""
        x, w = np.ones((batch_size, channels, *half_hw), np.float32), np.ones((channels, channels, 4, 4), np.float32)
        kernels.conv2d_backward_input(x, w, (batch_size, channels, *even_hw), (2, 2), (1, 1), (1, 1), 1)

    # Layers, each alone: first what the run's first model needs once it has compiled the convolutions'
    # forward kernels and batch norm (the loss, then the weight gradients), then the other models' layers
    # in the reverse of the order the run meets them (learned's transposed conv, segnet's unpooling,
    # nearest's upsampling and pooling), so that the two meet in the middle. No convolution's forward:
    # every one compiles the phase split and a correlation, which the run compiles first.
    for layer in (lambda: F.cross_entropy(tensor(even_hw), mask).backward(),
                  lambda: weight_gradient(channels),
                  lambda: weight_gradient(16),
                  transposed_conv,
                  lambda: backward(F.max_unpool2d(tensor(half_hw), corners, 2)),
                  lambda: backward(F.interpolate(tensor(half_hw), scale_factor=2, mode="nearest")),
                  lambda: backward(F.max_pool2d(tensor(even_hw), 2)),
                  lambda: backward(nn.BatchNormReLU2d(channels).to("numba")(tensor(even_hw)))):
        layer()
    batch, built = scenes(image_hw), []
    for name in reversed(models):
        num_classes = len(CLASS_NAMES if TASKS[name] == "segmentation" else OBJECT_NAMES)
        kwargs = {"image_size": image_hw} if TASKS[name] == "localization" else {}  # its linear layer's size
        model = build_model(name, num_classes, **kwargs).to("numba")
        task = make_task(TASKS[name], num_classes)
        task.loss(model, batch).backward()
        built.append((model, task))
    for model, task in built:  # evaluation comes after an epoch of training: long after the steps
        model.eval()
        with minicv.no_grad():
            task.predict(model, batch["image"])


def compile_checks(ops: Sequence[str], dtypes: Sequence[str]) -> None:
    """The helper's work for ``minicv check``: its numba rows, last first (the run starts at the first)."""
    from minicv.check import check_op

    for name in reversed(ops):
        for dtype in reversed(dtypes):
            check_op(name, "numba", dtype)


if __name__ == "__main__":
    kind, *arguments = sys.argv[1:]
    if kind == "models":
        compile_models(arguments[3:], (int(arguments[1]), int(arguments[2])), int(arguments[0]))
    else:
        compile_checks(arguments[1:], arguments[0].split(","))
