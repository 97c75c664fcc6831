"""The command line: train, eval and predict end to end on tiny data; --help everywhere; usage errors in
one line."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minicv import allocator, cli, devices, viz
from minicv.checkpoint import read_meta
from minicv.cli import EXAMPLES, build_parser, main
from minicv.data.scenes import PALETTE

TINY = ["--device", "numpy", "--train-size", "8", "--test-size", "4", "--size", "32", "--epochs", "1"]
EVAL_TINY = ["--device", "numpy", "--test-size", "4", "--size", "32"]  # eval trains nothing: no --train-size

# The options each command uses (check's cases have fixed seeds and it writes nothing; eval writes
# nothing; predict draws nothing at random): no option that does nothing.
OPTIONS = {
    "demo": {"--out", "--seed"},
    "train": {"--out", "--seed"},
    "eval": {"--seed"},
    "predict": {"--out"},
    "check": set(),
    "bench": {"--out", "--seed"},
}


@pytest.mark.parametrize("command", list(OPTIONS))
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--device" in text
    for option in ("--out", "--seed"):
        assert (option in text) == (option in OPTIONS[command]), option


@pytest.mark.parametrize("command", ["check", "bench"])
def test_check_and_bench_help_state_their_real_defaults(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: every device present" in text and "(default: every op)" in text
    assert build_parser().parse_args([command]).device is None  # None: run_check/run_bench take every device


REQUIRED = {"train": ["--model", "segnet"], "eval": ["--checkpoint", "c.npz"],
            "predict": ["--checkpoint", "c.npz", "a.png"]}


@pytest.mark.parametrize("command", ["demo", "train", "eval", "predict"])
def test_commands_that_run_a_model_default_to_the_library_default_device(command, capsys):
    """One default device: the library's (not the test suite's numpy), stated in the help."""
    args = build_parser().parse_args([command, *REQUIRED.get(command, [])])
    assert args.device == devices.DEFAULT_DEVICE == "numba"
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert f"(default: {devices.DEFAULT_DEVICE})" in " ".join(capsys.readouterr().out.split())


def test_help_examples_name_the_files_train_writes():
    """eval's and predict's examples read the checkpoint that train's first example writes."""
    train = build_parser().parse_args(EXAMPLES["train"].splitlines()[1].split()[1:])
    written = f"{train.out.replace('<model>', train.model)}/best.npz"
    for command in ("eval", "predict"):
        assert f"--checkpoint {written}" in EXAMPLES[command]
        assert EXAMPLES["train"].splitlines()[1] in EXAMPLES[command]  # the example says to train first


def test_commands_keep_freed_memory_and_bench_leaves_it_to_its_option(tmp_path, monkeypatch):
    """The minicv command is the application: it has glibc reuse freed memory (a training step's fresh
    buffers otherwise pay a page fault per 4 KiB at every call) before any command but bench, whose
    --malloc says it."""
    calls = []
    monkeypatch.setattr(cli, "reuse_freed_memory", lambda: calls.append(True) or True)
    assert main(["check", "--device", "numpy", "--op", "interpolate", "--dtype", "float64"]) == 0
    assert calls == [True]
    assert main(["bench", "--quick", "--device", "numpy", "--op", "max_pool2d", "--malloc", "system",
                 "--out", str(tmp_path)]) == 0
    assert calls == [True]
    assert allocator.reuse_freed_memory() == (sys.platform == "linux")  # glibc's mallopt, where there is glibc


def test_train_writes_runs_model_by_default_and_names_its_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "naive", *TINY, "--epochs", "2"]) == 0
    run = tmp_path / "runs" / "naive"
    assert {"checkpoint.npz", "best.npz", "history.json", "segmentation.png"} <= {p.name for p in run.iterdir()}
    out = capsys.readouterr().out
    assert "runs/naive/checkpoint.npz" in out and "runs/naive/best.npz" in out
    # the best epoch is chosen on validation scenes: the history's scores are not the test scores printed
    assert read_meta(run / "best.npz")["epoch"] in (1, 2)
    assert len(json.loads((run / "history.json").read_text())) == 2


