"""The command line: train, eval and predict end to end on tiny data; --help everywhere; clear errors."""

import numpy as np
import pytest
from PIL import Image

from minicv.checkpoint import read_meta
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


@pytest.fixture(scope="module")
def naive_checkpoint(tmp_path_factory) -> str:
    run = tmp_path_factory.mktemp("naive")
    assert main(["train", "--model", "naive", "--out", str(run), *TINY]) == 0
    return str(run / "checkpoint.npz")


def test_output_names_tell_inputs_apart_whatever_their_order(tmp_path):
    from minicv.cli import output_names

    paths = [str(tmp_path / name) for name in ("d1/a.png", "d2/a.png", "d1/a.jpg", "b.png", "x/B.png", "c.png")]
    names = ["d1/a.png", "d2/a.png", "a.jpg", f"{tmp_path.name}/b.png", "x/B.png", "c"]
    assert output_names(paths) == names
    assert output_names(paths[::-1]) == names[::-1]
    assert output_names([paths[0], str(tmp_path / "d2" / ".." / "d1" / "a.png")]) == ["a", "a"]  # one file


def test_predict_gives_every_input_its_own_outputs_and_prints_them(naive_checkpoint, tmp_path, capsys):
    sizes = {"d1/a.png": (10, 12), "d2/a.png": (14, 9), "d1/a.jpg": (8, 8), "d1/b.png": (6, 7)}
    for name, (height, width) in sizes.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        _photo(tmp_path / name, height, width)
    out = tmp_path / "pred"
    inputs = [str(tmp_path / name) for name in sizes]
    assert main(["predict", "--checkpoint", naive_checkpoint, *inputs, "--out", str(out), "--device", "numpy"]) == 0
    printed = capsys.readouterr().out
    outputs = {"d1/a.png": "d1/a.png", "d2/a.png": "d2/a.png", "d1/a.jpg": "a.jpg", "d1/b.png": "b"}
    for name, stem in outputs.items():
        mask, overlay = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
        assert np.asarray(Image.open(mask)).shape == sizes[name]
        assert np.asarray(Image.open(overlay)).shape == (*sizes[name], 3)
        assert f"{tmp_path / name}: mask {mask}, overlay {overlay}\n" in printed
    assert len(list(out.rglob("*.png"))) == 2 * len(sizes)


def test_predict_refuses_an_image_over_max_pixels(naive_checkpoint, tmp_path):
    _photo(tmp_path / "photo.png", 10, 12)
    with pytest.raises(ValueError, match=r"photo\.png: 12x10 \(WxH\) is 120 pixels, over the limit of 119"):
        main(["predict", "--checkpoint", naive_checkpoint, str(tmp_path / "photo.png"), "--max-pixels", "119",
              "--out", str(tmp_path / "pred"), "--device", "numpy"])


def _segmentation_folder(root, count, height, width):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        _photo(root / "images" / f"p{i}.png", height, width)
        Image.fromarray((np.arange(height * width).reshape(height, width) % 2).astype(np.uint8)).save(
            root / "masks" / f"p{i}.png"
        )


def test_images_a_model_cannot_take_are_refused_before_training(tmp_path):
    _segmentation_folder(tmp_path / "data", 3, 20, 20)
    run = tmp_path / "run"
    folder = ["--data", str(tmp_path / "data"), "--num-classes", "2"]
    expected = r"\(segnet\): PoolingSegmenter takes heights and widths that are multiples of 8 .* got 20x20 \(WxH\)"
    with pytest.raises(ValueError, match=r"--data .*data " + expected):
        main(["train", "--model", "segnet", "--out", str(run), *folder, *TINY])
    with pytest.raises(ValueError, match="--data scenes " + expected):
        main(["train", "--model", "segnet", "--out", str(run), *TINY, "--size", "20"])
    assert not run.exists()
    with pytest.raises(ValueError, match=r"p0\.png: 20x20 \(WxH\) is 400 pixels, over the limit of 399"):
        main(["train", "--model", "naive", "--out", str(run), *folder, *TINY, "--max-pixels", "399"])


def test_a_folder_of_one_image_is_too_small_to_train_on(tmp_path):
    _segmentation_folder(tmp_path / "data", 1, 8, 8)
    with pytest.raises(ValueError, match="after holding out 1 image.* a folder needs at least 2 images"):
        main(["train", "--model", "naive", "--data", str(tmp_path / "data"), "--num-classes", "2",
              "--out", str(tmp_path / "run"), *TINY])


def test_classes_may_have_spaces_after_the_commas(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    rows = ["file,class,x,y,w,h"]
    for i, name in enumerate(["duck", "boat", "ball"]):
        _photo(tmp_path / "data" / "images" / f"p{i}.png", 16, 16)
        rows.append(f"p{i}.png,{name},2,3,8,9")
    (tmp_path / "data" / "boxes.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--model", "loc", "--data", str(tmp_path / "data"), "--classes", " duck, boat , ball",
                 "--out", str(run), *TINY]) == 0
    assert read_meta(str(run / "checkpoint.npz"))["config"]["classes"] == ["duck", "boat", "ball"]

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
