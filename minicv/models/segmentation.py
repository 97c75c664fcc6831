"""The lecture's four ways to classify every pixel.

- ``naive``: a stack of same-resolution 3x3 convolutions ending in per-pixel class scores. Simple, but
  every layer pays full resolution, and the receptive field grows by only 2 pixels a layer.
- ``nearest``: an encoder that max-pools down, a decoder that upsamples back by nearest neighbour
  (each value copied into a 2x2 block: "bed of nails" without the nails, pixelated).
- ``segnet``: the same encoder keeping each pooling layer's argmax indices; the decoder max-unpools
  with the indices of the matching pooling layer, putting each value back where its maximum came from.
- ``learned``: strided 3x3 convolutions down, transposed 4x4 stride-2 convolutions up: the network
  learns its own downsampling and upsampling.

All end in a 1x1 convolution giving ``num_classes`` scores per pixel, trained with per-pixel softmax
cross-entropy. The three encoder-decoders share their channel widths, so they differ only in how they
go down and come back up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minicv import nn
from minicv.tensor import Tensor


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias: batch norm has one), batch norm and ReLU (fused: one layer, with batch
    norm's state-dict keys, "1.weight" and so on)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNormReLU2d(out_channels),
    )


def up_bn_relu(channels: int) -> nn.Sequential:
    """Transposed 4x4 convolution with stride 2 (doubles the size exactly), batch norm and ReLU (fused)."""
    return nn.Sequential(
        nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False),
        nn.BatchNormReLU2d(channels),
    )


class NaiveSegmenter(nn.Module):
    """``depth`` same-size 3x3 conv layers of ``width`` channels, then a 1x1 classifier."""

    size_multiple = 1  # any size (see minicv.models.sizes)

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 24, depth: int = 5):
        super().__init__()
        widths = [in_channels] + [width] * depth
        self.features = nn.Sequential(*(conv_bn_relu(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class PoolingSegmenter(nn.Module):
    """Encoder: per level two conv layers then a 2x2 max-pool. Decoder: per level unpool (nearest
    neighbour, or max-unpool with the matching pool's indices) then two conv layers."""

    def __init__(self, num_classes: int, unpool: str, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        if unpool not in ("nearest", "max"):
            raise ValueError(f"unpool: expected 'nearest' or 'max', but got {unpool!r}")
        self.unpool_mode = unpool
        self.size_multiple = 2 ** len(widths)  # one 2x2 pool per level (see minicv.models.sizes)
        ins = [in_channels, *widths[:-1]]
        self.down = nn.Sequential(*(nn.Sequential(conv_bn_relu(a, b), conv_bn_relu(b, b)) for a, b in zip(ins, widths)))
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2) if unpool == "max" else nn.Upsample(scale_factor=2, mode="nearest")
        outs = [widths[0], *widths[:-1]]  # each decoder level returns to the width of the level above
        # two conv layers per decoder level, as the learned decoder has (transposed conv + conv): they
        # also fill in the sparse maps that max-unpooling leaves
        self.up = nn.Sequential(
            *(nn.Sequential(conv_bn_relu(a, a), conv_bn_relu(a, b)) for a, b in reversed(list(zip(widths, outs))))
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        indices = []
        for level in self.down:
            x, index = self.pool(level(x))
            indices.append(index)
        for level, index in zip(self.up, reversed(indices)):
            x = self.unpool(x, index) if self.unpool_mode == "max" else self.unpool(x)
            x = level(x)
        return self.classifier(x)


class LearnedSegmenter(nn.Module):
    """Encoder: per level a conv layer then a stride-2 conv layer. Decoder: per level a transposed
    stride-2 conv layer then a conv layer. Same widths as PoolingSegmenter."""

    def __init__(self, num_classes: int, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        self.size_multiple = 2 ** len(widths)  # one stride-2 conv per level (see minicv.models.sizes)
        ins = [in_channels, *widths[:-1]]
        self.down = nn.Sequential(
            *(nn.Sequential(conv_bn_relu(a, b), conv_bn_relu(b, b, stride=2)) for a, b in zip(ins, widths))
        )
        outs = [widths[0], *widths[:-1]]
        self.up = nn.Sequential(
            *(nn.Sequential(up_bn_relu(a), conv_bn_relu(a, b)) for a, b in reversed(list(zip(widths, outs))))
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.up(self.down(x)))


def naive(num_classes: int, **kwargs: Any) -> NaiveSegmenter:
    return NaiveSegmenter(num_classes, **kwargs)


def nearest(num_classes: int, **kwargs: Any) -> PoolingSegmenter:
    return PoolingSegmenter(num_classes, unpool="nearest", **kwargs)


def segnet(num_classes: int, **kwargs: Any) -> PoolingSegmenter:
    return PoolingSegmenter(num_classes, unpool="max", **kwargs)


def learned(num_classes: int, **kwargs: Any) -> LearnedSegmenter:
    return LearnedSegmenter(num_classes, **kwargs)
