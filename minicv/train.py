"""Training and evaluation loops for the two tasks of the lecture.

A task knows how to turn a batch into a loss and how to score predictions:
- segmentation: per-pixel cross-entropy; pixel accuracy, mean IoU, boundary F1;
- localization: cross-entropy + weighted smooth L1 on normalised boxes; class accuracy, mean box IoU.

``fit`` runs epochs with a progress bar, evaluates on the validation set after each, logs every epoch
(``log.csv`` and ``history.json`` in the run folder) and checkpoints after each epoch; started again
with ``resume=True`` it continues from the checkpoint and ends with the same weights as a run that
was never stopped.

Data follows the model: every batch becomes tensors on ``model.device``, the device the caller chose once
by moving the model there (``model.to("cpu")``); nothing here takes a device.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import minicv.functional as F
from minicv import metrics
from minicv.autograd import no_grad
from minicv.checkpoint import load_checkpoint, non_finite_state, save_checkpoint
from minicv.data.loader import DataLoader
from minicv.errors import CheckpointError, TrainingDiverged
from minicv.models.localization import localization_loss, normalise_boxes, to_pixels
from minicv.nn import Module
from minicv.tensor import Tensor


class SegmentationTask:
    name = "segmentation"

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def loss(self, model: Module, batch: dict) -> Tensor:
        image, mask = on_device(model, batch["image"], batch["mask"])
        return F.cross_entropy(model(image), mask)

    def predict(self, model: Module, images: np.ndarray) -> np.ndarray:
        return model(*on_device(model, images)).argmax(1).numpy()

    def score(self, model: Module, loader: Iterable[dict]) -> dict[str, float]:
        preds, masks = zip(*((self.predict(model, b["image"]), b["mask"]) for b in loader))
        pred, mask = np.concatenate(preds), np.concatenate(masks)
        return {
            "pixel_accuracy": metrics.pixel_accuracy(pred, mask),
            "mean_iou": metrics.mean_iou(pred, mask, self.num_classes),
            "boundary_f1": metrics.boundary_f1(pred, mask).f1,
        }


class LocalizationTask:
    name = "localization"

    def __init__(self, num_classes: int, box_weight: float = 10.0):
        self.num_classes, self.box_weight = num_classes, box_weight

    def loss(self, model: Module, batch: dict) -> Tensor:
        height, width = batch["image"].shape[-2:]
        image, label, true_boxes = on_device(model, batch["image"], batch["label"],
                                             normalise_boxes(batch["box"], height, width))
        scores, boxes = model(image)
        total, _, _ = localization_loss(scores, boxes, label, true_boxes, self.box_weight)
        return total

    def predict(self, model: Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class per image, pixel box (x, y, w, h) per image)."""
        scores, boxes = model(*on_device(model, images))
        return scores.argmax(1).numpy(), to_pixels(boxes.numpy(), *images.shape[-2:])

    def score(self, model: Module, loader: Iterable[dict]) -> dict[str, float]:
        labels, boxes, true_labels, true_boxes = [], [], [], []
        for batch in loader:
            label, box = self.predict(model, batch["image"])
            labels.append(label)
            boxes.append(box)
            true_labels.append(batch["label"])
            true_boxes.append(batch["box"])
        return {
            "class_accuracy": metrics.accuracy(np.concatenate(labels), np.concatenate(true_labels)),
            "mean_box_iou": metrics.mean_box_iou(np.concatenate(boxes), np.concatenate(true_boxes)),
        }


def on_device(model: Module, *arrays: np.ndarray) -> list[Tensor]:
    """``arrays`` as tensors on the model's device: data follows the model."""
    device = model.device
    return [Tensor(a, device=device) for a in arrays]


def make_task(task: str, num_classes: int) -> SegmentationTask | LocalizationTask:
    tasks = {"segmentation": SegmentationTask, "localization": LocalizationTask}
    if task not in tasks:
        raise ValueError(f"task: expected one of {', '.join(tasks)}, but got {task!r}")
    return tasks[task](num_classes)


