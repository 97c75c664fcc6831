"""Evaluation metrics for segmentation, classification and localization, on NumPy arrays.

Segmentation (``pred`` and ``target`` are integer class maps of the same shape, (H, W) or (N, H, W)):

- ``confusion_matrix``: ``M[t, p]`` = number of pixels of true class t predicted as p, over every pixel
  whose target is not ``ignore_index``. Summing the matrices of batches gives the dataset's matrix.
- ``pixel_accuracy`` = trace(M) / sum(M), the fraction of counted pixels predicted right.
- ``iou_from_confusion`` / ``per_class_iou``: IoU_c = TP_c / (TP_c + FP_c + FN_c) with TP_c = M[c, c],
  FP_c = sum_t M[t, c] - TP_c, FN_c = sum_p M[c, p] - TP_c; NaN for a class absent from both pred and
  target (0 / 0).
- ``mean_iou``: the mean of the per-class IoUs that are not NaN.
- ``boundary_f1``: how well region contours line up, within ``tolerance`` pixels. See its docstring.

Classification and localization:

- ``accuracy``: the fraction of samples whose predicted label (or arg-max score) equals the target.
- ``box_iou`` / ``mean_box_iou``: for boxes (x, y, w, h), the area of the intersection over the area of
  the union; 0 where the union has no area.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike


def _class_maps(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target: expected the same shape, got {pred.shape} and {target.shape}")
    for name, array in (("pred", pred), ("target", target)):
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"{name}: expected integer class indices, got dtype {array.dtype}")
    return pred.astype(np.int64), target.astype(np.int64)


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int | None = None) -> np.ndarray:
    """(num_classes, num_classes) int64 counts ``M[true class, predicted class]``; ignored pixels skipped."""
    pred, target = _class_maps(pred, target)
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    counted = target != ignore_index if ignore_index is not None else np.ones(target.shape, dtype=bool)
    pred, target = pred[counted], target[counted]
    for name, labels in (("pred", pred), ("target", target)):
        outside = (labels < 0) | (labels >= num_classes)
        if outside.any():
            raise ValueError(f"{name}: class {labels[outside][0]} is outside [0, {num_classes})")
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def pixel_accuracy(pred: np.ndarray, target: np.ndarray, ignore_index: int | None = None) -> float:
    """The fraction of pixels (target != ignore_index) whose predicted class equals the target's."""
    pred, target = _class_maps(pred, target)
    counted = target != ignore_index if ignore_index is not None else np.ones(target.shape, dtype=bool)
    if not counted.any():
        raise ValueError("target: no pixel to count (all pixels equal ignore_index, or the maps are empty)")
    return float((pred[counted] == target[counted]).mean())


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU TP / (TP + FP + FN) from a confusion matrix; NaN for classes absent from both."""
    confusion = np.asarray(confusion)
    true_positive = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def per_class_iou(pred: np.ndarray, target: np.ndarray, num_classes: int,
                  ignore_index: int | None = None) -> np.ndarray:
    """(num_classes,) IoU of each class over all pixels given; NaN for classes absent from both."""
    return iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def mean_iou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None = None) -> float:
    """The mean of the per-class IoUs over the classes present in pred or target."""
    ious = per_class_iou(pred, target, num_classes, ignore_index)
    present = ~np.isnan(ious)
    return float(ious[present].mean()) if present.any() else float("nan")


def class_boundaries(masks: np.ndarray) -> np.ndarray:
    """Boundary pixels of (..., H, W) class maps: a pixel whose 4-neighbour (inside the image) has
    another class. The image's frame is not a boundary; a pixel's class says whose boundary it is."""
    masks = np.asarray(masks)
    boundary = np.zeros(masks.shape, dtype=bool)
    vertical = masks[..., 1:, :] != masks[..., :-1, :]
    horizontal = masks[..., :, 1:] != masks[..., :, :-1]
    boundary[..., 1:, :] |= vertical
    boundary[..., :-1, :] |= vertical
    boundary[..., :, 1:] |= horizontal
    boundary[..., :, :-1] |= horizontal
    return boundary


def dilate(binary: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of (..., H, W) maps by a (2 radius + 1)^2 square: True within Chebyshev distance
    ``radius`` of a True pixel. The square is separable: a 1-D dilation along rows, then columns."""
    out = np.asarray(binary, dtype=bool)
    for axis in (-2, -1):
        grown = out.copy()
        length = out.shape[axis]
        for shift in range(1, min(radius, length - 1) + 1):
            ahead = [slice(None)] * out.ndim
            behind = [slice(None)] * out.ndim
            ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(ahead)] |= out[tuple(behind)]
            grown[tuple(behind)] |= out[tuple(ahead)]
        out = grown
    return out


