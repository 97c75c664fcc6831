"""Which models a learner's kernels can train: the kernels each model calls, found by running it.

A model's forward and backward run once on the specification through a recording kernel table, so the
list follows the models as they change (SegNet needs conv, pool, unpool and cross-entropy; the nearest
decoder upsampling instead of unpooling; the learned decoder the transposed convolution).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from minicv.devices import Device
from minicv.exercises.cases import KernelCall, Recorder
from minicv.models import TASKS, build_model
from minicv.train import make_task

SIZE = 16  # the smallest side every model takes (the localizer pools four times)


@cache
def kernels_needed(model: str, spec_module: str = "minicv.kernels.numpy") -> frozenset[str]:
    """The kernels one training step of ``model`` calls (forward and backward)."""
    import importlib

    calls: list[KernelCall] = []
    device = Device("spec", np, Recorder(importlib.import_module(spec_module), None, calls))
    task_name = TASKS[model]
    kwargs = {"image_size": SIZE} if task_name == "localization" else {}
    net = build_model(model, 3, **kwargs).to(device)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.random((2, 3, SIZE, SIZE), dtype=np.float32),
        "mask": rng.integers(0, 3, (2, SIZE, SIZE)),
        "label": rng.integers(0, 3, 2),
        "box": np.array([[2.0, 3.0, 8.0, 6.0]] * 2, dtype=np.float32),
    }
    make_task(task_name, 3).loss(net, batch).backward()
    return frozenset(call.kernel for call in calls)


def unlocked(passing: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(models every needed kernel of which passes, {locked model: the kernels it still needs})."""
    ready, locked = [], {}
    for model in TASKS:
        missing = sorted(kernels_needed(model) - passing)
        if missing:
            locked[model] = missing
        else:
            ready.append(model)
    return ready, locked
