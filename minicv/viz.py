"""Pictures: masks over images, boxes drawn with their class, comparison grids and training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from minicv.data.scenes import PALETTE


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (np.clip(np.asarray(image).transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)


def colour_mask(mask: np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours (classes beyond the palette cycle through it)."""
    return np.asarray(palette)[np.asarray(mask) % len(palette)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, palette: np.ndarray = PALETTE) -> np.ndarray:
    """The image with the coloured mask blended over it, (H, W, 3) uint8."""
    blend = (1 - alpha) * to_uint8(image) + alpha * colour_mask(mask, palette)
    return blend.astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple], scale: int = 4) -> Image.Image:
    """The image enlarged ``scale`` times with each ``(box, text, rgb)`` drawn: box is (x, y, w, h) in
    pixels of the original image."""
    picture = Image.fromarray(to_uint8(image) if image.shape[0] == 3 else image)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    for (x, y, w, h), text, colour in boxes:
        corners = [x * scale, y * scale, (x + w) * scale - 1, (y + h) * scale - 1]
        draw.rectangle(corners, outline=tuple(colour), width=2)
        draw.text((corners[0] + 2, max(corners[1] - 11, 0)), text, fill=tuple(colour))
    return picture


def grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], path: str | Path, scale: int = 3) -> None:
    """Save a grid of (H, W, 3) uint8 tiles, one row per image, with a title over each column."""
    height, width = rows[0][0].shape[:2]
    header = 14
    sheet = Image.new("RGB", (len(titles) * width * scale, header + len(rows) * height * scale), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(titles):
        draw.text((c * width * scale + 3, 1), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            big = Image.fromarray(tile).resize((width * scale, height * scale), Image.NEAREST)
            sheet.paste(big, (c * width * scale, header + r * height * scale))
    sheet.save(path)


def training_curves(histories: Mapping[str, list[dict]], metric: str, path: str | Path) -> None:
    """Loss and ``metric`` per epoch, one line per run, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["loss"] for h in history], marker="o", label=name)
        if metric in history[0]:
            metric_ax.plot(epochs, [h[metric] for h in history], marker="o", label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss")
    metric_ax.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