class BoundaryScore(NamedTuple):
    precision: float
    recall: float
    f1: float


def boundary_f1(pred: np.ndarray, target: np.ndarray, tolerance: int = 2) -> BoundaryScore:
    """Boundary precision, recall and F1 of class maps (H, W) or (N, H, W), averaged over images.

    For each class c, B_pred(c) and B_target(c) are the boundary pixels (``class_boundaries``) of class c
    in pred and in target. A boundary pixel matches when a pixel of the other map's boundary of the same
    class lies within ``tolerance`` pixels (Chebyshev distance: a square dilation). Per image, summing
    over classes::

        precision = sum_c |B_pred(c) & dilate(B_target(c))| / sum_c |B_pred(c)|
        recall    = sum_c |B_target(c) & dilate(B_pred(c))| / sum_c |B_target(c)|
        f1        = 2 precision recall / (precision + recall)   (0 when both are 0)

    An image with no boundary in pred has precision 1 if target has none either (nothing to find) and 0
    otherwise; likewise recall. The three scores are each averaged over the images.
    """
    pred, target = _class_maps(pred, target)
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred: expected (H, W) or (N, H, W) class maps, got shape {pred.shape}")
    if int(tolerance) != tolerance or tolerance < 0:
        raise ValueError(f"tolerance: expected a non-negative int, got {tolerance!r}")
    pred, target = pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])
    pred_edges, target_edges = class_boundaries(pred), class_boundaries(target)
    matched_pred = np.zeros(len(pred), dtype=np.int64)
    matched_target = np.zeros(len(pred), dtype=np.int64)
    for c in np.union1d(np.unique(pred), np.unique(target)):
        pred_c = pred_edges & (pred == c)
        target_c = target_edges & (target == c)
        matched_pred += (pred_c & dilate(target_c, tolerance)).sum(axis=(1, 2))
        matched_target += (target_c & dilate(pred_c, tolerance)).sum(axis=(1, 2))
    pred_count = pred_edges.sum(axis=(1, 2))
    target_count = target_edges.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred_count > 0, matched_pred / pred_count, target_count == 0)
        recall = np.where(target_count > 0, matched_target / target_count, pred_count == 0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return BoundaryScore(float(precision.mean()), float(recall.mean()), float(f1.mean()))


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Classification accuracy: pred holds labels (N,) or scores (N, K) (arg-max taken); target (N,)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.ndim != 1 or pred.shape != target.shape or len(target) == 0:
        raise ValueError(
            f"pred, target: expected (N,) or (N, K) and (N,) with N > 0, got {pred.shape}, {target.shape}"
        )
    return float((pred == target).mean())


def box_iou(boxes_a: ArrayLike, boxes_b: ArrayLike) -> np.ndarray:
    """Elementwise IoU of (..., 4) boxes (x, y, w, h) with non-negative w, h; 0 where the union is empty."""
    a, b = np.asarray(boxes_a, dtype=np.float64), np.asarray(boxes_b, dtype=np.float64)
    if a.shape[-1:] != (4,) or b.shape[-1:] != (4,):
        raise ValueError(f"boxes: expected (..., 4) arrays of (x, y, w, h), got {a.shape} and {b.shape}")
    for name, boxes in (("boxes_a", a), ("boxes_b", b)):
        if np.any(boxes[..., 2:] < 0):
            raise ValueError(f"{name}: widths and heights must be non-negative")
    # The intersection spans [max of starts, min of ends) along x and along y, if not empty.
    start = np.maximum(a[..., :2], b[..., :2])
    end = np.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:])
    intersection = np.prod(np.clip(end - start, 0, None), axis=-1)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def mean_box_iou(boxes_a: ArrayLike, boxes_b: ArrayLike) -> float:
    """The mean of ``box_iou`` over all box pairs."""
    return float(np.mean(box_iou(boxes_a, boxes_b)))