def _photo(path, height, width):
    """A smooth photograph-like picture the scene generator did not make."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([np.sin(3 * xx) ** 2, yy, 0.5 + 0.5 * np.cos(5 * xx * yy)], -1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)


def test_train_eval_predict_segmentation(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "segnet", "--out", str(run), *TINY]) == 0
    checkpoint = str(run / "checkpoint.npz")
    assert main(["eval", "--checkpoint", checkpoint, *EVAL_TINY]) == 0
    assert "mean_iou" in capsys.readouterr().out
    _photo(tmp_path / "photo.png", 45, 70)  # not a multiple of the encoder's downsampling
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", checkpoint, str(tmp_path / "photo.png"), "--out", str(out),
                 "--device", "numpy"]) == 0
    with Image.open(out / "photo_mask.png") as picture:  # class numbers, shown in the class colours
        assert picture.mode == "P"
        assert np.array_equal(np.reshape(picture.getpalette()[: PALETTE.size], PALETTE.shape), PALETTE)
        mask = np.asarray(picture)
    assert mask.shape == (45, 70) and mask.max() < 6
    assert np.asarray(Image.open(out / "photo_overlay.png")).shape == (45, 70, 3)
    with Image.open(out / "legend.png") as legend:
        assert legend.mode == "RGB" and legend.height > 6 * 14  # a row per class
        colours = {tuple(c) for c in np.asarray(legend).reshape(-1, 3)}
    assert {tuple(c) for c in PALETTE.tolist()} <= colours
    assert "legend.png" in capsys.readouterr().out


def test_predict_box_on_an_image_of_another_size(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "loc", "--out", str(run), *TINY]) == 0
    _photo(tmp_path / "photo.png", 50, 80)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "checkpoint.npz"), str(tmp_path / "photo.png"),
                 "--out", str(out), "--device", "numpy"]) == 0
    assert (out / "photo_box.png").exists()
    assert "at (x, y, w, h)" in capsys.readouterr().out


def test_box_labels_are_readable():
    """The class and IoU sit on a band of the box's colour, in a contrasting ink, at a legible size."""
    green = (40, 220, 40)
    picture = np.asarray(viz.draw_boxes(np.full((3, 64, 64), 0.5), [((10, 30, 20, 20), "duck IoU 0.78", green)]))
    band = picture[120 - 18 : 120, 40 : 40 + 60]  # above the box (its top at row 30 * 4), the text's width
    in_colour = np.all(band == green, axis=-1).mean()
    ink = np.all(band == 0, axis=-1)
    assert in_colour > 0.5 and ink.any()
    rows = np.flatnonzero(ink.any(axis=1))
    assert rows[-1] - rows[0] >= 8  # letters at least 9 pixels tall (PIL's old bitmap font: 6 to 8)


def test_unknown_device_is_named(tmp_path, capsys):
    line = _usage_error(["train", "--model", "naive", "--out", str(tmp_path), *TINY[2:], "--device", "tpu"], capsys)
    assert "unknown device 'tpu'" in line


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
    assert len(list(out.rglob("*.png"))) == 2 * len(sizes) + 1  # and legend.png


def test_predict_refuses_an_image_over_max_pixels(naive_checkpoint, tmp_path, capsys):
    _photo(tmp_path / "photo.png", 10, 12)
    line = _usage_error(["predict", "--checkpoint", naive_checkpoint, str(tmp_path / "photo.png"), "--max-pixels",
                         "119", "--out", str(tmp_path / "pred"), "--device", "numpy"], capsys)
    assert re.search(r"photo\.png: 12x10 \(WxH\) is 120 pixels, over the limit of 119", line)


def _segmentation_folder(root, count, height, width):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        _photo(root / "images" / f"p{i}.png", height, width)
        Image.fromarray((np.arange(height * width).reshape(height, width) % 2).astype(np.uint8)).save(
            root / "masks" / f"p{i}.png"
        )


