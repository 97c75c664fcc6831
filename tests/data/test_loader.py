import numpy as np
import pytest

from minicv.data.loader import DataLoader, collate, flip_item
from minicv.data.scenes import FIRST_OBJECT_CLASS, SceneDataset


class NumberedDataset:
    """Item i: an image and mask whose pixels encode i and their column, label i, a box."""

    def __init__(self, n: int, height: int = 4, width: int = 6) -> None:
        self.n, self.height, self.width = n, height, width

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        columns = np.broadcast_to(np.arange(self.width), (self.height, self.width))
        return {
            "image": np.stack([columns + 100 * i] * 3).astype(np.float32),
            "mask": (columns + 100 * i).astype(np.int64),
            "label": i,
            "box": np.array([1.0, 0.0, 2.0, 3.0], dtype=np.float32),
        }


def epoch_labels(loader) -> list[int]:
    return [int(label) for batch in loader for label in batch["label"]]


def test_batches_are_stacked_with_the_right_dtypes():
    loader = DataLoader(NumberedDataset(10), batch_size=4)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [len(batch["label"]) for batch in batches] == [4, 4, 2]
    first = batches[0]
    assert first["image"].shape == (4, 3, 4, 6) and first["image"].dtype == np.float32
    assert first["mask"].shape == (4, 4, 6) and first["mask"].dtype == np.int64
    assert (
        first["label"].dtype == np.int64 and first["box"].shape == (4, 4) and first["box"].dtype == np.float32
    )
    assert epoch_labels(loader) == list(range(10))


def test_scene_batches():
    batch = next(iter(DataLoader(SceneDataset("train", n=5, size=32), batch_size=5)))
    assert batch["image"].shape == (5, 3, 32, 32) and batch["mask"].shape == (5, 32, 32)
    assert batch["label"].shape == (5,) and batch["box"].shape == (5, 4)


@pytest.mark.parametrize("n, batch_size, drop_last, sizes", [
    (10, 5, False, [5, 5]),
    (10, 5, True, [5, 5]),
    (11, 5, True, [5, 5]),
    (11, 5, False, [5, 5, 1]),
    (3, 5, True, []),
    (3, 5, False, [3]),
    (0, 2, False, []),
])  # fmt: skip
def test_last_batch(n, batch_size, drop_last, sizes):
    loader = DataLoader(NumberedDataset(n), batch_size=batch_size, drop_last=drop_last)
    assert [len(batch["label"]) for batch in loader] == sizes
    assert len(loader) == len(sizes)


def test_shuffles_differ_per_epoch_and_repeat_per_seed():
    runs = []
    for _ in range(2):
        loader = DataLoader(NumberedDataset(30), batch_size=7, shuffle=True, seed=5)
        runs.append([epoch_labels(loader) for _ in range(3)])
    assert runs[0] == runs[1]
    for epoch in runs[0]:
        assert sorted(epoch) == list(range(30))
    assert runs[0][0] != runs[0][1] != runs[0][2]
    other_seed = DataLoader(NumberedDataset(30), batch_size=7, shuffle=True, seed=6)
    assert epoch_labels(other_seed) != runs[0][0]


def test_resume_from_state_dict_continues_the_same_epochs():
    uninterrupted = DataLoader(NumberedDataset(20), batch_size=6, shuffle=True, flip=True, seed=2)
    expected = [list(uninterrupted) for _ in range(3)]

    first = DataLoader(NumberedDataset(20), batch_size=6, shuffle=True, flip=True, seed=2)
    list(first)
    state = first.state_dict()
    assert state == {"seed": 2, "epoch": 1}
    resumed = DataLoader(NumberedDataset(20), batch_size=6, shuffle=True, flip=True, seed=99)
    resumed.load_state_dict(state)
    for expected_epoch in expected[1:]:
        for got, want in zip(list(resumed), expected_epoch, strict=True):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
    with pytest.raises(ValueError, match="epoch"):
        resumed.load_state_dict({"seed": 0, "epoch": -1})


def test_flip_flips_image_mask_and_box_together():
    dataset = NumberedDataset(40)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, flip=True, seed=0)
    flipped_count = 0
    for batch in loader:
        for image, mask, label, box in zip(
            batch["image"], batch["mask"], batch["label"], batch["box"], strict=True
        ):
            original = dataset[int(label)]
            flipped = not np.array_equal(mask, original["mask"])
            flipped_count += flipped
            expected_mask = original["mask"][:, ::-1] if flipped else original["mask"]
            np.testing.assert_array_equal(mask, expected_mask)
            np.testing.assert_array_equal(image, np.stack([expected_mask] * 3))
            # box (1, 0, 2, 3) in a 6 wide image: flipped x = 6 - 1 - 2 = 3
            assert box.tolist() == ([3.0, 0.0, 2.0, 3.0] if flipped else [1.0, 0.0, 2.0, 3.0])
    assert 10 < flipped_count < 30


def test_flipped_scene_box_is_still_the_tight_box_of_the_object():
    dataset = SceneDataset("train", n=16, size=(32, 40))
    for batch in DataLoader(dataset, batch_size=8, flip=True, seed=1):
        for mask, box in zip(batch["mask"], batch["box"], strict=True):
            rows, cols = np.nonzero(mask >= FIRST_OBJECT_CLASS)
            tight = [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
            assert box.tolist() == tight


def test_flip_item_is_its_own_inverse_and_does_not_touch_the_input():
    item = SceneDataset("val", n=1, size=32)[0]
    image_before = item["image"].copy()
    twice = flip_item(flip_item(item))
    for key in ("image", "mask", "box"):
        np.testing.assert_array_equal(twice[key], item[key])
    np.testing.assert_array_equal(item["image"], image_before)
    assert twice["label"] == item["label"]


def test_collate_rejects_items_of_different_shapes():
    with pytest.raises(ValueError, match="'image'.*different shapes"):
        collate([NumberedDataset(1, width=6)[0], NumberedDataset(1, width=5)[0]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(NumberedDataset(3), batch_size=0)
    with pytest.raises(ValueError, match="seed"):
        DataLoader(NumberedDataset(3), batch_size=1, seed=-1)
