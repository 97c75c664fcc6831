import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from minicv.data.folder import LocalizationFolder, SegmentationFolder, load_image

NUM_CLASSES = 4
PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
CLASSES = ("duck", "boat", "ball")


def random_picture(rng, height=6, width=8) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_segmentation(root, rng, count=3, mask_kind="L", height=6, width=8) -> dict:
    """Pictures and masks of the given kind under root; returns {stem: (pixels, classes)}."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    written = {}
    for i in range(count):
        stem = f"pic{i}"
        pixels = random_picture(rng, height, width)
        classes = rng.integers(0, NUM_CLASSES, size=(height, width)).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{stem}.png")
        if mask_kind == "RGB":
            mask = Image.fromarray(np.asarray(PALETTE, dtype=np.uint8)[classes])
        else:
            mask = Image.fromarray(classes)
            if mask_kind == "P":
                mask.putpalette(np.asarray(PALETTE, dtype=np.uint8).ravel().tolist())
        assert mask.mode == mask_kind
        mask.save(root / "masks" / f"{stem}.png")
        written[stem] = (pixels, classes)
    return written


@pytest.mark.parametrize("mask_kind", ["L", "P", "RGB"])
def test_segmentation_folder_loads_good_data(tmp_path, mask_kind):
    written = write_segmentation(tmp_path, np.random.default_rng(0), mask_kind=mask_kind)
    dataset = SegmentationFolder(tmp_path, NUM_CLASSES, palette=PALETTE if mask_kind == "RGB" else None)
    assert len(dataset) == len(written)
    for i, (image_path, _) in enumerate(dataset.files):
        pixels, classes = written[image_path.stem]
        item = dataset[i]
        assert item["image"].dtype == np.float32 and item["image"].shape == (3, 6, 8)
        np.testing.assert_allclose(item["image"], pixels.transpose(2, 0, 1) / 255.0, rtol=1e-6)
        assert item["mask"].dtype == np.int64
        np.testing.assert_array_equal(item["mask"], classes)


def test_load_image_converts_grey_and_drops_alpha(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_allclose(load_image(tmp_path / "grey.png"), np.stack([grey] * 3) / 255.0, rtol=1e-6)
    rgba = np.random.default_rng(1).integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(
        load_image(tmp_path / "rgba.png"), rgba[..., :3].transpose(2, 0, 1) / 255.0, rtol=1e-6
    )


def test_ignore_index_is_allowed_beyond_the_classes(tmp_path):
    write_segmentation(tmp_path, np.random.default_rng(0), count=1)
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[0, 0] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "pic0.png")
    assert SegmentationFolder(tmp_path, NUM_CLASSES, ignore_index=255)[0]["mask"][0, 0] == 255
    with pytest.raises(ValueError, match=r"pic0\.png: label 255 is outside \[0, 4\)"):
        SegmentationFolder(tmp_path, NUM_CLASSES)


def bad_segmentation_cases():
    def missing_mask(root):
        (root / "masks" / "pic1.png").unlink()
        return "pic1.png: missing mask"

    def mask_without_image(root):
        (root / "images" / "pic2.png").unlink()
        return "pic2.png: mask without an image"

    def size_mismatch(root):
        Image.fromarray(np.zeros((6, 7), dtype=np.uint8)).save(root / "masks" / "pic1.png")
        return "pic1.png: mask is 7x6"

    def label_beyond_classes(root):
        Image.fromarray(np.full((6, 8), NUM_CLASSES, dtype=np.uint8)).save(root / "masks" / "pic0.png")
        return "pic0.png: label 4 is outside"

    def unreadable_image(root):
        (root / "images" / "pic2.png").write_bytes(b"not a png at all")
        return "pic2.png: cannot read"

    def unreadable_mask(root):
        data = (root / "masks" / "pic0.png").read_bytes()
        (root / "masks" / "pic0.png").write_bytes(data[: len(data) // 2])  # truncated
        return "pic0.png: cannot read"

    def rgb_mask_without_palette(root):
        Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(root / "masks" / "pic1.png")
        return "pic1.png: an RGB mask needs a palette"

    def unsupported_mask_mode(root):
        Image.fromarray(np.zeros((6, 8, 2), dtype=np.uint8)).save(root / "masks" / "pic1.png")  # LA
        return "pic1.png: unsupported mask mode"

    def no_images(root):
        for path in (root / "images").iterdir():
            path.unlink()
        return "no images found"

    def same_stem_twice(root):
        Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(root / "images" / "pic0.bmp")
        return "pic0.png: the stem 'pic0' is also used by"

    return [
        missing_mask,
        mask_without_image,
        size_mismatch,
        label_beyond_classes,
        unreadable_image,
        unreadable_mask,
        rgb_mask_without_palette,
        unsupported_mask_mode,
        no_images,
        same_stem_twice,
    ]


@pytest.mark.parametrize("spoil", bad_segmentation_cases(), ids=lambda f: f.__name__)
def test_bad_segmentation_data_names_the_file(tmp_path, spoil):
    write_segmentation(tmp_path, np.random.default_rng(0))
    SegmentationFolder(tmp_path, NUM_CLASSES)  # good before spoiling
    expected = spoil(tmp_path)
    with pytest.raises(ValueError, match=re.escape(expected)):
        SegmentationFolder(tmp_path, NUM_CLASSES)


def test_rgb_mask_with_a_colour_outside_the_palette(tmp_path):
    write_segmentation(tmp_path, np.random.default_rng(0), mask_kind="RGB")
    colours = np.zeros((6, 8, 3), dtype=np.uint8)
    colours[2, 5] = (9, 9, 9)
    Image.fromarray(colours).save(tmp_path / "masks" / "pic1.png")
    with pytest.raises(ValueError, match=re.escape("pic1.png: pixel (row 2, col 5) has colour (9, 9, 9)")):
        SegmentationFolder(tmp_path, NUM_CLASSES, palette=PALETTE)


def test_palette_must_have_one_distinct_colour_per_class(tmp_path):
    write_segmentation(tmp_path, np.random.default_rng(0), mask_kind="RGB")
    with pytest.raises(ValueError, match="palette"):
        SegmentationFolder(tmp_path, NUM_CLASSES, palette=PALETTE[:3])
    with pytest.raises(ValueError, match="share a colour"):
        SegmentationFolder(tmp_path, NUM_CLASSES, palette=PALETTE[:3] + [PALETTE[0]])


GOOD_ROWS = [
    ("a.png", "duck", "1", "2", "3", "2"),  # pictures are 8 wide, 6 high
    ("b.jpg", "ball", "0", "0", "8", "6"),
    ("c.png", "boat", "4.5", "0.5", "3.5", "5.5"),
]


def write_localization(root, rows=GOOD_ROWS, header="file,class,x,y,w,h") -> dict:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pictures = {}
    for name in ("a.png", "b.jpg", "c.png", "unlisted.png"):
        pictures[name] = random_picture(rng)
        Image.fromarray(pictures[name]).save(root / "images" / name)
    lines = [header] + [",".join(row) for row in rows]
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    return pictures


def test_localization_folder_loads_good_data(tmp_path):
    pictures = write_localization(tmp_path)
    dataset = LocalizationFolder(tmp_path, CLASSES)
    assert len(dataset) == 3 and dataset.num_classes == 3
    for item, row in zip((dataset[i] for i in range(3)), GOOD_ROWS, strict=True):
        assert item["image"].shape == (3, 6, 8) and item["image"].dtype == np.float32
        assert item["label"] == CLASSES.index(row[1])
        assert item["box"].dtype == np.float32
        np.testing.assert_array_equal(item["box"], [float(v) for v in row[2:]])
    np.testing.assert_allclose(dataset[0]["image"], pictures["a.png"].transpose(2, 0, 1) / 255.0, rtol=1e-6)


@pytest.mark.parametrize(
    "bad_row, expected",
    [
        (
            ("a.png", "duck", "6", "0", "3", "2"),
            "a.png: box (x=6, y=0, w=3, h=2) reaches outside the 8x6 image",
        ),
        (("a.png", "duck", "-1", "0", "3", "2"), "a.png: box (x=-1"),
        (("a.png", "duck", "0", "5", "3", "2"), "a.png: box (x=0, y=5"),
        (("a.png", "swan", "0", "0", "3", "2"), "line 2: unknown class 'swan'"),
        (("a.png", "duck", "0", "0", "3"), "line 2: expected 6 fields, got 5"),
        (("a.png", "duck", "0", "zero", "3", "2"), "line 2: x, y, w, h must be numbers"),
        (("a.png", "duck", "0", "0", "0", "2"), "line 2: expected finite x, y and positive w, h"),
        (("a.png", "duck", "nan", "0", "1", "2"), "line 2: expected finite x, y and positive w, h"),
        (("gone.png", "duck", "0", "0", "1", "2"), "line 2: image file"),
    ],
)
def test_bad_localization_row_names_the_file(tmp_path, bad_row, expected):
    write_localization(tmp_path, rows=[bad_row])
    with pytest.raises(ValueError, match=re.escape(expected)) as raised:
        LocalizationFolder(tmp_path, CLASSES)
    assert "boxes.csv" in str(raised.value) or "a.png" in str(raised.value)


def test_bad_localization_files(tmp_path):
    write_localization(tmp_path, rows=GOOD_ROWS + [GOOD_ROWS[0]])
    with pytest.raises(ValueError, match=re.escape("boxes.csv, line 5: a.png already has a box on line 2")):
        LocalizationFolder(tmp_path, CLASSES)

    write_localization(tmp_path, header="name,label,x,y,w,h")
    with pytest.raises(ValueError, match=re.escape("boxes.csv: expected the header file,class,x,y,w,h")):
        LocalizationFolder(tmp_path, CLASSES)

    write_localization(tmp_path, rows=[])
    with pytest.raises(ValueError, match=re.escape("boxes.csv: no rows after the header")):
        LocalizationFolder(tmp_path, CLASSES)

    write_localization(tmp_path)
    (tmp_path / "images" / "c.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=re.escape("c.png: cannot read the file as an image")):
        LocalizationFolder(tmp_path, CLASSES)

    with pytest.raises(ValueError, match=re.escape("missing.csv: cannot read the CSV")):
        LocalizationFolder(tmp_path, CLASSES, csv_name="missing.csv")

    with pytest.raises(ValueError, match="classes"):
        LocalizationFolder(tmp_path, ("duck", "duck"))


def write_png(path, samples: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written byte by byte (PIL writes 16-bit grey but not 16-bit RGB): colour type 0 for
    grey (H, W) samples, 2 for RGB (H, W, 3)."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


def test_16_and_32_bit_images_are_scaled_by_their_bit_depth(tmp_path):
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 2**16, size=(5, 7)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    Image.frombytes("I;16B", (7, 5), grey.astype(">u2").tobytes()).save(tmp_path / "grey16b.tif")
    assert Image.open(tmp_path / "grey16b.tif").mode == "I;16B"
    for name in ("grey16.png", "grey16b.tif"):
        np.testing.assert_allclose(load_image(tmp_path / name), np.stack([grey] * 3) / 65535, rtol=1e-6)

    wide = np.array([[0, 2**20, 2**31 - 1]], dtype=np.int32)
    Image.fromarray(wide).save(tmp_path / "grey32.tif")
    assert Image.open(tmp_path / "grey32.tif").mode == "I"
    np.testing.assert_allclose(load_image(tmp_path / "grey32.tif")[:, 0], [wide[0] / (2**31 - 1)] * 3, rtol=1e-6)

    # a PGM of maxval 1023 opens as mode I, which PIL scales to 16 bits
    (tmp_path / "ten_bits.pgm").write_bytes(b"P5\n3 1\n1023\n" + np.array([0, 341, 1023], ">u2").tobytes())
    assert Image.open(tmp_path / "ten_bits.pgm").mode == "I"
    np.testing.assert_allclose(load_image(tmp_path / "ten_bits.pgm")[0, 0], [0, 341 / 1023, 1], atol=1e-4)

    rgb = rng.integers(0, 2**16, size=(4, 6, 3))
    write_png(tmp_path / "rgb16.png", rgb, colour_type=2)  # PIL holds it as 8-bit RGB: the high bytes
    np.testing.assert_allclose(load_image(tmp_path / "rgb16.png"), rgb.transpose(2, 0, 1) / 65535, atol=1 / 255)


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    Image.fromarray(np.zeros((50, 100, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    assert load_image(tmp_path / "wide.png", max_pixels=5000).shape == (3, 50, 100)
    with pytest.raises(ValueError, match=re.escape("wide.png: 100x50 (WxH) is 5000 pixels, over the limit of 4999")):
        load_image(tmp_path / "wide.png", max_pixels=4999)

    # a header saying 20000x20000 with no pixel data after it: refused from the header, where PIL's own
    # decompression-bomb check (at 2 * 89 Mpx) would otherwise answer first
    write_png(tmp_path / "bomb.png", np.zeros((1, 1), dtype=np.uint16), colour_type=0)
    data = bytearray((tmp_path / "bomb.png").read_bytes())
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    pil_limit = Image.MAX_IMAGE_PIXELS
    expected = f"bomb.png: 20000x20000 (WxH) is 400000000 pixels, over the limit of {4096 * 4096}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_image(tmp_path / "bomb.png")
    # raised past PIL's limit, max_pixels is the one that counts: the file is decoded (and is broken)
    with pytest.raises(ValueError, match="bomb.png: cannot read the file as an image") as raised:
        load_image(tmp_path / "bomb.png", max_pixels=10**9)
    assert "decompression bomb" not in str(raised.value)
    assert Image.MAX_IMAGE_PIXELS == pil_limit

    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_pixels: expected a positive int"):
            load_image(tmp_path / "wide.png", max_pixels=bad)


def test_folders_pass_the_pixel_limit_on(tmp_path):
    write_segmentation(tmp_path / "seg", np.random.default_rng(0))  # 8x6 pictures and masks
    assert len(SegmentationFolder(tmp_path / "seg", NUM_CLASSES, max_pixels=48)) == 3
    with pytest.raises(ValueError, match=re.escape("pic0.png: 8x6 (WxH) is 48 pixels, over the limit of 47")):
        SegmentationFolder(tmp_path / "seg", NUM_CLASSES, max_pixels=47)
    write_localization(tmp_path / "loc")
    assert len(LocalizationFolder(tmp_path / "loc", CLASSES, max_pixels=48)) == 3
    with pytest.raises(ValueError, match=re.escape("a.png: 8x6 (WxH) is 48 pixels, over the limit of 47")):
        LocalizationFolder(tmp_path / "loc", CLASSES, max_pixels=47)


@pytest.mark.parametrize("name", ["../outside.png", "a/../../outside.png", "..\\outside.png", "ABSOLUTE", "C:\\x.png"])
def test_csv_files_outside_the_images_folder_are_refused(tmp_path, name):
    root = tmp_path / "data"
    write_localization(root)
    Image.fromarray(random_picture(np.random.default_rng(3))).save(tmp_path / "outside.png")
    name = str(tmp_path / "outside.png") if name == "ABSOLUTE" else name
    write_localization(root, rows=[GOOD_ROWS[0], (name, "duck", "1", "2", "3", "2")])
    with pytest.raises(ValueError, match=re.escape(f"boxes.csv, line 3: file {name!r} must be a path inside")):
        LocalizationFolder(root, CLASSES)


def test_csv_files_in_subfolders_and_a_byte_order_mark_are_read(tmp_path):
    pictures = write_localization(tmp_path)
    (tmp_path / "images" / "sub").mkdir()
    Image.fromarray(pictures["c.png"]).save(tmp_path / "images" / "sub" / "d.png")
    lines = ["file,class,x,y,w,h", "a.png,duck,1,2,3,2", "sub/d.png,ball,0,0,8,6"]
    (tmp_path / "boxes.csv").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # as Excel saves it
    assert (tmp_path / "boxes.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    dataset = LocalizationFolder(tmp_path, CLASSES)
    assert [dataset[i]["label"] for i in range(2)] == [0, 2]
    np.testing.assert_allclose(dataset[1]["image"], pictures["c.png"].transpose(2, 0, 1) / 255.0, rtol=1e-6)


@pytest.mark.parametrize("classes", [("duck", " boat"), ("duck", ""), ()])
def test_class_names_must_match_stripped_csv_fields(tmp_path, classes):
    write_localization(tmp_path)
    with pytest.raises(ValueError, match="classes: expected distinct, non-empty class names without spaces"):
        LocalizationFolder(tmp_path, classes)
