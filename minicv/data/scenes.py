"""Built-in synthetic scenes: sky, water, grass and one object (a duck, a boat or a ball) per image.

Every scene is drawn with vectorised NumPy on a pixel grid (``meshgrid`` + boolean masks), so 1000
scenes of 64x64 take about a second. The three objects differ in shape, not in colour: all three draw
their colours from the same distribution, so a model has to learn the shapes to tell them apart.

- duck: an ellipse body, a round head on the front of its back, a triangular beak and an eye;
- boat: a trapezoid hull, a thin mast and a triangular sail;
- ball: a disc with two curved seams (as on a tennis ball).

Each scene gives an RGB image, a per-pixel class mask (``CLASS_NAMES``), the object's class
(``OBJECT_NAMES``, the localization task's label) and its tight bounding box ``(x, y, w, h)`` in pixels,
computed from the object's mask: the box covers columns ``x .. x + w - 1`` and rows ``y .. y + h - 1``.

Random parts of a scene: horizon height and tilt, shoreline height, tilt and waviness, sky, water and
grass colours and textures (clouds, waves, grass blades, pixel noise), the object's class, scale,
position, facing and colours, and the lighting (brightness, contrast, per-channel colour gain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES = ("sky", "water", "grass", "duck", "boat", "ball")
OBJECT_NAMES = ("duck", "boat", "ball")
FIRST_OBJECT_CLASS = CLASS_NAMES.index(OBJECT_NAMES[0])  # mask class of object label 0
SKY, WATER, GRASS = 0, 1, 2

# One RGB colour per mask class, for drawing masks (not the colours the scenes are drawn with).
PALETTE = np.array(
    [
        [135, 206, 235],  # sky: light blue
        [25, 70, 160],  # water: dark blue
        [60, 160, 60],  # grass: green
        [250, 210, 40],  # duck: yellow
        [200, 60, 40],  # boat: red
        [220, 60, 220],  # ball: magenta
    ],
    dtype=np.uint8,
)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Scene:
    """One scene: image (3, H, W) float32 in [0, 1], mask (H, W) int64 of CLASS_NAMES indices, label
    (an OBJECT_NAMES index) and box (4,) float32 ``(x, y, w, h)``, the tight box of the object's pixels."""

    image: np.ndarray
    mask: np.ndarray
    label: int
    box: np.ndarray


