"""``minicv demo``: the lecture in one run.

Trains the four segmentation decoders and the classifier + localizer on the built-in scenes and writes,
into one folder: ``results.md`` / ``results.json`` (the comparison table), ``segmentation.png`` (image |
truth | each decoder's prediction), ``localization.png`` (predicted boxes with class and IoU, truth in
white), ``curves_segmentation.png`` and ``curves_localization.png``, and one run folder per model
(checkpoint, the best epoch's ``best.npz``, per-epoch log). Each model is scored on the test scenes
with the weights of its best epoch on separate validation scenes: at a constant learning rate one bad
last epoch can undo a run (SegNet once fell from mIoU 0.91 to 0.67 in its eighth), and choosing by the
test scenes would flatter the table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np

import minicv
from minicv import metrics, optim, viz
from minicv.data import CLASS_NAMES, OBJECT_NAMES, DataLoader, SceneDataset
from minicv.devices import Device, get_device
from minicv.models import TASKS, build_model, profile
from minicv.nn import Module
from minicv.precompile import compile_ahead
from minicv.train import LocalizationTask, SegmentationTask, evaluate, fit, make_task


class Settings(TypedDict):
    epochs: int
    lr: float
    cosine: bool


# Per-model training settings, chosen so the whole demo fits in minutes on two CPU cores. The
# segmenters keep a constant learning rate: in runs this short they are still improving at the end,
# and a cosine decay to zero stopped them early (SegNet, 8 epochs: mIoU 0.91 constant, 0.75 cosine).
# The localizer's box regression settles better with the decay.
SETTINGS: dict[str, Settings] = {
    "naive": {"epochs": 3, "lr": 3e-3, "cosine": False},
    "nearest": {"epochs": 8, "lr": 3e-3, "cosine": False},
    "segnet": {"epochs": 8, "lr": 3e-3, "cosine": False},
    "learned": {"epochs": 8, "lr": 3e-3, "cosine": False},
    "loc": {"epochs": 12, "lr": 2e-3, "cosine": True},
}
BATCH_SIZE = 32
BEST_BY = {"segmentation": "mean_iou", "localization": "mean_box_iou"}
SHOWN = 6  # test images in the pictures
IMAGE_SIZE = 64  # the scenes' side


def run_demo(
    out: Path,
    device: str | Device | None = None,
    seed: int = 0,
    epochs: int | None = None,
    train_size: int = 2000,
    test_size: int = 300,
    models: Sequence[str] = tuple(TASKS),
    validation_size: int = 200,
) -> dict[str, dict]:
    """Train ``models`` on generated scenes, on ``device`` (None: the default device); write the table,
    pictures and curves into ``out``."""
    unknown = [m for m in models if m not in TASKS]
    if unknown:
        raise ValueError(f"models: unknown {unknown}, expected some of {list(TASKS)}")
    out.mkdir(parents=True, exist_ok=True)
    if get_device(device).name == "numba":
        compile_ahead(models, (IMAGE_SIZE, IMAGE_SIZE), BATCH_SIZE)  # a cold numba cache compiles in two processes
    print(f"minicv demo: generating {train_size} training, {validation_size} validation and {test_size} test "
          f"scenes (seed {seed})")
    train_items = _materialise(SceneDataset("train", train_size, IMAGE_SIZE, seed=seed))
    # scenes of their own split: picking each model's best epoch never looks at the test scenes
    validation_items = _materialise(SceneDataset("val", validation_size, IMAGE_SIZE, seed=seed))
    test_items = _materialise(SceneDataset("test", test_size, IMAGE_SIZE, seed=seed))
    results, histories, predictions = {}, {}, {}
    for name in models:
        task_name = TASKS[name]
        num_classes = len(CLASS_NAMES) if task_name == "segmentation" else len(OBJECT_NAMES)
        minicv.manual_seed(seed)
        model = build_model(name, num_classes).to(device)
        task = make_task(task_name, num_classes)
        settings = SETTINGS[name]
        began = time.perf_counter()
        optimizer = optim.Adam(model.parameters(), lr=settings["lr"])
        epochs_here = epochs or settings["epochs"]
        history = fit(
            model,
            task,
            DataLoader(train_items, BATCH_SIZE, shuffle=True, seed=seed, flip=True),
            DataLoader(validation_items, 100),
            optimizer,
            epochs_here,
            out / name,
            desc=name,
            scheduler=optim.CosineAnnealingLR(optimizer, epochs_here) if settings["cosine"] else None,
            keep_best=BEST_BY[task_name],
            config={
                "model": name,
                "num_classes": num_classes,
                "kwargs": {},
                "image_size": [IMAGE_SIZE, IMAGE_SIZE],
                "classes": list(CLASS_NAMES if task_name == "segmentation" else OBJECT_NAMES),
            },
        )
        seconds = time.perf_counter() - began
        scores = evaluate(model, task, DataLoader(test_items, 100))
        results[name] = {"task": task_name, **scores, **profile(model, (3, IMAGE_SIZE, IMAGE_SIZE)),
                         "train_seconds": seconds}
        histories[name] = history
        predictions[name] = predict_shown(model, task, test_items)
        print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + f" ({seconds:.0f} s)")
    _write_table(out, results)
    write_pictures(out, test_items[:SHOWN], predictions, histories)
    print(f"minicv demo: results in {out}/results.md")
    return results


def _materialise(dataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def _write_table(out: Path, results: dict[str, dict]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| model | pixel acc | mIoU | boundary F1 | class acc | box IoU | parameters | MFLOPs/image | train s |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cells = [f"{r[k]:.3f}" if k in r else "" for k in ("pixel_accuracy", "mean_iou", "boundary_f1")]
        cells += [f"{r[k]:.3f}" if k in r else "" for k in ("class_accuracy", "mean_box_iou")]
        cells += [f"{r['parameters']:,}", f"{r['flops'] / 1e6:.1f}", f"{r['train_seconds']:.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def predict_shown(model: Module, task: SegmentationTask | LocalizationTask,
                  items: list[dict]) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The model's predictions for the first SHOWN items, the ones the pictures show."""
    model.eval()
    with minicv.no_grad():
        return task.predict(model, np.stack([item["image"] for item in items[:SHOWN]]))


