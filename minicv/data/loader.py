"""Batches of NumPy arrays from a dataset of dict items, with seeded shuffles and flips.

An item is a dict of arrays and numbers, as the datasets of minicv.data return: ``image`` (3, H, W),
and ``mask`` (H, W) and/or ``label`` and ``box`` (4,) ``(x, y, w, h)``. A batch is a dict with the same
keys, each stacked along a new first axis (images (N, 3, H, W) float32, masks (N, H, W) int64, labels
(N,) int64, boxes (N, 4) float32).

Shuffling and flipping draw from a generator seeded by ``SeedSequence(seed, spawn_key=(epoch,))``, so
every epoch has its own order, and the same (seed, epoch) always gives the same batches. The epoch
counter advances each time iteration starts; ``state_dict()`` / ``load_state_dict()`` save and restore
it with the seed, so a resumed run continues with the next epoch's order exactly as an uninterrupted
run would (resuming happens at epoch boundaries).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

import numpy as np

DTYPES = {"image": np.float32, "mask": np.int64, "label": np.int64, "box": np.float32}


class Dataset(Protocol):
    """What DataLoader needs: a length, and a dict item for each index in range."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping: ...


def flip_item(item: Mapping) -> dict:
    """The item mirrored left to right: image and mask columns reversed, box x' = W - x - w."""
    flipped = dict(item)
    width = np.shape(item["image"])[-1]
    flipped["image"] = np.ascontiguousarray(np.asarray(item["image"])[..., ::-1])
    if "mask" in item:
        flipped["mask"] = np.ascontiguousarray(np.asarray(item["mask"])[..., ::-1])
    if "box" in item:
        box = np.array(item["box"], copy=True)
        box[0] = width - box[0] - box[2]
        flipped["box"] = box
    return flipped


def collate(items: list[Mapping]) -> dict:
    """Stack each key of the items along a new first axis, with the dtypes of DTYPES for known keys."""
    batch = {}
    for key in items[0]:
        values = [np.asarray(item[key]) for item in items]
        shapes = {value.shape for value in values}
        if len(shapes) > 1:
            raise ValueError(f"cannot batch {key!r}: the items have different shapes {sorted(shapes)}")
        stacked = np.stack(values)
        batch[key] = stacked.astype(DTYPES[key], copy=False) if key in DTYPES else stacked
    return batch


class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size`` items.

    shuffle: a new seeded order every epoch. drop_last: leave out a last batch smaller than batch_size.
    flip: mirror each item left to right with probability 1/2 (seeded), consistently across image,
    mask and box.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        flip: bool = False,
    ) -> None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last, self.flip = shuffle, drop_last, flip
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def state_dict(self) -> dict:
        """The seed and the epoch that the next iteration will use."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: Mapping) -> None:
        for key in ("seed", "epoch"):
            value = state[key]
            if int(value) != value or value < 0:
                raise ValueError(f"state[{key!r}]: expected a non-negative int, got {value!r}")
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def __iter__(self) -> Iterator[dict]:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(self.epoch,)))
        self.epoch += 1
        count = len(self.dataset)
        order = rng.permutation(count) if self.shuffle else np.arange(count)
        flips = rng.random(count) < 0.5 if self.flip else np.zeros(count, dtype=bool)
        return self._batches(order, flips)

    def _batches(self, order: np.ndarray, flips: np.ndarray) -> Iterator[dict]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            items = []
            for i in range(start, min(start + self.batch_size, len(order))):
                item = self.dataset[int(order[i])]
                items.append(flip_item(item) if flips[i] else item)
            yield collate(items)
