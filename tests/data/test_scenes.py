import numpy as np
import pytest

from minicv.data.scenes import (
    CLASS_NAMES,
    FIRST_OBJECT_CLASS,
    OBJECT_NAMES,
    PALETTE,
    SceneDataset,
    make_scene,
)


def tight_box(object_pixels: np.ndarray) -> list[int]:
    rows, cols = np.nonzero(object_pixels)
    return [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]


def test_names_and_palette_agree():
    assert CLASS_NAMES[FIRST_OBJECT_CLASS:] == OBJECT_NAMES
    assert PALETTE.shape == (len(CLASS_NAMES), 3) and PALETTE.dtype == np.uint8
    assert len(np.unique(PALETTE, axis=0)) == len(CLASS_NAMES)


@pytest.mark.parametrize("size", [32, 64, 96, (48, 80)])
def test_shapes_dtypes_and_ranges(size):
    height, width = (size, size) if isinstance(size, int) else size
    dataset = SceneDataset("train", n=20, size=size, seed=3)
    for item in (dataset[i] for i in range(len(dataset))):
        assert item["image"].shape == (3, height, width) and item["image"].dtype == np.float32
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert item["mask"].shape == (height, width) and item["mask"].dtype == np.int64
        assert set(np.unique(item["mask"])) <= set(range(len(CLASS_NAMES)))
        assert isinstance(item["label"], int) and 0 <= item["label"] < len(OBJECT_NAMES)
        assert item["box"].shape == (4,) and item["box"].dtype == np.float32


@pytest.mark.parametrize("size", [32, 64, 96])
def test_box_is_the_tight_box_of_the_one_object(size):
    dataset = SceneDataset("val", n=60, size=size, seed=1)
    for i in range(len(dataset)):
        item = dataset[i]
        object_classes = set(np.unique(item["mask"][item["mask"] >= FIRST_OBJECT_CLASS]))
        assert object_classes == {FIRST_OBJECT_CLASS + item["label"]}
        assert item["box"].tolist() == tight_box(item["mask"] >= FIRST_OBJECT_CLASS)
        x, y, w, h = item["box"]
        assert x >= 1 and y >= 1 and x + w <= size - 1 and y + h <= size - 1, "the whole object is in view"


def test_objects_scale_with_image_size():
    # The box's size relative to the image has the same distribution at every size (same seeds).
    relative = {}
    for size in (32, 96):
        dataset = SceneDataset("train", n=100, size=size, seed=0)
        relative[size] = np.array([dataset[i]["box"][2:] / size for i in range(len(dataset))])
    assert np.abs(relative[32] - relative[96]).mean() < 0.03
    assert 0.15 < relative[96].mean() < 0.6


def test_deterministic_per_seed_and_independent_of_n():
    a, b = SceneDataset("train", n=10, seed=7), SceneDataset("train", n=50, seed=7)
    for i in range(10):
        first, second = a[i], b[i]
        for key in ("image", "mask", "box"):
            np.testing.assert_array_equal(first[key], second[key])
        assert first["label"] == second["label"]
    other = SceneDataset("train", n=10, seed=8)
    assert not any(np.array_equal(a[i]["image"], other[i]["image"]) for i in range(10))


def test_make_scene_reproducible_from_generator_state():
    first = make_scene(np.random.default_rng(123), size=40)
    second = make_scene(np.random.default_rng(123), size=40)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.mask, second.mask)


def test_splits_never_share_an_image():
    digests = {}
    for split in ("train", "val", "test"):
        dataset = SceneDataset(split, n=150, size=32, seed=0)
        digests[split] = {dataset[i]["image"].tobytes() for i in range(len(dataset))}
        assert len(digests[split]) == len(dataset), f"an image repeats inside {split}"
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]


def test_all_classes_appear_and_labels_are_balanced():
    dataset = SceneDataset("train", n=300, size=32, seed=0)
    items = [dataset[i] for i in range(len(dataset))]
    seen = set().union(*(np.unique(item["mask"]).tolist() for item in items))
    assert seen == set(range(len(CLASS_NAMES)))
    counts = np.bincount([item["label"] for item in items], minlength=len(OBJECT_NAMES))
    assert counts.min() > 0.2 * len(items)


def test_object_colour_does_not_give_the_class_away():
    # A nearest-centroid classifier on each object's mean colour stays near chance (1/3).
    dataset = SceneDataset("train", n=450, size=32, seed=0)
    colours, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        colours.append(item["image"][:, item["mask"] >= FIRST_OBJECT_CLASS].mean(axis=1))
        labels.append(item["label"])
    colours, labels = np.array(colours), np.array(labels)
    fit, held_out = slice(0, 300), slice(300, None)
    centroids = np.stack([colours[fit][labels[fit] == c].mean(axis=0) for c in range(len(OBJECT_NAMES))])
    distances = np.linalg.norm(colours[held_out, None, :] - centroids[None], axis=2)
    assert (distances.argmin(axis=1) == labels[held_out]).mean() < 0.5


def test_index_and_argument_errors():
    dataset = SceneDataset("test", n=3)
    with pytest.raises(IndexError):
        dataset[3]
    np.testing.assert_array_equal(dataset[-1]["image"], dataset[2]["image"])
    with pytest.raises(ValueError, match="split"):
        SceneDataset("validation")
    with pytest.raises(ValueError, match="size"):
        SceneDataset("train", size=4)
    with pytest.raises(ValueError, match="n"):
        SceneDataset("train", n=-1)
