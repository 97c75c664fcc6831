import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicv.metrics import (
    accuracy,
    boundary_f1,
    box_iou,
    class_boundaries,
    confusion_matrix,
    dilate,
    iou_from_confusion,
    mean_box_iou,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def class_map_pairs(draw, max_side=7):
    """(pred, target, num_classes), (N, H, W) maps: a random target, and pred with some pixels redrawn."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    num_classes = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    target = rng.integers(0, num_classes, size=shape)
    noise = rng.random(shape) < draw(st.sampled_from([0.0, 0.2, 0.6]))
    pred = np.where(noise, rng.integers(0, num_classes, size=shape), target)
    return pred, target, num_classes


# Brute-force references: loops over pixels, straight from the definitions.


def brute_confusion(pred, target, num_classes, ignore_index=None):
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.ravel(), target.ravel(), strict=True):
        if t != ignore_index:
            matrix[t, p] += 1
    return matrix


def brute_iou(pred, target, num_classes):
    ious = []
    for c in range(num_classes):
        intersection = sum(1 for p, t in zip(pred.ravel(), target.ravel(), strict=True) if p == c and t == c)
        union = sum(1 for p, t in zip(pred.ravel(), target.ravel(), strict=True) if p == c or t == c)
        ious.append(intersection / union if union else math.nan)
    return ious


def brute_boundary_pixels(mask):
    height, width = mask.shape
    pixels = set()
    for i in range(height):
        for j in range(width):
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                k, l = i + di, j + dj
                if 0 <= k < height and 0 <= l < width and mask[k, l] != mask[i, j]:
                    pixels.add((i, j))
    return pixels


def brute_boundary_f1(pred, target, tolerance):
    scores = []
    for pred_map, target_map in zip(pred, target, strict=True):
        pred_edges, target_edges = brute_boundary_pixels(pred_map), brute_boundary_pixels(target_map)

        def matched(edges, edges_map, other_edges, other_map):
            return sum(
                any(
                    max(abs(i - k), abs(j - l)) <= tolerance and other_map[k, l] == edges_map[i, j]
                    for k, l in other_edges
                )
                for i, j in edges
            )

        if pred_edges:
            precision = matched(pred_edges, pred_map, target_edges, target_map) / len(pred_edges)
        else:
            precision = 1.0 if not target_edges else 0.0
        if target_edges:
            recall = matched(target_edges, target_map, pred_edges, pred_map) / len(target_edges)
        else:
            recall = 1.0 if not pred_edges else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append((precision, recall, f1))
    return np.mean(scores, axis=0)


# Confusion matrix, pixel accuracy, IoU.


def test_confusion_matrix_by_hand():
    target = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    np.testing.assert_array_equal(confusion_matrix(pred, target, 3), [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert pixel_accuracy(pred, target) == pytest.approx(4 / 6)
    # IoU: class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2
    np.testing.assert_allclose(per_class_iou(pred, target, 3), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(pred, target, 3) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_ignore_index_skips_pixels():
    target = np.array([0, 255, 1, 1])
    pred = np.array([0, 3, 1, 0])  # the ignored pixel may hold any prediction
    np.testing.assert_array_equal(confusion_matrix(pred, target, 2, ignore_index=255), [[1, 0], [1, 1]])
    assert pixel_accuracy(pred, target, ignore_index=255) == pytest.approx(2 / 3)


def test_perfect_prediction_and_absent_classes():
    target = np.array([[0, 0, 2], [2, 2, 0]])
    ious = per_class_iou(target, target, 4)
    np.testing.assert_array_equal(ious[[0, 2]], [1.0, 1.0])
    assert np.isnan(ious[1]) and np.isnan(ious[3])
    assert mean_iou(target, target, 4) == 1.0
    assert pixel_accuracy(target, target) == 1.0
    # A class only predicted counts in the mean (IoU 0); one absent from both does not.
    pred = np.array([[0, 0, 2], [2, 2, 1]])
    assert mean_iou(pred, target, 4) == pytest.approx((2 / 3 + 0.0 + 1.0) / 3)


def test_iou_from_summed_confusions_is_the_dataset_iou():
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 3, size=(2, 5, 5)), rng.integers(0, 3, size=(2, 5, 5))
    summed = confusion_matrix(pred[0], target[0], 3) + confusion_matrix(pred[1], target[1], 3)
    np.testing.assert_allclose(iou_from_confusion(summed), per_class_iou(pred, target, 3))


@SETTINGS
@given(class_map_pairs(), st.booleans())
def test_confusion_and_iou_match_brute_force(maps, with_ignore):
    pred, target, num_classes = maps
    ignore_index = None
    if with_ignore:
        ignore_index = 99
        target = np.where(np.random.default_rng(1).random(target.shape) < 0.2, ignore_index, target)
    np.testing.assert_array_equal(
        confusion_matrix(pred, target, num_classes, ignore_index),
        brute_confusion(pred, target, num_classes, ignore_index),
    )
    if not with_ignore:
        np.testing.assert_allclose(
            per_class_iou(pred, target, num_classes), brute_iou(pred, target, num_classes)
        )
        assert pixel_accuracy(pred, target) == pytest.approx(np.mean(pred == target))


def test_segmentation_argument_errors():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(TypeError, match="pred: expected integer"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match=r"target: class 5 is outside \[0, 3\)"):
        confusion_matrix(np.zeros(3, int), np.array([0, 5, 1]), 3)
    with pytest.raises(ValueError, match=r"pred: class -1"):
        mean_iou(np.array([0, -1]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(np.zeros(3, int), np.zeros(3, int), 0)
    with pytest.raises(ValueError, match="no pixel"):
        pixel_accuracy(np.zeros(2, int), np.full(2, 255), ignore_index=255)


# Boundaries and boundary F1.


def test_dilation_by_a_square_matches_brute_force():
    rng = np.random.default_rng(3)
    binary = rng.random((2, 9, 7)) < 0.08
    for radius in (0, 1, 2, 10):
        expected = np.zeros_like(binary)
        for n, i, j in np.argwhere(binary):
            expected[n, max(i - radius, 0) : i + radius + 1, max(j - radius, 0) : j + radius + 1] = True
        np.testing.assert_array_equal(dilate(binary, radius), expected)


def test_class_boundaries_of_a_square():
    mask = np.zeros((6, 6), dtype=np.int64)
    mask[1:4, 1:4] = 1
    boundary = class_boundaries(mask)
    ring = np.zeros((6, 6), dtype=bool)
    ring[1:4, 1:4] = True
    ring[2, 2] = False  # the square's interior pixel
    outside = np.zeros((6, 6), dtype=bool)
    outside[0, 1:4] = outside[4, 1:4] = outside[1:4, 0] = outside[1:4, 4] = True
    np.testing.assert_array_equal(boundary, ring | outside)


def test_boundary_f1_perfect_and_one_pixel_shift():
    target = np.zeros((10, 10), dtype=np.int64)
    target[2:6, 2:6] = 1  # a 4x4 square
    assert boundary_f1(target, target, tolerance=0) == (1.0, 1.0, 1.0)
    pred = np.roll(target, 1, axis=1)  # shifted one pixel right
    # Square boundary: its 12-pixel ring; background boundary: the 16 pixels 4-adjacent to it, so 28 each.
    # With no tolerance, the shifted rings share their top and bottom rows minus one column:
    # class 1: 3 + 3 pixels, class 0: 3 + 3 pixels, so 12 of 28 match both ways.
    assert boundary_f1(pred, target, tolerance=0) == pytest.approx((12 / 28, 12 / 28, 12 / 28))
    assert boundary_f1(pred, target, tolerance=1) == (1.0, 1.0, 1.0)


def test_boundary_f1_without_boundaries():
    flat = np.zeros((1, 4, 4), dtype=np.int64)
    assert boundary_f1(flat, flat) == (1.0, 1.0, 1.0)
    split = flat.copy()
    split[0, :, 2:] = 1
    # Nothing predicted where the target has a boundary: precision 0 by convention, recall 0.
    assert boundary_f1(flat, split) == (0.0, 0.0, 0.0)
    # Two images: one perfect, one with nothing found: the scores are averaged over images.
    assert boundary_f1(np.concatenate([split, flat]), np.concatenate([split, split])) == (0.5, 0.5, 0.5)


@SETTINGS
@given(class_map_pairs(max_side=6), st.integers(0, 3))
def test_boundary_f1_matches_brute_force(maps, tolerance):
    pred, target, _ = maps
    np.testing.assert_allclose(
        boundary_f1(pred, target, tolerance), brute_boundary_f1(pred, target, tolerance)
    )


def test_boundary_f1_argument_errors():
    with pytest.raises(ValueError, match="tolerance"):
        boundary_f1(np.zeros((3, 3), int), np.zeros((3, 3), int), tolerance=-1)
    with pytest.raises(ValueError, match="pred: expected"):
        boundary_f1(np.zeros(3, int), np.zeros(3, int))


# Classification accuracy and boxes.


def test_accuracy_from_labels_and_scores():
    target = np.array([0, 2, 1, 1])
    assert accuracy(np.array([0, 2, 0, 1]), target) == 0.75
    scores = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.0, 1.0, 0.0]])
    assert accuracy(scores, target) == 0.75
    with pytest.raises(ValueError, match="pred, target"):
        accuracy(np.array([0, 1]), target)


def test_box_iou_by_hand():
    boxes = np.array([[0, 0, 2, 2], [1, 0, 2, 2], [5, 5, 1, 1], [0, 0, 4, 4], [0, 0, 0, 0]], dtype=float)
    others = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]], dtype=float)
    # identical: 1; half overlap: 2 / (4 + 4 - 2); disjoint: 0; inside: 4 / 16; no area: 0
    np.testing.assert_allclose(box_iou(boxes, others), [1.0, 1 / 3, 0.0, 0.25, 0.0])
    assert mean_box_iou(boxes, others) == pytest.approx((1 + 1 / 3 + 0.25) / 5)
    assert box_iou(boxes[1], others[1]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="non-negative"):
        box_iou([0, 0, -1, 1], [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        box_iou([0, 0, 1], [0, 0, 1])


@SETTINGS
@given(st.lists(st.integers(0, 8), min_size=8, max_size=8))
def test_box_iou_matches_counting_pixels(numbers):
    # Integer boxes on a 16x16 grid: intersection and union are counts of covered pixels.
    x0, y0, w0, h0, x1, y1, w1, h1 = numbers
    first = np.zeros((16, 16), dtype=bool)
    second = np.zeros((16, 16), dtype=bool)
    first[y0 : y0 + h0, x0 : x0 + w0] = True
    second[y1 : y1 + h1, x1 : x1 + w1] = True
    union = (first | second).sum()
    expected = (first & second).sum() / union if union else 0.0
    assert box_iou([x0, y0, w0, h0], [x1, y1, w1, h1]) == pytest.approx(expected)