def evaluate(model: Module, task: Any, loader: Iterable[dict]) -> dict[str, float]:
    """The task's metrics of ``model`` (in eval mode, no graph recorded, on its device) over ``loader``."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            return task.score(model, loader)
    finally:
        model.train(was_training)


def fit(
    model: Module,
    task: Any,
    train_loader: DataLoader,
    val_loader: Iterable[dict],
    optimizer: Any,
    epochs: int,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    desc: str = "",
    stop_after: int | None = None,
    config: dict | None = None,
    scheduler: Any = None,
    keep_best: str | None = None,
) -> list[dict]:
    """Train for ``epochs`` epochs on the model's device; return the per-epoch history (loss, metrics,
    seconds).

    The run folder ``out`` gets ``checkpoint.npz`` after every epoch, ``log.csv`` and ``history.json``.
    ``stop_after`` ends the call early after that many epochs of this call (as a crash would), leaving
    a checkpoint to resume from. ``config`` (JSON-able: how to rebuild the model) goes into the
    checkpoint for ``minicv eval`` and ``minicv predict``. ``scheduler`` (e.g. CosineAnnealingLR) is
    stepped after every epoch and checkpointed with the rest.

    ``keep_best`` (a metric of ``evaluate``, higher is better, e.g. "mean_iou") keeps the epoch that
    scored best on ``val_loader``: its weights go to ``best.npz`` when it is reached (a checkpoint like
    the others, for ``minicv eval``), and the model holds them once the last epoch is done, so a bad last
    epoch does not decide. ``val_loader`` must then not be the test set.

    A NaN or infinite loss (checked every step), weight or optimizer state (checked every epoch) raises
    TrainingDiverged naming the epoch and step; the checkpoint of the last finite epoch stays.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.npz"
    history: list[dict] = []
    start = 0
    if resume and checkpoint.exists():
        meta = load_checkpoint(checkpoint, model, optimizer)
        start = meta["epoch"]
        history = _resumed(checkpoint, meta, "history", lambda saved: _check_history(saved, start))
        _resumed(checkpoint, meta, "loader", train_loader.load_state_dict)
        if scheduler is not None:
            _resumed(checkpoint, meta, "scheduler", scheduler.load_state_dict)
    # NaN never counts as better, in the history as below (max() would keep a NaN that came first)
    scored = [h[keep_best] for h in history if not math.isnan(h[keep_best])] if keep_best else []
    best_score = max(scored, default=-np.inf)
    for epoch in range(start, epochs):
        if stop_after is not None and epoch - start >= stop_after:
            break
        model.train()
        began = time.perf_counter()
        losses = []
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch + 1}/{epochs}".strip(), disable=not progress, leave=False)
        for step, batch in enumerate(bar, 1):
            optimizer.zero_grad()
            loss = task.loss(model, batch)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):  # a scalar already on the host: the check costs nothing
                raise TrainingDiverged(epoch + 1, step, f"the loss is {losses[-1]}{_kept(checkpoint, epoch)}")
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        # an update can overflow the weights (or the optimizer's state) while its loss was finite
        bad = non_finite_state(model, optimizer)
        if bad:
            raise TrainingDiverged(epoch + 1, len(losses), f"{len(bad)} arrays hold NaN or inf after the update "
                                   f"(first {bad[0]}){_kept(checkpoint, epoch)}")
        if scheduler is not None:
            scheduler.step()
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - began}
        record.update(evaluate(model, task, val_loader))
        history.append(record)
        save_checkpoint(
            checkpoint,
            model,
            optimizer,
            epoch + 1,
            history=history,
            loader=train_loader.state_dict(),
            config=config,
            scheduler=scheduler.state_dict() if scheduler is not None else None,
        )
        _write_log(out, history)
        if keep_best and record[keep_best] > best_score:  # NaN never counts as better
            best_score = record[keep_best]
            save_checkpoint(out / "best.npz", model, epoch=epoch + 1, history=history, config=config)
    if keep_best and len(history) == epochs and (out / "best.npz").exists():
        load_checkpoint(out / "best.npz", model)
    return history


def _kept(checkpoint: Path, epoch: int) -> str:
    """What a diverged run leaves: the checkpoint of the last finite epoch, if one was written."""
    return f"; {checkpoint} holds epoch {epoch}, the last finite one" if epoch > 0 else "; no checkpoint was written"


def _resumed(checkpoint: Path, meta: dict, key: str, restore: Callable[[Any], Any]) -> Any:
    """``restore(meta[key])``, its errors naming the checkpoint and the key."""
    if key not in meta:
        raise CheckpointError(f"checkpoint {checkpoint}: meta key '{key}' is missing (was it written by fit?)")
    try:
        return restore(meta[key])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {checkpoint}: meta key '{key}' cannot be restored: {err!r}") from err


def _check_history(history: Any, epochs: int) -> list[dict]:
    if not (isinstance(history, list) and len(history) == epochs and all(isinstance(h, dict) for h in history)):
        raise ValueError(f"expected a list of {epochs} per-epoch records")
    return history


def _write_log(out: Path, history: list[dict]) -> None:
    # NaN and inf (a metric with nothing to measure) become null: the file stays standard JSON
    finite = [{k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in h.items()} for h in history]
    (out / "history.json").write_text(json.dumps(finite, indent=2, allow_nan=False))
    with open(out / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
