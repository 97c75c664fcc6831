"""The training step as a benchmark: one SGD-with-momentum step of each lecture model, minicv against the
same network in PyTorch.

A step is what ``minicv demo`` repeats: forward, the loss (per-pixel cross-entropy for the segmenters,
the localizer's class + box loss), backward, optimizer step. The PyTorch side is the model's twin
(``twin.torch_twin``: the same layers, forward code, weights and buffers), so the two do the same
arithmetic on the same batch (the tests check the losses agree).
"""

from __future__ import annotations

import functools
import inspect
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

import minicv
import minicv.functional as F
from minicv import nn, optim
from minicv.bench.backends import BenchBackend
from minicv.bench.cases import BenchCase
from minicv.bench.problems import Problem
from minicv.bench.twin import torch_twin
from minicv.data import CLASS_NAMES, OBJECT_NAMES
from minicv.demo import BATCH_SIZE, IMAGE_SIZE
from minicv.models import TASKS, build_model, localization_loss, profile
from minicv.tensor import Tensor

TRAIN_SIZES = ((BATCH_SIZE, IMAGE_SIZE), (8, 128))  # (batch, image side): the demo's, and the 8x3x128x128
QUICK_TRAIN_SIZES = ((2, 16), (2, 32))
LR, MOMENTUM = 1e-3, 0.9  # a small rate: the weights barely move over a benchmark's repeated steps
WEIGHT_SEED = 0
_LOSS_DEFAULTS = inspect.signature(localization_loss).parameters
BOX_WEIGHT, BETA = _LOSS_DEFAULTS["box_weight"].default, _LOSS_DEFAULTS["beta"].default


def num_classes(model: str) -> int:
    return len(CLASS_NAMES if TASKS[model] == "segmentation" else OBJECT_NAMES)


def build(model: str, hw: int) -> nn.Module:
    """The lecture's ``model`` (on the numpy device) for hw x hw images, with the benchmark's weights."""
    minicv.manual_seed(WEIGHT_SEED)
    kwargs = {"image_size": hw} if model == "loc" else {}  # the localizer's linear layer is sized for its images
    return build_model(model, num_classes(model), **kwargs)


def _sgd_step(optimizer: Any, loss: Callable[[], Any]) -> Callable[[], Any]:
    """One training step as a no-argument callable, for either engine (their optimizers and tensors
    share these names): zero the gradients, the loss, its backward, the update; it returns the loss."""

    def step() -> Any:
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
        return value

    return step


@dataclass(frozen=True)
class TrainStepProblem(Problem):
    """One SGD-with-momentum step of ``model`` on a batch of ``n`` 3 x hw x hw images."""

    model: str
    n: int
    hw: int
    op = "train_step"
    bound = "compute"
    differentiable = ()
    kernel_path = False  # a whole network: no single kernel-table call to time
    devices: ClassVar[tuple[str, ...]] = ("numba", "cuda")  # the numpy device is the spec, not a contender
    # a step's median from 5 samples (the 0.6 s budget) moved 0.96-1.21x PyTorch between runs on a shared
    # 2-core VM (SegNet N32, steps 160-230 ms in one process): 15 or more samples per engine
    budget_scale: ClassVar[float] = 6.0

    @property
    def label(self) -> str:
        return f"{self.model} N{self.n} 3x{self.hw}x{self.hw}"

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        batch: dict[str, np.ndarray] = {"image": rng.standard_normal((self.n, 3, self.hw, self.hw), dtype)}
        if TASKS[self.model] == "segmentation":
            batch["mask"] = rng.integers(0, num_classes(self.model), (self.n, self.hw, self.hw))
        else:
            batch["label"] = rng.integers(0, num_classes(self.model), self.n)
            corner = rng.uniform(0.0, 0.5, (self.n, 2))
            batch["box"] = np.concatenate([corner, rng.uniform(0.1, 0.5, (self.n, 2))], axis=1).astype(dtype)
        return batch

    def work(self, backward: bool, itemsize: int) -> float:
        # forward + the two backward products (input and weight gradients): 3x the forward's FLOPs
        return 3 * self.n * _flops_per_image(self.model, self.hw)

    def minicv_loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        if TASKS[self.model] == "segmentation":
            return F.cross_entropy(model(batch["image"]), batch["mask"])
        scores, boxes = model(batch["image"])
        return localization_loss(scores, boxes, batch["label"], batch["box"], BOX_WEIGHT, BETA)[0]

    def torch_loss(self, twin: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as TF

        if TASKS[self.model] == "segmentation":
            return TF.cross_entropy(twin(batch["image"]), batch["mask"])
        scores, boxes = twin(batch["image"])
        return TF.cross_entropy(scores, batch["label"]) + BOX_WEIGHT * TF.smooth_l1_loss(boxes, batch["box"], beta=BETA)

    def minicv_step(self, device: str, arrays: dict[str, np.ndarray]) -> Callable[[], Tensor]:
        """One step per call on ``device``; each call returns its loss (computed before the update)."""
        model = build(self.model, self.hw).to(device)
        optimizer = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        batch = {k: Tensor(v, device=device) for k, v in arrays.items()}
        return _sgd_step(optimizer, lambda: self.minicv_loss(model, batch))

    def torch_step(self, where: str, arrays: dict[str, np.ndarray]) -> Callable[[], Any]:
        import torch

        twin = torch_twin(build(self.model, self.hw)).to(where)
        optimizer = torch.optim.SGD(twin.parameters(), lr=LR, momentum=MOMENTUM)
        batch = {k: torch.from_numpy(v).to(where, copy=True) for k, v in arrays.items()}  # PyTorch's own memory
        return _sgd_step(optimizer, lambda: self.torch_loss(twin, batch))

    def step(self, path: str, case: BenchCase, backend: BenchBackend,
             arrays: dict[str, np.ndarray]) -> Callable[[], Any]:
        if path == "op":
            return self.minicv_step(backend.name, arrays)
        if path == "torch":
            return self.torch_step("cuda" if backend.on_gpu else "cpu", arrays)
        raise ValueError(f"TrainStepProblem: no {path!r} path (expected 'op' or 'torch')")


@functools.cache
def _flops_per_image(model: str, hw: int) -> int:
    return profile(build(model, hw), (3, hw, hw))["flops"]


def train_cases(quick: bool) -> list[BenchCase]:
    """A step of each model at the demo's batch and image size and at 8x3x128x128 (--quick: tiny ones),
    each with the issue's target: at least as fast as PyTorch."""
    return [BenchCase(TrainStepProblem(model, n, hw), True, "train step", ("vs torch", 1.0))
            for n, hw in (QUICK_TRAIN_SIZES if quick else TRAIN_SIZES) for model in TASKS]


def geometric_means(rows: list[dict]) -> dict[str, float]:
    """Per ISA and image size, the geometric mean of the models' ``vs torch`` on numba's train-step rows
    (the issue's target: >= 1.2), keyed "<isa> N<n> 3x<hw>x<hw>"."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["op"] == "train_step" and (r["device"], r["path"]) == ("numba", "op") and "vs_torch" in r:
            groups[f"{r.get('isa', 'native')} {r['case'].split(' ', 1)[1]}"].append(r["vs_torch"])
    return {key: float(np.exp(np.mean(np.log(v)))) for key, v in groups.items()}
