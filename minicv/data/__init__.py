"""minicv.data: the built-in synthetic scenes, a user's own image folders, and a batching DataLoader.

Datasets return one dict per item (``image`` (3, H, W) float32 in [0, 1], plus ``mask`` (H, W) int64
and/or ``label`` int and ``box`` (4,) float32 ``(x, y, w, h)``); DataLoader stacks them into batches.
"""

from minicv.data.folder import LocalizationFolder, SegmentationFolder, load_image
from minicv.data.loader import DataLoader, collate, flip_item
from minicv.data.scenes import CLASS_NAMES, OBJECT_NAMES, PALETTE, Scene, SceneDataset, make_scene

__all__ = [
    "CLASS_NAMES",
    "OBJECT_NAMES",
    "PALETTE",
    "DataLoader",
    "LocalizationFolder",
    "Scene",
    "SceneDataset",
    "SegmentationFolder",
    "collate",
    "flip_item",
    "load_image",
    "make_scene",
]
