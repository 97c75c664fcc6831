"""The training step as a benchmark: one SGD-with-momentum step of each lecture model, minicv against the
same network in PyTorch, and where the time of one step goes.

A step is what ``minicv demo`` repeats: forward, the loss (per-pixel cross-entropy for the segmenters,
the localizer's class + box loss), backward, optimizer step. The PyTorch side is a twin built here from
the minicv model (``torch_twin``): the same layers, the same forward code, the same weights and buffers
(the state dict copied), so the two do the same arithmetic on the same batch (the tests check the losses
agree). ``breakdown`` times one step layer by layer: each kernel-table function, each op outside its
kernels, the optimizer, and the rest (autograd engine, Python).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

import minicv
import minicv.functional as F
from minicv import nn, optim
from minicv.autograd import Function
from minicv.bench import BenchBackend, BenchCase, Problem
from minicv.data import CLASS_NAMES, OBJECT_NAMES
from minicv.demo import BATCH_SIZE
from minicv.devices import get_device
from minicv.kernels import KERNEL_TABLE
from minicv.models import TASKS, build_model, localization_loss, profile
from minicv.models.localization import Localizer
from minicv.models.segmentation import LearnedSegmenter, NaiveSegmenter, PoolingSegmenter
from minicv.tensor import Tensor

DEMO_SIZE = 64  # the demo's image side (minicv/demo.py trains on 64x64 scenes)
TRAIN_SIZES = ((BATCH_SIZE, DEMO_SIZE), (8, 128))  # (batch, image side): the demo's, and the 8x3x128x128
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


# ---------------------------------------------------------------------------------------------------
# The PyTorch twin of a minicv model.


def _torch_layer(layer: nn.Module) -> Any:
    """The PyTorch layer with ``layer``'s settings (its weights come with the state dict)."""
    import torch.nn as tnn

    if isinstance(layer, nn.Sequential):
        return tnn.Sequential(*(_torch_layer(child) for child in layer.children()))
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        kind, extra = (tnn.ConvTranspose2d, {"output_padding": layer.output_padding}) \
            if isinstance(layer, nn.ConvTranspose2d) else (tnn.Conv2d, {})
        return kind(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                    padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                    bias=layer.bias is not None, **extra)
    if isinstance(layer, nn.BatchNorm2d) and layer.has_bias == layer.affine:
        return tnn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
    if isinstance(layer, nn.Linear):
        return tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if isinstance(layer, nn.MaxPool2d):
        return tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                             return_indices=layer.return_indices, ceil_mode=layer.ceil_mode)
    if isinstance(layer, nn.MaxUnpool2d):
        return tnn.MaxUnpool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, nn.Upsample):
        return tnn.Upsample(layer.size, layer.scale_factor, layer.mode, layer.align_corners,
                            layer.recompute_scale_factor)
    if isinstance(layer, nn.ReLU):
        return tnn.ReLU()
    if isinstance(layer, nn.Flatten):
        return tnn.Flatten(layer.start_dim, layer.end_dim)
    raise TypeError(f"torch_twin: no PyTorch twin for layer {type(layer).__name__} ({layer!r})")


def _localizer_forward(self: Any, x: Any) -> tuple[Any, Any]:
    """Localizer.forward, with PyTorch's sigmoid in place of minicv's."""
    import torch

    h = self.shared(self.trunk(x))
    return self.class_head(h), torch.sigmoid(self.box_head(h))


# The models' forward code, run on the twin's PyTorch layers (it only calls its layers and their attributes).
_FORWARDS: dict[type, Callable[[Any, Any], Any]] = {
    NaiveSegmenter: NaiveSegmenter.forward,
    PoolingSegmenter: PoolingSegmenter.forward,
    LearnedSegmenter: LearnedSegmenter.forward,
    Localizer: _localizer_forward,
}


