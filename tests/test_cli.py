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


@pytest.mark.filterwarnings("ignore:(overflow|invalid value) encountered:RuntimeWarning")  # it diverges
def test_a_diverging_run_stops_with_one_line_and_status_1(tmp_path, capsys):
    """The issue's reproduction: the second step's loss is NaN."""
    run = tmp_path / "run"
    code = main(["train", "--model", "segnet", "--epochs", "2", "--train-size", "16", "--test-size", "8", "--size",
                 "16", "--batch-size", "8", "--device", "numpy", "--optimizer", "sgd", "--lr", "1e30", "--out",
                 str(run)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err == "minicv train: training diverged at epoch 1, step 2: the loss is nan; no checkpoint was written"
    assert not (run / "checkpoint.npz").exists()


def test_eval_and_predict_warn_about_a_checkpoint_with_non_finite_weights(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--model", "segnet", "--out", str(run), *TINY]) == 0
    checkpoint = run / "checkpoint.npz"
    with np.load(checkpoint) as f:
        entries = {k: f[k] for k in f.files}
    entries["model/down.0.0.0.weight"][:] = np.nan
    np.savez(checkpoint, **entries)
    _photo(tmp_path / "photo.png", 16, 16)
    warning = r"checkpoint.npz: 1 of 74 weight arrays hold NaN or inf \(model/down.0.0.0.weight\)"
    with pytest.warns(RuntimeWarning, match=warning):
        assert main(["eval", "--checkpoint", str(checkpoint), *TINY[:-2]]) == 0
    with pytest.warns(RuntimeWarning, match=warning):
        assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "photo.png"), "--out",
                     str(tmp_path / "pred"), "--device", "numpy"]) == 0
