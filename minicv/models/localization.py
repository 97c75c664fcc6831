"""Classification + localization: one network, a shared convolutional trunk and two heads.

The class head gives one score per object class (softmax cross-entropy); the box head regresses the
object's box. Box convention: ``(x, y, w, h)`` with ``(x, y)`` the top-left corner, all four divided
by the image size (x and w by the width, y and h by the height), so every coordinate lies in [0, 1]
whatever the image size; the head ends in a sigmoid to stay there. ``to_pixels`` converts back.

Training minimises ``cross_entropy(scores, label) + box_weight * smooth_l1(box, true_box)``: the two
tasks share every trunk feature, and the weight balances their gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import minicv.functional as F
from minicv import nn
from minicv.models.segmentation import conv_bn_relu
from minicv.models.sizes import check_image_size
from minicv.tensor import Tensor


class Localizer(nn.Module):
    """Trunk: per level a conv layer and a 2x2 max-pool. Heads: a shared hidden layer, then a linear
    class head and a linear box head."""

    def __init__(
        self,
        num_classes: int,
        image_size: int | tuple[int, int] = 64,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64, 64),
        hidden: int = 128,
    ):
        super().__init__()
        height, width = image_size if isinstance(image_size, (tuple, list)) else (image_size, image_size)
        self.size_multiple = scale = 2 ** len(widths)  # one 2x2 pool per level
        check_image_size(self, height, width, "image_size")
        ins = [in_channels, *widths[:-1]]
        self.trunk = nn.Sequential(*(nn.Sequential(conv_bn_relu(a, b), nn.MaxPool2d(2)) for a, b in zip(ins, widths)))
        features = widths[-1] * (height // scale) * (width // scale)
        self.shared = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU())
        self.class_head = nn.Linear(hidden, num_classes)
        self.box_head = nn.Linear(hidden, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.shared(self.trunk(x))
        return self.class_head(h), F.sigmoid(self.box_head(h))


def localization_loss(
    scores: Tensor, boxes: Tensor, labels: Tensor, true_boxes: Tensor, box_weight: float = 10.0, beta: float = 0.05
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, class loss, box loss): cross-entropy plus ``box_weight`` times smooth L1 on the
    normalised boxes (``beta`` is where smooth L1 turns from quadratic to linear)."""
    class_loss = F.cross_entropy(scores, labels)
    box_loss = F.smooth_l1_loss(boxes, true_boxes, beta=beta)
    return class_loss + box_weight * box_loss, class_loss, box_loss


def normalise_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel boxes (N, 4) (x, y, w, h) -> the [0, 1] convention above."""
    return (np.asarray(boxes) / np.array([width, height, width, height])).astype(np.float32)


def to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalised boxes (N, 4) -> pixel boxes (x, y, w, h)."""
    return np.asarray(boxes) * np.array([width, height, width, height])


def loc(num_classes: int, **kwargs: Any) -> Localizer:
    return Localizer(num_classes, **kwargs)