def write_pictures(out: Path, items: list[dict], predictions: dict, histories: dict,
                   object_names: Sequence[str] = OBJECT_NAMES) -> None:
    """Masks (segmentation.png) or boxes (localization.png) of ``predictions`` (model name -> its
    predictions for ``items``) beside the truth, and the validation curves of ``histories``."""
    segmenters = [n for n in predictions if TASKS[n] == "segmentation"]
    if segmenters:
        rows = [
            [viz.to_uint8(item["image"]), viz.colour_mask(item["mask"])]
            + [viz.colour_mask(predictions[n][i]) for n in segmenters]
            for i, item in enumerate(items)
        ]
        viz.grid(rows, ["image", "truth", *segmenters], out / "segmentation.png")
        viz.training_curves({n: histories[n] for n in segmenters}, "mean_iou", out / "curves_segmentation.png")
    if "loc" in predictions:
        labels, boxes = predictions["loc"]
        tiles = []
        for item, label, box in zip(items, labels, boxes):
            iou = metrics.box_iou(box[None], item["box"][None])[0]
            right = label == item["label"]
            drawn = [
                (item["box"], "", (255, 255, 255)),
                (box, f"{object_names[label]} IoU {iou:.2f}", (40, 220, 40) if right else (230, 40, 40)),
            ]
            tiles.append(np.asarray(viz.draw_boxes(item["image"], drawn)))
        viz.grid([tiles], [""] * len(tiles), out / "localization.png", scale=1)
        viz.training_curves({"loc": histories["loc"]}, "mean_box_iou", out / "curves_localization.png")