def torch_twin(model: nn.Module) -> Any:
    """The same network in PyTorch (CPU, float32): ``model``'s layers, forward code, weights and buffers."""
    import torch

    forward = _FORWARDS.get(type(model))
    if forward is None:
        raise TypeError(f"torch_twin: expected one of {', '.join(c.__name__ for c in _FORWARDS)}, "
                        f"but got {type(model).__name__}")

    class Twin(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return forward(self, x)

    twin = Twin()
    for name, child in model.named_children():
        twin.add_module(name, _torch_layer(child))
    twin.unpool_mode = getattr(model, "unpool_mode", None)  # PoolingSegmenter's choice of unpooling
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    return twin.train(model.training)


# ---------------------------------------------------------------------------------------------------
# One training step as a benchmark problem.


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
    devices: ClassVar[tuple[str, ...] | None] = ("numba", "cuda")  # the numpy device is the spec, not a contender

    @property
    def label(self) -> str:
        return f"{self.model} N{self.n} 3x{self.hw}x{self.hw}"

    def arrays(self, rng, dtype):
        batch = {"image": rng.standard_normal((self.n, 3, self.hw, self.hw), dtype)}
        if TASKS[self.model] == "segmentation":
            batch["mask"] = rng.integers(0, num_classes(self.model), (self.n, self.hw, self.hw))
        else:
            batch["label"] = rng.integers(0, num_classes(self.model), self.n)
            corner = rng.uniform(0.0, 0.5, (self.n, 2))
            batch["box"] = np.concatenate([corner, rng.uniform(0.1, 0.5, (self.n, 2))], axis=1).astype(dtype)
        return batch

    def work(self, backward, itemsize):
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


# ---------------------------------------------------------------------------------------------------
# Where the time of one step goes.


class _Timers:
    """Self time per label: a call's time less that of the timed calls inside it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._inner: list[float] = []  # per open call, the time of the timed calls inside it

    def time(self, label: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        self._inner.append(0.0)
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total = time.perf_counter() - began
            self.seconds[label] += total - self._inner.pop()
            self.calls[label] += 1
            if self._inner:
                self._inner[-1] += total

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@contextlib.contextmanager
def _timed(timers: _Timers, kernels: Any) -> Iterator[None]:
    """Time every kernel-table function of ``kernels``, every op's forward and backward (outside its
    kernels) and the optimizer's step and zero_grad, restoring them all on exit."""
    patched: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, replacement: Any) -> None:
        patched.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, replacement)

    def kernel(name: str, fn: Callable) -> Callable:
        return lambda *args, **kwargs: timers.time(f"kernel {name}", fn, *args, **kwargs)

    def method(kind: str, name: str, fn: Callable) -> Callable:
        return lambda obj, *args, **kwargs: timers.time(f"{kind} {type(obj).__name__}.{name}", fn, obj, *args, **kwargs)

    try:
        for name in KERNEL_TABLE:
            patch(kernels, name, kernel(name, getattr(kernels, name)))
        for cls in _subclasses(Function):
            for name in ("forward", "backward"):
                if name in cls.__dict__:
                    patch(cls, name, method("op", name, cls.__dict__[name]))
        for name in ("step", "zero_grad"):
            patch(optim.Optimizer, name, method("optimizer", name, optim.Optimizer.__dict__[name]))
        yield
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


def breakdown(model: str = "segnet", device: str = "numba", n: int = 8, hw: int = 128, steps: int = 3,
              seed: int = 0) -> dict:
    """Time ``steps`` training steps of ``model`` (after one untimed step that compiles): the mean per step
    of each kernel-table function, of each op outside its kernels, of the optimizer, and of the rest."""
    if model not in TASKS:
        raise SystemExit(f"minicv bench: unknown model {model!r} for --breakdown; expected one of {', '.join(TASKS)}")
    problem = TrainStepProblem(model, n, hw)
    step = problem.minicv_step(device, problem.arrays(np.random.default_rng(seed), np.float32))
    step()  # compiles, allocates: not timed
    timers = _Timers()
    with _timed(timers, get_device(device).kernels):
        step()  # each wrapper's first call (and a kernel specialised for a traced layout) is not timed either
        timers.reset()
        began = time.perf_counter()
        for _ in range(steps):
            step()
        total = (time.perf_counter() - began) / steps
    parts = [{"what": label, "ms": 1e3 * s / steps, "calls": timers.calls[label] // steps}
             for label, s in timers.seconds.items()]
    parts.append({"what": "other (autograd engine, Tensor wrapping, Python)",
                  "ms": 1e3 * (total - sum(timers.seconds.values()) / steps), "calls": None})
    parts.sort(key=lambda p: -p["ms"])
    for p in parts:
        p["share"] = p["ms"] / (1e3 * total)
    return {"model": model, "device": device, "case": problem.label, "steps": steps, "step_ms": 1e3 * total,
            "parts": parts}


def breakdown_markdown(result: dict, machine: dict) -> str:
    lines = [
        f"## {result['model']} training step, {result['case']}, {result['device']} device",
        "",
        f"{machine['cpu']} ({machine.get('cpu_arch') or '?'}), {machine['cores']} cores, {machine['date']}, "
        f"load average {machine['load_average']:.1f}; mean of {result['steps']} steps after a warm-up step: "
        f"**{result['step_ms']:.1f} ms per step**. Self times: an op's row excludes the kernels it calls.",
        "",
        "| where | ms per step | share | calls per step |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {p['what']} | {p['ms']:.2f} | {100 * p['share']:.1f}% | {'' if p['calls'] is None else p['calls']} |"
              for p in result["parts"]]
    return "\n".join(lines) + "\n"
