"""The lecture's models, by name: four segmentation decoders and a classifier + localizer.

``build_model(name, num_classes)`` makes one; ``TASKS[name]`` says what it is trained for;
``profile(model, input_shape)`` counts its parameters and its multiply-add FLOPs per image;
``check_image_size(model, height, width)`` refuses image sizes the model cannot take (its
``size_multiple``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from minicv import nn
from minicv.autograd import no_grad
from minicv.models.localization import Localizer, loc, localization_loss, normalise_boxes, to_pixels
from minicv.models.segmentation import (
    LearnedSegmenter,
    NaiveSegmenter,
    PoolingSegmenter,
    learned,
    naive,
    nearest,
    segnet,
)
from minicv.models.sizes import check_image_size, takes_size
from minicv.tensor import zeros

MODELS: dict[str, Callable[..., nn.Module]] = {
    "naive": naive,
    "nearest": nearest,
    "segnet": segnet,
    "learned": learned,
    "loc": loc,
}
TASKS = {
    "naive": "segmentation",
    "nearest": "segmentation",
    "segnet": "segmentation",
    "learned": "segmentation",
    "loc": "localization",
}
SEGMENTERS = tuple(name for name, task in TASKS.items() if task == "segmentation")


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}, but got {name!r}")
    return MODELS[name](num_classes, **kwargs)


def layer_flops(layer: nn.Module, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
    """Floating-point operations (a multiply-add counts 2) of one conv or linear layer for one image."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        macs = np.prod(output_shape[1:]) * (layer.in_channels // layer.groups) * kh * kw
    elif isinstance(layer, nn.ConvTranspose2d):
        kh, kw = layer.kernel_size
        macs = np.prod(input_shape[1:]) * (layer.out_channels // layer.groups) * kh * kw
    elif isinstance(layer, nn.Linear):
        macs = layer.in_features * layer.out_features
    else:
        return 0
    return int(2 * macs)


def profile(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Parameters, and FLOPs per image of the conv and linear layers, measured by one forward pass on
    a zero image of ``input_shape`` (C, H, W) (elementwise layers are not counted)."""
    total = 0

    def count(layer: nn.Module, inputs: tuple, output) -> None:
        nonlocal total
        total += layer_flops(layer, inputs[0].shape, output.shape)

    counted = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, counted)]
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            model(zeros(1, *input_shape, device=model.device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    parameters = sum(p.size for p in model.parameters())
    return {"parameters": int(parameters), "flops": total}


__all__ = [
    "MODELS",
    "SEGMENTERS",
    "TASKS",
    "LearnedSegmenter",
    "Localizer",
    "NaiveSegmenter",
    "PoolingSegmenter",
    "build_model",
    "check_image_size",
    "layer_flops",
    "localization_loss",
    "normalise_boxes",
    "profile",
    "takes_size",
    "to_pixels",
]