def _image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if int(height) != height or int(width) != width or height < 8 or width < 8:
        raise ValueError(f"size: expected an int or (height, width) of ints >= 8, got {size!r}")
    return int(height), int(width)


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    """One HSV colour (each in [0, 1]) as an RGB triple."""
    channel_offsets = np.array([5.0, 3.0, 1.0])  # the standard closed form: R, G, B = f(5), f(3), f(1)
    k = (channel_offsets + hue * 6.0) % 6.0
    return value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour from the one distribution that all three objects share."""
    return _hsv_to_rgb(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.45, 1.0))


def _smooth_noise(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a random (cells+1)^2 grid, bilinearly interpolated over the image."""
    height, width = yy.shape
    grid = rng.random((cells + 1, cells + 1))
    gy = yy / height * cells
    gx = xx / width * cells
    y0 = np.minimum(gy.astype(np.int64), cells - 1)
    x0 = np.minimum(gx.astype(np.int64), cells - 1)
    fy, fx = gy - y0, gx - x0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _in_triangle(xx: np.ndarray, yy: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Pixels inside the triangle with these three (x, y) corners: all edge functions share a sign."""
    edges = []
    for i in range(3):
        (ax, ay), (bx, by) = corners[i], corners[(i + 1) % 3]
        edges.append((bx - ax) * (yy - ay) - (by - ay) * (xx - ax))
    signs = np.stack(edges)
    return np.all(signs >= 0, axis=0) | np.all(signs <= 0, axis=0)


# An object is drawn as parts, each a pixel mask and an RGB colour, painted in order.
Parts = list[tuple[np.ndarray, np.ndarray]]

# Each object's extent around its anchor (cx, cy), in units of its scale s, facing right:
# (left, right, top, bottom). Used only to keep the object inside the image.
_EXTENTS = {
    "duck": (0.5, 0.66, 0.49, 0.27),
    "boat": (0.5, 0.5, 0.76, 0.22),
    "ball": (0.3, 0.3, 0.3, 0.3),
}


def _duck(
    xx: np.ndarray,
    yy: np.ndarray,
    cx: float,
    cy: float,
    s: float,
    facing: float,
    rng: np.random.Generator,
    min_half: float,
) -> Parts:
    """Body ellipse, head circle on the front of the back, triangular beak, eye."""
    body_colour = _object_colour(rng)
    body = ((xx - cx) / (0.5 * s)) ** 2 + ((yy - cy) / (0.27 * s)) ** 2 <= 1.0
    hx, hy, head_r = cx + facing * 0.32 * s, cy - 0.32 * s, 0.16 * s
    head = (xx - hx) ** 2 + (yy - hy) ** 2 <= head_r**2
    beak_base = hx + facing * 0.12 * s
    beak = _in_triangle(
        xx,
        yy,
        np.array([[beak_base, hy - 0.06 * s], [beak_base, hy + 0.06 * s], [hx + facing * 0.34 * s, hy]]),
    )
    eye_r = max(0.035 * s, min_half)
    eye = (xx - (hx + facing * 0.04 * s)) ** 2 + (yy - (hy - 0.04 * s)) ** 2 <= eye_r**2
    head_colour = body_colour if rng.random() < 0.5 else _object_colour(rng)
    return [(body, body_colour), (head, head_colour), (beak, _object_colour(rng)), (eye, np.full(3, 0.05))]


def _boat(
    xx: np.ndarray,
    yy: np.ndarray,
    cx: float,
    cy: float,
    s: float,
    facing: float,
    rng: np.random.Generator,
    min_half: float,
) -> Parts:
    """Trapezoid hull (wide deck, narrow keel), thin mast, right-triangle sail on the facing side."""
    depth = 0.22 * s
    half_width = 0.5 * s - (yy - cy) / depth * 0.18 * s
    hull = (yy >= cy) & (yy <= cy + depth) & (np.abs(xx - cx) <= half_width)
    mast_x = cx - facing * 0.05 * s
    mast = (np.abs(xx - mast_x) <= max(0.03 * s, min_half)) & (yy >= cy - 0.76 * s) & (yy < cy)
    sail = _in_triangle(
        xx,
        yy,
        np.array([[mast_x, cy - 0.72 * s], [mast_x, cy - 0.06 * s], [mast_x + facing * 0.44 * s, cy - 0.06 * s]]),
    )
    mast_colour = np.full(3, rng.uniform(0.1, 0.4))
    return [(hull, _object_colour(rng)), (mast, mast_colour), (sail, _object_colour(rng))]


def _ball(
    xx: np.ndarray,
    yy: np.ndarray,
    cx: float,
    cy: float,
    s: float,
    facing: float,
    rng: np.random.Generator,
    min_half: float,
) -> Parts:
    """Disc with two curved seams: arcs of circles centred outside the ball on opposite sides."""
    radius = 0.3 * s
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    angle = rng.uniform(0, np.pi)
    seam_half = max(0.05 * s, min_half)
    seam = np.zeros_like(disc)
    for side in (-1.0, 1.0):
        sx = cx + side * 1.25 * radius * np.cos(angle)
        sy = cy + side * 1.25 * radius * np.sin(angle)
        seam |= np.abs(np.hypot(xx - sx, yy - sy) - radius) <= seam_half
    seam &= disc
    return [(disc, _object_colour(rng)), (seam, _object_colour(rng))]


_DRAW = {"duck": _duck, "boat": _boat, "ball": _ball}


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky above a tilted horizon, water down to a wavy shoreline, grass below: (image, mask)."""
    height, width = yy.shape
    size = min(height, width)
    horizon = height * rng.uniform(0.2, 0.5) + rng.uniform(-0.25, 0.25) * (xx - width / 2)
    ripple = np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * xx / width + rng.uniform(0, 7))
    shore = height * rng.uniform(0.55, 1.0) + rng.uniform(-0.2, 0.2) * (xx - width / 2)
    shore = shore + size * rng.uniform(0.0, 0.05) * ripple
    mask = np.full(yy.shape, GRASS, dtype=np.int64)
    mask[yy < shore] = WATER
    mask[yy < horizon] = SKY

    # Sky: a vertical gradient from a deep colour at the top to a pale one at the horizon, plus clouds.
    sky_top = np.array([rng.uniform(0.15, 0.55), rng.uniform(0.35, 0.75), rng.uniform(0.7, 1.0)])
    sky_low = sky_top + rng.uniform(0.2, 0.6) * (1.0 - sky_top)
    t = np.clip(yy / np.maximum(horizon, 1.0), 0.0, 1.0)
    sky = sky_top[:, None, None] * (1 - t) + sky_low[:, None, None] * t
    clouds = np.clip((_smooth_noise(rng, yy, xx, 4) - rng.uniform(0.4, 0.8)) * 3.0, 0.0, 1.0)
    sky = sky * (1 - clouds) + rng.uniform(0.8, 1.0) * clouds

    # Water: horizontal wave stripes that wobble sideways, darker towards the viewer.
    water_colour = np.array([rng.uniform(0.0, 0.25), rng.uniform(0.2, 0.5), rng.uniform(0.4, 0.75)])
    wavelength = size * rng.uniform(0.05, 0.12)
    wobble = 0.3 * np.sin(2 * np.pi * xx / (size * rng.uniform(0.2, 0.5)) + rng.uniform(0, 7))
    waves = np.sin(2 * np.pi * (yy / wavelength + wobble))
    water = water_colour[:, None, None] * (1.0 - 0.3 * yy / height) + 0.06 * waves

    # Grass: thin vertical blades of varying phase over large lighter and darker patches.
    grass_colour = np.array([rng.uniform(0.1, 0.45), rng.uniform(0.4, 0.75), rng.uniform(0.0, 0.3)])
    blade_phase = 6.0 * _smooth_noise(rng, yy, xx, 6)
    blades = np.sin(2 * np.pi * xx / rng.uniform(1.5, 3.0) + blade_phase)
    patches = _smooth_noise(rng, yy, xx, 3) - 0.5
    grass = grass_colour[:, None, None] * (1.0 + 0.3 * patches) + 0.07 * blades

    image = np.where(mask == SKY, sky, np.where(mask == WATER, water, grass))
    return image, mask