def test_images_a_model_cannot_take_are_refused_before_training(tmp_path, capsys):
    _segmentation_folder(tmp_path / "data", 3, 20, 20)
    run = tmp_path / "run"
    folder = ["--data", str(tmp_path / "data"), "--num-classes", "2"]
    expected = r"\(segnet\): PoolingSegmenter takes heights and widths that are multiples of 8 .* got 20x20 \(WxH\)"
    assert re.search(r"--data .*data " + expected, _usage_error(["train", "--model", "segnet", "--out", str(run),
                                                                  *folder, *TINY], capsys))
    assert re.search("--data scenes " + expected, _usage_error(["train", "--model", "segnet", "--out", str(run),
                                                                 *TINY, "--size", "20"], capsys))
    assert not run.exists()
    line = _usage_error(["train", "--model", "naive", "--out", str(run), *folder, *TINY, "--max-pixels", "399"], capsys)
    assert re.search(r"p0\.png: 20x20 \(WxH\) is 400 pixels, over the limit of 399", line)


def test_a_folder_of_one_image_is_too_small_to_train_on(tmp_path, capsys):
    _segmentation_folder(tmp_path / "data", 1, 8, 8)
    line = _usage_error(["train", "--model", "naive", "--data", str(tmp_path / "data"), "--num-classes", "2",
                         "--out", str(tmp_path / "run"), *TINY], capsys)
    assert "too few images to hold out validation and test images (at least 3 are needed)" in line


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

@pytest.mark.filterwarnings("error")  # inf and NaN are answers (as in PyTorch), not warnings
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
        assert main(["eval", "--checkpoint", str(checkpoint), *EVAL_TINY]) == 0
    with pytest.warns(RuntimeWarning, match=warning):
        assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "photo.png"), "--out",
                     str(tmp_path / "pred"), "--device", "numpy"]) == 0


