"""Pictures: masks over images, palette masks and their legend, boxes drawn with their class, comparison
grids and training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from minicv.data.scenes import PALETTE


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (np.clip(np.asarray(image).transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)


def colour_mask(mask: np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours (classes beyond the palette cycle through it)."""
    return np.asarray(palette)[np.asarray(mask) % len(palette)]


def palette_mask(mask: np.ndarray, num_classes: int, palette: np.ndarray = PALETTE) -> Image.Image:
    """(H, W) class indices -> a palette ("P") image: each pixel's value is its class, shown in the class's
    colour (a greyscale PNG of class numbers 0..5 looks black)."""
    if not 1 <= num_classes <= 256:
        raise ValueError(f"num_classes: a palette PNG holds 1 to 256 classes, got {num_classes}")
    picture = Image.fromarray(np.asarray(mask).astype(np.uint8), mode="P")
    picture.putpalette(colour_mask(np.arange(num_classes), palette).ravel().tolist())
    return picture


def legend(names: Sequence[str], palette: np.ndarray = PALETTE, font_size: int = 14) -> Image.Image:
    """A swatch of each class's colour (as ``palette_mask`` and ``overlay`` draw it) beside its number and name."""
    font = ImageFont.load_default(size=font_size)
    row = font_size + 8
    labels = [f"{c}  {name}" for c, name in enumerate(names)]
    width = row + 8 + max(int(font.getlength(text)) for text in labels) + 8
    picture = Image.new("RGB", (width, row * len(labels) + 4), "white")
    draw = ImageDraw.Draw(picture)
    for c, (text, colour) in enumerate(zip(labels, colour_mask(np.arange(len(labels)), palette))):
        top = 2 + c * row
        draw.rectangle([4, top + 2, row, top + row - 2], fill=tuple(int(v) for v in colour), outline=(0, 0, 0))
        draw.text((row + 8, top + row // 2), text, fill=(0, 0, 0), font=font, anchor="lm")
    return picture


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, palette: np.ndarray = PALETTE) -> np.ndarray:
    """The image with the coloured mask blended over it, (H, W, 3) uint8."""
    blend = (1 - alpha) * to_uint8(image) + alpha * colour_mask(mask, palette)
    return blend.astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple], scale: int = 4, font_size: int = 14) -> Image.Image:
    """The image enlarged ``scale`` times with each ``(box, text, rgb)`` drawn: box is (x, y, w, h) in
    pixels of the original image. Each text sits on a band of its box's colour, in black or white
    (whichever stands out), above the box or inside its top where there is no room, kept in the picture."""
    picture = Image.fromarray(to_uint8(image) if image.shape[0] == 3 else image)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=font_size)
    for (x, y, w, h), text, colour in boxes:
        colour = tuple(int(v) for v in colour)
        corners = [x * scale, y * scale, (x + w) * scale - 1, (y + h) * scale - 1]
        draw.rectangle(corners, outline=colour, width=2)
        if not text:
            continue
        band_w, band_h = int(font.getlength(text)) + 6, font_size + 4
        left = min(max(corners[0], 0), max(picture.width - band_w, 0))
        top = corners[1] - band_h if corners[1] >= band_h else max(corners[1], 0)
        draw.rectangle([left, top, left + band_w - 1, top + band_h - 1], fill=colour)
        ink = (0, 0, 0) if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140 else (255, 255, 255)
        draw.text((left + 3, top + band_h // 2), text, fill=ink, font=font, anchor="lm")
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
            big = Image.fromarray(tile).resize((width * scale, height * scale), Image.Resampling.NEAREST)
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