def make_scene(rng: np.random.Generator, size: int | tuple[int, int] = 64) -> Scene:
    """Draw one random scene of ``size`` (an int, or (height, width)) pixels with the generator ``rng``."""
    height, width = _image_size(size)
    yy, xx = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    image, mask = _background(rng, yy, xx)

    label = int(rng.integers(len(OBJECT_NAMES)))
    name = OBJECT_NAMES[label]
    s = min(height, width) * rng.uniform(0.3, 0.55)
    facing = 1.0 if rng.random() < 0.5 else -1.0
    left, right, top, bottom = _EXTENTS[name]
    if facing < 0:
        left, right = right, left
    cx = rng.uniform(left * s + 1, width - right * s - 1)
    cy_low = height - bottom * s - 1
    cy = rng.uniform(min(max(top * s + 1, 0.35 * height), cy_low), cy_low)
    # Parts at least a pixel wide: a half-width of 0.5 always covers one pixel centre.
    parts = _DRAW[name](xx, yy, cx, cy, s, facing, rng, 0.5)

    # Shade the object from lit top to darker bottom, so it is not flat colour.
    shade = 1.1 - 0.3 * np.clip((yy - (cy - top * s)) / ((top + bottom) * s), 0.0, 1.0)
    drawn = np.zeros(mask.shape, dtype=bool)
    for part, colour in parts:
        image[:, part] = (colour[:, None, None] * shade)[:, part]
        drawn |= part
    mask[drawn] = FIRST_OBJECT_CLASS + label

    rows = np.flatnonzero(drawn.any(axis=1))
    cols = np.flatnonzero(drawn.any(axis=0))
    box = np.array([cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1], dtype=np.float32)

    # Lighting: contrast about the mean, brightness, per-channel colour gain, then sensor noise.
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.7, 1.3) + mean
    image = image * rng.uniform(0.7, 1.25) * rng.uniform(0.9, 1.1, size=(3, 1, 1))
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.03), size=image.shape)
    return Scene(np.clip(image, 0.0, 1.0).astype(np.float32), mask, label, box)


class SceneDataset:
    """A fixed, reproducible set of ``n`` scenes of one split, drawn on demand.

    ``dataset[i]`` returns a dict ``{"image": (3, H, W) float32, "mask": (H, W) int64, "label": int,
    "box": (4,) float32}``; ``dataset.scene(i)`` returns the same as a Scene. Scene ``i`` is drawn with
    a generator seeded by ``SeedSequence(seed, spawn_key=(split index, i))``: the same for the same
    (seed, split, i), whatever ``n`` is, and independent streams for different splits, so splits never
    share an image.
    """

    num_classes = len(CLASS_NAMES)
    num_objects = len(OBJECT_NAMES)

    def __init__(self, split: str = "train", n: int = 1000, size: int | tuple[int, int] = 64, seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if int(n) != n or n < 0:
            raise ValueError(f"n: expected a non-negative int, got {n!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        self.split, self.n, self.size, self.seed = split, int(n), _image_size(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> Scene:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for a SceneDataset of {self.n} scenes")
        index = int(index) % self.n
        sequence = np.random.SeedSequence(self.seed, spawn_key=(SPLITS.index(self.split), index))
        return make_scene(np.random.default_rng(sequence), self.size)

    def __getitem__(self, index: int) -> dict:
        scene = self.scene(index)
        return {"image": scene.image, "mask": scene.mask, "label": scene.label, "box": scene.box}
