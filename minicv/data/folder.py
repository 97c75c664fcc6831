"""A user's own data, from a folder on disk.

Segmentation (``SegmentationFolder``)::

    root/images/<stem>.png|.jpg|...   the pictures
    root/masks/<stem>.png             one mask per picture, matched by file stem, same size

A mask holds either a class index per pixel (modes L, P, 1, I, I;16: the pixel value, or the palette
index of a P image, is the class), or an RGB colour per pixel mapped to classes with ``palette``
(``palette[c]`` is the colour of class ``c``).

Localization (``LocalizationFolder``)::

    root/images/<file>                the pictures
    root/boxes.csv                    header ``file,class,x,y,w,h``, then one row per picture:
                                      class by name, box in pixels (columns x .. x+w, rows y .. y+h)

Images load as float32 (3, H, W) in [0, 1] (grey and palette images are converted to RGB, alpha is
dropped; 16- and 32-bit grey images are divided by the largest value of their bit depth). A file over
``max_pixels`` pixels is refused from its header, before it is decoded. Construction reads every file
once and checks it, so bad data fails at once with a ValueError that names the file and the problem;
items are read again from disk on access.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath

import numpy as np
from PIL import Image
from PIL.TiffImagePlugin import TiffImageFile

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
INDEX_MASK_MODES = ("L", "P", "1", "I", "I;16")
CSV_HEADER = ("file", "class", "x", "y", "w", "h")
MAX_PIXELS = 4096 * 4096  # a 12-megapixel phone photo fits; decoded as float32 RGB it takes 200 MB


def _check_max_pixels(max_pixels: int) -> None:
    if isinstance(max_pixels, bool) or int(max_pixels) != max_pixels or max_pixels < 1:
        raise ValueError(f"max_pixels: expected a positive int, got {max_pixels!r}")


def _open(path: Path, max_pixels: int) -> Image.Image:
    """The image at ``path``, decoded, if its header says it has at most ``max_pixels`` pixels."""
    image = None
    try:
        # Image.open reads only the header. PIL's own decompression-bomb check runs there too and would
        # answer first (or refuse a size max_pixels allows), so it is off while the header is read.
        pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            image = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = pil_limit
        width, height = image.size
        if width * height <= max_pixels:
            image.load()
            return image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        if image is not None:
            image.close()  # a file that fails to load stays open otherwise
        raise ValueError(f"{path}: cannot read the file as an image ({error})") from error
    image.close()
    raise ValueError(
        f"{path}: {width}x{height} (WxH) is {width * height} pixels, over the limit of {max_pixels} "
        "(max_pixels; --max-pixels on the command line raises it)"
    )


def _largest_value(image: Image.Image) -> int:
    """The largest pixel value of a grey image of mode I;16* or I: that of its bit depth."""
    if image.mode.startswith("I;16") or image.format in ("PNG", "PPM"):
        return 2**16 - 1  # PIL holds 16-bit PNGs as I on some versions, and scales PGMs to 16 bits
    bits = image.tag_v2.get(258, (32,))[0] if isinstance(image, TiffImageFile) else 32  # BitsPerSample
    return 2 ** min(bits, 31) - 1  # mode I is signed 32-bit


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The picture at ``path`` as float32 (3, H, W) in [0, 1]; a file of more than ``max_pixels``
    pixels is refused (a ValueError naming it) before it is decoded."""
    _check_max_pixels(max_pixels)
    with _open(Path(path), max_pixels) as image:
        if image.mode == "I" or image.mode.startswith("I;16"):
            # convert("RGB") would clip these at 255: most of a 16-bit picture would be white
            grey = np.asarray(image).astype(np.float64) / _largest_value(image)
            pixels = np.repeat(np.clip(grey, 0.0, 1.0).astype(np.float32)[..., None], 3, axis=-1)
        else:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _image_files(folder: Path) -> dict[str, Path]:
    """The pictures in ``folder`` by stem; a stem used twice (a.png and a.jpg) is ambiguous."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a folder of images, found none")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in files:
                raise ValueError(f"{path}: the stem {path.stem!r} is also used by {files[path.stem]}")
            files[path.stem] = path
    return files


def _palette_array(palette: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    colours = np.asarray(palette)
    if colours.shape != (num_classes, 3) or np.any((colours < 0) | (colours > 255)):
        raise ValueError(
            f"palette: expected {num_classes} RGB colours (one per class, 0..255), got shape {colours.shape}"
        )
    if len(np.unique(colours, axis=0)) != num_classes:
        raise ValueError("palette: two classes share a colour")
    return colours.astype(np.int64)


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    """Each RGB colour as one int, r * 65536 + g * 256 + b."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class SegmentationFolder:
    """Pictures and per-pixel class masks: ``root/images/`` and ``root/masks/``, matched by stem.

    ``dataset[i]`` is ``{"image": (3, H, W) float32, "mask": (H, W) int64}``. Mask values must lie in
    ``[0, num_classes)`` or equal ``ignore_index`` (e.g. 255 for the "void" pixels of VOC-style masks).
    Images and masks of more than ``max_pixels`` pixels are refused.
    """

    def __init__(
        self,
        root: str | Path,
        num_classes: int,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        _check_max_pixels(max_pixels)
        self.max_pixels = max_pixels
        self.root = Path(root)
        self.num_classes = int(num_classes)
        self.palette = None if palette is None else _palette_array(palette, self.num_classes)
        self.ignore_index = ignore_index

        images = _image_files(self.root / "images")
        masks_dir = self.root / "masks"
        masks = {p.stem: p for p in sorted(masks_dir.glob("*")) if p.suffix.lower() == ".png"}
        if not images:
            raise ValueError(f"{self.root / 'images'}: no images found (suffixes {IMAGE_SUFFIXES})")
        for stem, path in images.items():
            if stem not in masks:
                raise ValueError(f"{path}: missing mask {masks_dir / (stem + '.png')}")
        for stem, path in sorted(masks.items()):
            if stem not in images:
                raise ValueError(f"{path}: mask without an image in {self.root / 'images'}")
        self.files = [(images[stem], masks[stem]) for stem in images]
        for index in range(len(self.files)):
            self[index]  # read and check every pair once, so bad data fails here

    def __len__(self) -> int:
        return len(self.files)

    def load_mask(self, path: Path) -> np.ndarray:
        """The mask at ``path`` as int64 (H, W) class indices, checked against num_classes."""
        with _open(path, self.max_pixels) as mask_image:
            mode = mask_image.mode
            pixels = np.asarray(mask_image.convert("RGB") if mode in ("RGB", "RGBA") else mask_image)
        if mode in INDEX_MASK_MODES:
            mask = pixels.astype(np.int64)
        elif mode in ("RGB", "RGBA"):
            mask = self._classes_of_colours(pixels, path, mode)
        else:
            raise ValueError(f"{path}: unsupported mask mode {mode!r}")
        bad = ((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_index)
        if bad.any():
            raise ValueError(
                f"{path}: label {int(mask[bad][0])} is outside [0, {self.num_classes}) "
                f"(num_classes={self.num_classes}, ignore_index={self.ignore_index})"
            )
        return mask

    def _classes_of_colours(self, rgb: np.ndarray, path: Path, mode: str) -> np.ndarray:
        """Each pixel's class: the index of its colour in the palette."""
        if self.palette is None:
            raise ValueError(f"{path}: an {mode} mask needs a palette (one colour per class)")
        codes = _colour_codes(rgb)
        palette_codes = _colour_codes(self.palette)
        order = np.argsort(palette_codes)
        slot = np.minimum(np.searchsorted(palette_codes[order], codes), len(order) - 1)
        unknown = palette_codes[order][slot] != codes
        if unknown.any():
            row, col = np.argwhere(unknown)[0]
            colour = tuple(int(v) for v in rgb[row, col])
            raise ValueError(f"{path}: pixel (row {row}, col {col}) has colour {colour}, not in the palette")
        return order[slot]

    def __getitem__(self, index: int) -> dict:
        image_path, mask_path = self.files[index]
        image = load_image(image_path, self.max_pixels)
        mask = self.load_mask(mask_path)
        if mask.shape != image.shape[1:]:
            raise ValueError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {image_path.name} "
                f"is {image.shape[2]}x{image.shape[1]}"
            )
        return {"image": image, "mask": mask}


class LocalizationFolder:
    """Pictures with one object each: ``root/images/`` and a CSV ``file,class,x,y,w,h``.

    ``classes`` names the object classes; a row's class must be one of them. ``dataset[i]`` is
    ``{"image": (3, H, W) float32, "label": int, "box": (4,) float32 (x, y, w, h)}``, in CSV row order.
    A row's file is a path inside ``images/``. Pictures there that the CSV does not name are not part
    of the dataset. The CSV may start with a UTF-8 byte-order mark (as Excel saves it). Images of more
    than ``max_pixels`` pixels are refused.
    """

    def __init__(
        self, root: str | Path, classes: Sequence[str], csv_name: str = "boxes.csv", max_pixels: int = MAX_PIXELS
    ) -> None:
        self.root = Path(root)
        self.classes = tuple(classes)
        # the CSV's class fields are stripped, so a name with spaces around it could never match
        if (
            not self.classes
            or len(set(self.classes)) != len(self.classes)
            or any(not name or name != name.strip() for name in self.classes)
        ):
            raise ValueError(
                f"classes: expected distinct, non-empty class names without spaces around them, got {classes!r}"
            )
        _check_max_pixels(max_pixels)
        self.max_pixels = max_pixels
        self.num_classes = len(self.classes)
        self.csv_path = self.root / csv_name
        self.items = self._read_csv()
        for index in range(len(self.items)):
            self[index]  # read every image once: unreadable files and boxes outside fail here

    def _read_csv(self) -> list[tuple[Path, int, np.ndarray]]:
        where = self.csv_path
        try:
            with open(where, newline="", encoding="utf-8-sig") as handle:  # -sig: a BOM is skipped
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise ValueError(f"{where}: cannot read the CSV ({error})") from error
        if not rows or tuple(field.strip() for field in rows[0]) != CSV_HEADER:
            found = rows[0] if rows else "an empty file"
            raise ValueError(f"{where}: expected the header {','.join(CSV_HEADER)}, found {found}")
        items: list[tuple[Path, int, np.ndarray]] = []
        seen: dict[str, int] = {}  # file name: line of its box
        for line, row in enumerate(rows[1:], start=2):
            if not any(field.strip() for field in row):
                continue  # blank lines
            if len(row) != len(CSV_HEADER):
                raise ValueError(
                    f"{where}, line {line}: expected {len(CSV_HEADER)} fields, got {len(row)}: {row}"
                )
            name, class_name = row[0].strip(), row[1].strip()
            try:
                box = np.array([float(field) for field in row[2:]], dtype=np.float64)
            except ValueError as error:
                raise ValueError(f"{where}, line {line}: x, y, w, h must be numbers ({error})") from error
            if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
                raise ValueError(
                    f"{where}, line {line}: expected finite x, y and positive w, h, got {box.tolist()}"
                )
            if class_name not in self.classes:
                raise ValueError(
                    f"{where}, line {line}: unknown class {class_name!r}, expected one of {self.classes}"
                )
            if name in seen:
                raise ValueError(f"{where}, line {line}: {name} already has a box on line {seen[name]}")
            seen[name] = line
            as_windows = PureWindowsPath(name)  # reads both / and \\ as separators: one check for every system
            if as_windows.anchor or ".." in as_windows.parts:
                raise ValueError(
                    f"{where}, line {line}: file {name!r} must be a path inside {self.root / 'images'} "
                    "(not absolute, no '..')"
                )
            path = self.root / "images" / name
            if not path.is_file():
                raise ValueError(f"{where}, line {line}: image file {path} not found")
            items.append((path, self.classes.index(class_name), box.astype(np.float32)))
        if not items:
            raise ValueError(f"{where}: no rows after the header")
        return items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, label, box = self.items[index]
        image = load_image(path, self.max_pixels)
        height, width = image.shape[1:]
        x, y, w, h = box.tolist()
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise ValueError(
                f"{path}: box (x={x:g}, y={y:g}, w={w:g}, h={h:g}) reaches outside the {width}x{height} image"
            )
        return {"image": image, "label": label, "box": box.copy()}
