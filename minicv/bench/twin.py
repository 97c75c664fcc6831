"""The PyTorch twin of a minicv model: the same layers, the same forward code, the same weights and
buffers (the state dict copied), so that a training step of each does the same arithmetic."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from minicv import nn
from minicv.models.localization import Localizer
from minicv.models.segmentation import LearnedSegmenter, NaiveSegmenter, PoolingSegmenter


def _torch_layer(layer: nn.Module) -> Any:
    """The PyTorch layer with ``layer``'s settings (its weights come with the state dict)."""
    import torch.nn as tnn

    if isinstance(layer, nn.Sequential):
        return tnn.Sequential(*(_torch_layer(child) for child in layer.children()))
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        kind: Any  # tnn.Conv2d or tnn.ConvTranspose2d: their padding types differ (a string for Conv2d only)
        extra: dict[str, Any]
        kind, extra = (tnn.ConvTranspose2d, {"output_padding": layer.output_padding}) \
            if isinstance(layer, nn.ConvTranspose2d) else (tnn.Conv2d, {})
        return kind(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                    padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                    bias=layer.bias is not None, **extra)
    if isinstance(layer, nn.BatchNorm2d) and layer.has_bias == layer.affine:
        kind = _torch_batch_norm_relu() if isinstance(layer, nn.BatchNormReLU2d) else tnn.BatchNorm2d
        return kind(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
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


@functools.cache
def _torch_batch_norm_relu() -> type:
    """BatchNormReLU2d's twin: PyTorch's BatchNorm2d, then its ReLU, in one layer (so with BatchNorm2d's
    state-dict keys, as BatchNormReLU2d has); one class for every layer of a twin."""
    import torch
    import torch.nn as tnn

    class BatchNormReLU2d(tnn.BatchNorm2d):
        def forward(self, input: Any) -> Any:  # noqa: A002 (PyTorch's name)
            return torch.relu(super().forward(input))

    return BatchNormReLU2d


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

    if type(model) not in _FORWARDS:
        raise TypeError(f"torch_twin: expected one of {', '.join(c.__name__ for c in _FORWARDS)}, "
                        f"but got {type(model).__name__}")
    forward = _FORWARDS[type(model)]

    class Twin(torch.nn.Module):
        unpool_mode: str | None = None  # PoolingSegmenter's choice of unpooling, copied below

        def forward(self, x: Any) -> Any:
            return forward(self, x)

    twin = Twin()
    for name, child in model.named_children():
        twin.add_module(name, _torch_layer(child))
    twin.unpool_mode = getattr(model, "unpool_mode", None)  # PoolingSegmenter's choice of unpooling
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    return twin.train(model.training)