def _usage_error(argv, capsys) -> str:
    """The one line a usage error prints (exit status 2), checked for its form."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"minicv {argv[0]}: error: "), captured.err
    return lines[0]


@pytest.fixture
def folder(tmp_path):
    """A segmentation folder of four 16x16 pictures whose masks use classes 0 to 3."""
    for name in ("images", "masks"):
        (tmp_path / "data" / name).mkdir(parents=True)
    for i in range(4):
        _photo(tmp_path / "data" / "images" / f"{i}.png", 16, 16)
        Image.fromarray(np.full((16, 16), i, np.uint8)).save(tmp_path / "data" / "masks" / f"{i}.png")
    image = tmp_path / "data" / "images" / "0.png"
    return tmp_path / "data", image


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["train", "--model", "segnet", "--data", "{tmp}/nowhere"], "--data {tmp}/nowhere: no such folder"),
        (["train", "--model", "segnet", "--data", "{data}", "--num-classes", "3"], "label 3 is outside [0, 3)"),
        (["train", "--model", "segnet", "--data", "{data}"], "--num-classes is required"),
        (["train", "--model", "segnet", "--num-classes", "0"], "--num-classes: expected a positive integer, got 0"),
        (["train", "--model", "naive", "--device", "tpu"], "unknown device 'tpu'"),
        (["check", "--device", "tpu"], "unknown device 'tpu'"),
        (["bench", "--device", "tpu"], "unknown device 'tpu'"),
        (["train", "--model", "naive", "--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["train", "--model", "naive", "--lr", "nan"], "--lr: expected a positive number, got nan"),
        (["train", "--model", "naive", "--seed", "-1"], "--seed: expected a non-negative integer, got -1"),
        (["train", "--model", "naive", "--out", "{image}"], "is a file, not a folder"),
        (["train", "--model", "loc", "--size", "20", "--device", "numpy", "--train-size", "4"],
         "--model loc: image_size: Localizer takes heights and widths that are multiples of 16"),
        (["demo", "--models", "naive,segnt"], "--models naive,segnt: unknown 'segnt'"),
        (["eval", "--checkpoint", "{tmp}/none.npz"], "--checkpoint {tmp}/none.npz: no such file"),
        (["eval", "--checkpoint", "{image}"], "not a readable .npz file"),
        (["predict", "--checkpoint", "{tmp}/none.npz", "{image}"], "--checkpoint {tmp}/none.npz: no such file"),
        (["predict", "--checkpoint", "{image}", "{tmp}/none.png"], "image {tmp}/none.png: no such file"),
        (["check", "--op", "conv3d"], "argument --op: invalid choice: 'conv3d'"),
        (["bench", "--device", "cudasim"], "use it with --quick"),
        (["train"], "the following arguments are required: --model"),
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(argv, named, folder, capsys):
    data, image = folder
    fill = {"tmp": str(data.parent), "data": str(data), "image": str(image)}
    line = _usage_error([a.format(**fill) for a in argv], capsys)
    assert named.format(**fill) in line


def test_eval_takes_no_train_size(capsys):  # it scores the test scenes and generates no training scenes
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--checkpoint", "c.npz", "--train-size", "8"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --train-size 8" in capsys.readouterr().err


def test_resume_from_a_damaged_or_foreign_checkpoint_is_a_usage_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_text("not a checkpoint")
    line = _usage_error(["train", "--model", "naive", "--out", str(run), "--resume", *TINY], capsys)
    assert f"checkpoint {run / 'checkpoint.npz'}: not a readable .npz file" in line
    assert (run / "checkpoint.npz").read_text() == "not a checkpoint"  # nothing overwritten
    assert main(["train", "--model", "naive", "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    line = _usage_error(["train", "--model", "segnet", "--out", str(run), "--resume", *TINY], capsys)
    assert "does not match the model" in line


def test_a_predicted_image_that_is_not_an_image_is_a_usage_error(tmp_path, capsys):
    assert main(["train", "--model", "naive", "--out", str(tmp_path / "run"), *TINY]) == 0
    capsys.readouterr()
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    line = _usage_error(["predict", "--checkpoint", str(tmp_path / "run" / "best.npz"), str(text),
                         "--device", "numpy", "--out", str(tmp_path / "pred")], capsys)
    assert "notes.png: cannot read the file as an image" in line


def test_the_cuda_device_without_cupy_names_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError, as where it is not installed
    monkeypatch.delitem(devices._DEVICES, "cuda", raising=False)
    line = _usage_error(["train", "--model", "naive", "--device", "cuda"], capsys)
    assert 'pip install -e ".[cuda]"' in line


def test_a_bug_still_shows_its_traceback(monkeypatch):
    """Only the user's input becomes a usage error: an error of the engine itself propagates."""

    def broken_fit(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr("minicv.cli.fit", broken_fit)
    with pytest.raises(ValueError, match="a bug"):
        main(["train", "--model", "naive", *TINY])


def test_usage_errors_print_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "minicv.cli", "train", "--model", "segnet", "--data",
                             str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"minicv train: error: --data {tmp_path / 'nowhere'}: no such folder (expected " \
        "'scenes' or a folder of images/ with masks/ or boxes.csv)\n"


def test_train_draws_its_predictions_for_a_localization_folder(tmp_path):
    """The pictures name the folder's own classes, not the built-in scenes' ones."""
    (tmp_path / "data" / "images").mkdir(parents=True)
    rows = ["file,class,x,y,w,h"] + [f"p{i}.png,{'cat' if i % 2 else 'dog'},2,3,8,9" for i in range(6)]
    for i in range(6):
        _photo(tmp_path / "data" / "images" / f"p{i}.png", 16, 16)
    (tmp_path / "data" / "boxes.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--model", "loc", "--data", str(tmp_path / "data"), "--classes", "dog,cat",
                 "--out", str(run), *TINY]) == 0
    assert Image.open(run / "localization.png").size[0] > 16 and (run / "curves_localization.png").exists()


def test_python_dash_m_minicv_is_the_command():
    result = subprocess.run([sys.executable, "-m", "minicv", "train", "--model", "nope"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "invalid choice: 'nope'" in result.stderr
