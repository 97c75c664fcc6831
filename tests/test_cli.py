"""The command line: train, eval and predict end to end on tiny data; --help everywhere; clear errors."""

import numpy as np
import pytest
from PIL import Image

from minicv.cli import build_parser, main

TINY = ["--device", "numpy", "--train-size", "8", "--test-size", "4", "--size", "32", "--epochs", "1"]


@pytest.mark.parametrize("command", ["demo", "train", "eval", "predict", "check", "bench"])
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--out" in text and "--seed" in text and "--device" in text


def _photo(path, height, width):
    """A smooth photograph-like picture the scene generator did not make."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([np.sin(3 * xx) ** 2, yy, 0.5 + 0.5 * np.cos(5 * xx * yy)], -1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)


def test_train_eval_predict_segmentation(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "segnet", "--out", str(run), *TINY]) == 0
    checkpoint = str(run / "checkpoint.npz")
    assert main(["eval", "--checkpoint", checkpoint, *TINY[:-2]]) == 0
    assert "mean_iou" in capsys.readouterr().out
    _photo(tmp_path / "photo.png", 45, 70)  # not a multiple of the encoder's downsampling
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", checkpoint, str(tmp_path / "photo.png"), "--out", str(out),
                 "--device", "numpy"]) == 0
    mask = np.asarray(Image.open(out / "photo_mask.png"))
    assert mask.shape == (45, 70) and mask.max() < 6
    assert np.asarray(Image.open(out / "photo_overlay.png")).shape == (45, 70, 3)


def test_predict_box_on_an_image_of_another_size(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "loc", "--out", str(run), *TINY]) == 0
    _photo(tmp_path / "photo.png", 50, 80)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "checkpoint.npz"), str(tmp_path / "photo.png"),
                 "--out", str(out), "--device", "numpy"]) == 0
    assert (out / "photo_box.png").exists()
    assert "at (x, y, w, h)" in capsys.readouterr().out


def test_predict_with_a_bad_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="bad.npz"):
        main(["predict", "--checkpoint", str(bad), "x.png", "--device", "numpy"])


def test_unknown_device_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        main(["train", "--model", "naive", "--out", str(tmp_path), *TINY[2:], "--device", "tpu"])
