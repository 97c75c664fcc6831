"""The ``minicv`` command: demo, train, eval, predict, check, bench.

``minicv COMMAND --help`` shows each command's options and examples. A mistake in the command line or
in the files it names (a missing folder, a wrong --num-classes, an unknown device) is reported in one
line, ``minicv train: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image

import minicv
from minicv import optim
from minicv.allocator import reuse_freed_memory
from minicv.checkpoint import read_meta
from minicv.data import CLASS_NAMES, OBJECT_NAMES, DataLoader, LocalizationFolder, SceneDataset, SegmentationFolder
from minicv.data.folder import MAX_PIXELS, load_image
from minicv.demo import BEST_BY, SHOWN, predict_shown, write_pictures
from minicv.devices import DEFAULT_DEVICE, canonical_name, require_device
from minicv.errors import ArgumentError, CheckpointError, DeviceUnavailableError, TrainingDiverged
from minicv.exercises import command as exercises
from minicv.models import TASKS, build_model, check_image_size
from minicv.nn import Module
from minicv.ops import OPS
from minicv.precompile import compile_ahead
from minicv.train import LocalizationTask, SegmentationTask, evaluate, fit, make_task
from minicv.viz import to_uint8

# Each command's examples name the paths the ones before them write (train writes runs/<model>/).
EXAMPLES = {
    "demo": "examples:\n  minicv demo\n  minicv demo --out runs/demo --epochs 6 --device cuda",
    "train": (
        "examples:\n"
        "  minicv train --model segnet --epochs 5\n"
        "      writes runs/segnet/best.npz (the best epoch on validation scenes) and runs/segnet/checkpoint.npz\n"
        "      (the last epoch, to resume from)\n"
        "  minicv train --model segnet --epochs 5 --resume\n"
        "      after an interruption: continues from runs/segnet/checkpoint.npz\n"
        "  minicv train --model learned --data my_folder --num-classes 4 --out runs/my_folder\n"
        "      my_folder/images/*.png and my_folder/masks/*.png (class numbers 0 to 3)"
    ),
    "eval": "examples:\n  minicv train --model segnet --epochs 5\n  minicv eval --checkpoint runs/segnet/best.npz",
    "predict": (
        "examples:\n  minicv train --model segnet --epochs 5\n"
        "  minicv predict --checkpoint runs/segnet/best.npz photo.png --out predictions"
    ),
    "check": "examples:\n  minicv check\n  minicv check --device numba --op conv2d --dtype float64",
    "bench": "examples:\n  minicv bench --quick\n  minicv bench --device numba --op conv2d\n"
             "  minicv bench --isa native,avx2 --op train_step\n  minicv bench --breakdown segnet",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, ``minicv train: error: ...``, exit status 2 (argparse's format, without
    the usage summary above it: the message names the option, ``--help`` lists them)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class UsageError(Exception):
    """A mistake in the command line or in the files it names; ``main`` reports it as a usage error."""


def _number(kind: type, low: float, strict: bool) -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` above ``low`` (``strict``) or at least ``low``."""

    def parse(text: str) -> float:
        value = kind(text)  # ValueError: argparse says "invalid int value: 'x'"
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {'a positive' if strict else 'a non-negative'} "
                                             f"{'number' if kind is float else 'integer'}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT, COUNT, POSITIVE_FLOAT = _number(int, 0, True), _number(int, 0, False), _number(float, 0, True)


def _common(parser: argparse.ArgumentParser, out: str | None, seed: str | None, every_device: str | None) -> None:
    """--device (default: the library's DEFAULT_DEVICE, or ``every_device``: None, which the command reads
    as that), and --seed and --out where the command uses them (``None``: it does not)."""
    parser.add_argument("--device", default=None if every_device else DEFAULT_DEVICE,
                        help=f"numpy, numba (alias cpu), cudasim or cuda (default: {every_device or DEFAULT_DEVICE})")
    if seed is not None:
        parser.add_argument("--seed", type=COUNT, default=0, help=f"seed of {seed} (default: 0)")
    if out is not None:
        parser.add_argument("--out", default=out, help=f"output folder (default: {out})")


def _sub(subparsers, name: str, help_text: str, out: str | None,
         seed: str | None = "weights, data order and generated scenes",
         every_device: str | None = None) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(usage_error=parser.error)  # main reports a UsageError as this command's error
    _common(parser, out, seed, every_device)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minicv", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"minicv {minicv.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = _sub(sub, "demo", "train the four segmentation decoders and the localizer on built-in scenes", "runs/demo")
    demo.add_argument("--epochs", type=POSITIVE_INT, default=None,
                      help="epochs per model (default: per-model settings)")
    demo.add_argument("--train-size", type=POSITIVE_INT, default=2000, help="training scenes (default: 2000)")
    demo.add_argument("--test-size", type=POSITIVE_INT, default=300, help="held-out test scenes (default: 300)")
    demo.add_argument("--models", default=",".join(TASKS), help="comma-separated subset of " + ", ".join(TASKS))

    train = _sub(sub, "train", "train one model on built-in scenes or a folder of your own", "runs/<model>")
    train.add_argument("--model", required=True, choices=list(TASKS))
    _data_args(train)
    train.add_argument("--epochs", type=POSITIVE_INT, default=5, help="(default: 5)")
    train.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="(default: 32)")
    train.add_argument("--lr", type=POSITIVE_FLOAT, default=3e-3,
                       help="initial learning rate, cosine-annealed to 0 (default: 0.003)")
    train.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="(default: adam)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")

    ev = _sub(sub, "eval", "score a checkpoint on held-out scenes or a folder", None)
    ev.add_argument("--checkpoint", required=True)
    _data_args(ev, trains=False)

    predict = _sub(sub, "predict", "predict masks (or boxes) for image files", "predictions", seed=None)
    predict.add_argument("--checkpoint", required=True)
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    _max_pixels_arg(predict)

    # check's cases are fixed (their own seeds) and it writes nothing: no --seed, no --out
    check = _sub(sub, "check", "gradient-check and cross-check every kernel on every device present", None,
                 seed=None, every_device="every device present")
    check.add_argument("--op", default=None, choices=list(OPS), help="only this op (default: every op)")
    check.add_argument("--dtype", default=None, choices=["float32", "float64"], help="(default: both)")

    # Only the bench's options, a small module: the harness itself is imported when bench runs (cmd_bench).
    from minicv.bench.options import MALLOC_CHOICES, SELECTIONS, add_options

    bench = _sub(sub, "bench", "time kernels across devices and against PyTorch", "benchmarks/results",
                 seed="the random inputs", every_device="every device present; cudasim only with --quick")
    bench.add_argument("--op", default=None, choices=SELECTIONS,
                       help="only this op, the training steps (train_step) or the cold start (cold_start) "
                            "(default: every op), the cold start not with --quick")
    bench.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run: targets "
                       "are not judged)")
    bench.add_argument("--malloc", default="reuse", choices=MALLOC_CHOICES,
                       help="reuse: keep freed memory, so no call pays page faults (default); system: glibc's default")
    add_options(bench)

    exercises.add_parser(sub)
    return parser


def _data_args(parser: argparse.ArgumentParser, trains: bool = True) -> None:
    parser.add_argument(
        "--data", default="scenes", help="'scenes' (built-in) or a folder (images/ + masks/ or boxes.csv)"
    )
    parser.add_argument("--num-classes", type=POSITIVE_INT, default=None, help="classes of a segmentation folder")
    parser.add_argument("--classes", default=None, help="comma-separated object classes of a localization folder")
    parser.add_argument("--size", type=POSITIVE_INT, default=64, help="size of generated scenes (default: 64)")
    if trains:  # eval scores the test scenes only
        parser.add_argument("--train-size", type=POSITIVE_INT, default=2000, help="generated scenes (default: 2000)")
    parser.add_argument("--test-size", type=POSITIVE_INT, default=300, help="generated scenes (default: 300)")
    _max_pixels_arg(parser)


def _max_pixels_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels",
        type=POSITIVE_INT,
        default=MAX_PIXELS,
        help=f"refuse image files of more pixels than this, before decoding them (default: {MAX_PIXELS})",
    )


def _datasets(args: argparse.Namespace, task: str) -> tuple[list, list, int, tuple[str, ...]]:
    """(train items, test items, number of classes, class names) for a task; no generated training
    scenes for a command without --train-size (eval)."""
    if args.data == "scenes":
        names: tuple[str, ...] = CLASS_NAMES if task == "segmentation" else OBJECT_NAMES
        make = lambda split, n: _cached(SceneDataset(split, n, args.size, args.seed))  # noqa: E731
        train = make("train", args.train_size) if "train_size" in args else []
        return train, make("test", args.test_size), len(names), names
    root = Path(args.data)
    if task == "segmentation":
        if args.num_classes is None:
            raise UsageError("--num-classes is required with a segmentation folder")
        data = _cached(SegmentationFolder(root, args.num_classes, max_pixels=args.max_pixels))
        names = tuple(str(c) for c in range(args.num_classes))
    else:
        if args.classes is None:
            raise UsageError("--classes is required with a localization folder")
        names = tuple(name.strip() for name in args.classes.split(","))
        data = _cached(LocalizationFolder(root, names, max_pixels=args.max_pixels))
    split = max(1, len(data) // 10)  # the last tenth is held out
    return data[:-split], data[-split:], len(names), names


def _cached(dataset) -> list:
    return [dataset[i] for i in range(len(dataset))]


def _check_sizes(model, items: list, args: argparse.Namespace, name: str) -> None:
    """Refuse, before any work, images of a size the model cannot take (it would fail mid-run)."""
    for height, width in sorted({tuple(item["image"].shape[-2:]) for item in items}):
        try:
            check_image_size(model, height, width, f"--data {args.data} ({name})")
        except ArgumentError as err:
            raise UsageError(str(err)) from err


def _validation(args: argparse.Namespace, train_items: list) -> tuple[list, list]:
    """(training items, validation items) for choosing the best epoch: scenes of their own split, or the
    last tenth of a folder's training part; never the test items that ``minicv eval`` scores."""
    if args.data == "scenes":
        return train_items, _cached(SceneDataset("val", max(1, args.train_size // 10), args.size, args.seed))
    if len(train_items) < 2:
        raise UsageError(f"--data {args.data}: too few images to hold out validation and test images (at least "
                         "3 are needed)")
    held = max(1, len(train_items) // 10)
    return train_items[:-held], train_items[-held:]


@contextlib.contextmanager
def _reading_user_files() -> Iterator[None]:
    """Errors reading the files a user named (a data folder, a checkpoint, images) are usage errors:
    their messages name the file and what is wrong with it."""
    try:
        yield
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from err


def _optimizer(name: str, model, lr: float):
    return (
        optim.Adam(model.parameters(), lr=lr) if name == "adam" else optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    )


# ------------------------------------------------------------------------------------------ commands
def cmd_train(args: argparse.Namespace) -> int:
    task_name = TASKS[args.model]
    with _reading_user_files():
        train_items, test_items, num_classes, names = _datasets(args, task_name)
    train_items, validation_items = _validation(args, train_items)
    out = _out_folder(args)
    minicv.manual_seed(args.seed)
    size = train_items[0]["image"].shape[-2:]
    kwargs = {"image_size": tuple(size)} if task_name == "localization" else {}
    try:
        model = build_model(args.model, num_classes, **kwargs).to(args.device)
    except ValueError as err:  # ArgumentError among them: the model cannot take these classes or image sizes
        raise UsageError(f"--model {args.model}: {err}") from err
    _check_sizes(model, train_items + validation_items + test_items, args, args.model)
    config = {
        "model": args.model,
        "num_classes": num_classes,
        "classes": list(names),
        "kwargs": kwargs,
        "image_size": list(size),
    }
    optimizer = _optimizer(args.optimizer, model, args.lr)
    task = make_task(task_name, num_classes)
    if model.device.name == "numba":
        compile_ahead([args.model], (int(size[0]), int(size[1])), args.batch_size)  # a cold cache: two processes
    history = fit(
        model,
        task,
        DataLoader(train_items, args.batch_size, shuffle=True, seed=args.seed, flip=True),
        DataLoader(validation_items, 64),
        optimizer,
        args.epochs,
        out,
        resume=args.resume,
        desc=args.model,
        config=config,
        scheduler=optim.CosineAnnealingLR(optimizer, args.epochs),
        keep_best=BEST_BY[task_name],
    )
    # fit leaves the best epoch's weights in the model: the test scores minicv eval gives best.npz
    print(json.dumps(evaluate(model, task, DataLoader(test_items, 64)), indent=2))
    write_pictures(out, test_items[:SHOWN], {args.model: predict_shown(model, task, test_items)},
                   {args.model: history}, names)
    print(f"minicv train: pictures of the best epoch's predictions in {out}")
    print(f"minicv train: last epoch ({history[-1]['epoch']}) in {out / 'checkpoint.npz'}")
    if (out / "best.npz").exists():
        print(f"minicv train: best epoch ({read_meta(out / 'best.npz')['epoch']}, by validation "
              f"{BEST_BY[task_name]}) in {out / 'best.npz'}")
    return 0


def load_model(checkpoint: str, device: str):
    """Rebuild the model a checkpoint was trained as, with its weights, and its config."""
    from minicv.checkpoint import load_checkpoint, read_meta

    with _reading_user_files():  # the checkpoint's own errors name the file and the key
        config = read_meta(checkpoint).get("config")
        if not config:
            raise UsageError(f"--checkpoint {checkpoint}: has no model config (was it written by minicv train?)")
        _check_config(checkpoint, config)
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config["kwargs"].items()}
        try:
            model = build_model(config["model"], config["num_classes"], **kwargs)
        except (TypeError, ValueError) as err:  # an argument the model does not take, or a bad value
            raise ValueError(f"checkpoint {checkpoint}: meta key 'config.kwargs' does not build a "
                             f"{config['model']} model: {err}") from err
        load_checkpoint(checkpoint, model)
    return model.to(device), config


def _check_config(checkpoint: str, config: object) -> None:
    """The model config ``minicv train`` writes, or a ValueError naming the checkpoint and the key."""
    checks = {
        "model": (lambda v: v in TASKS, f"one of {', '.join(TASKS)}"),
        "num_classes": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive int"),
        "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of names"),
        "kwargs": (lambda v: isinstance(v, dict), "an object of constructor arguments"),
        "image_size": (lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(n, int) and n > 0 for n in v),
                       "[height, width]"),
    }
    if not isinstance(config, dict):
        raise ValueError(f"checkpoint {checkpoint}: meta key 'config' is not an object")
    for key, (ok, expected) in checks.items():
        if key not in config:
            raise ValueError(f"checkpoint {checkpoint}: meta key 'config.{key}' is missing")
        if not ok(config[key]):
            raise ValueError(f"checkpoint {checkpoint}: meta key 'config.{key}' is not {expected}: {config[key]!r}")
    if len(config["classes"]) != config["num_classes"]:
        raise ValueError(f"checkpoint {checkpoint}: meta key 'config.classes' names {len(config['classes'])} "
                         f"classes, but 'config.num_classes' is {config['num_classes']}")


def cmd_eval(args: argparse.Namespace) -> int:
    model, config = load_model(args.checkpoint, args.device)
    task_name = TASKS[config["model"]]
    with _reading_user_files():
        _, test_items, _, _ = _datasets(args, task_name)
    _check_sizes(model, test_items, args, config["model"])
    scores = evaluate(model, make_task(task_name, config["num_classes"]), DataLoader(test_items, 64))
    print(json.dumps(scores, indent=2))
    return 0


def output_names(images: Sequence[str]) -> list[str]:
    """The name each image's outputs start with: its stem ("a" for d1/a.png); where images share it,
    their file names ("a.png", "a.jpg"), then as many parent folders as tell them apart ("d1/a.png",
    "d2/a.png"). Names depend on the set of images, not their order, and differ in letter case too."""
    files = [Path(image).resolve() for image in images]
    # each path's components below its root (and its drive, without the colon), the file name last
    parts = {file: tuple(filter(None, [file.drive.replace(":", "")])) + file.parts[1:] for file in files}
    level = dict.fromkeys(files, 0)  # 0: the stem, k: the last k components

    def name(file: Path) -> str:
        return file.stem if level[file] == 0 else "/".join(parts[file][-level[file]:])

    bumped = True
    while bumped:
        bumped = False
        users = defaultdict(set)
        for file in level:
            users[name(file).casefold()].add(file)  # casefold: on a case-insensitive disk A.png is a.png
        for group in users.values():
            for file in group if len(group) > 1 else ():
                if level[file] < len(parts[file]):  # at the full path, files differ (in letter case only)
                    level[file] += 1
                    bumped = True
    return [name(file) for file in files]


def cmd_predict(args: argparse.Namespace) -> int:
    from minicv import viz

    model, config = load_model(args.checkpoint, args.device)
    task = make_task(TASKS[config["model"]], config["num_classes"])
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if task.name == "segmentation":
        viz.legend(config["classes"]).save(out / "legend.png")
        print(f"class colours of the masks: {out / 'legend.png'}")
    with minicv.no_grad():
        for path, name in zip(args.images, output_names(args.images)):
            with _reading_user_files():
                image = load_image(path, args.max_pixels)
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(task, SegmentationTask):
                mask = predict_mask(task, model, image)
                mask_path, overlay_path = out / f"{name}_mask.png", out / f"{name}_overlay.png"
                viz.palette_mask(mask, len(config["classes"])).save(mask_path)
                Image.fromarray(viz.overlay(image, mask)).save(overlay_path)
                print(f"{path}: mask {mask_path}, overlay {overlay_path}")
            else:
                label, box = predict_box(task, model, image, config["image_size"])
                class_name, box_path = config["classes"][label], out / f"{name}_box.png"
                viz.draw_boxes(image, [(box, class_name, (255, 40, 40))]).save(box_path)
                print(f"{path}: {class_name} at (x, y, w, h) = {np.round(box, 1).tolist()}, {box_path}")
    return 0


def predict_mask(task: SegmentationTask, model: Module, image: np.ndarray) -> np.ndarray:
    """The mask of an image of any size: padded (edge values) to a size the model takes (a multiple of
    its ``size_multiple``), predicted, cropped back."""
    height, width = image.shape[-2:]
    multiple = model.size_multiple
    padded = np.pad(image, ((0, 0), (0, -height % multiple), (0, -width % multiple)), mode="edge")
    return task.predict(model, padded[None])[0, :height, :width]


def predict_box(task: LocalizationTask, model: Module, image: np.ndarray,
                size: Sequence[int]) -> tuple[int, np.ndarray]:
    """Class and pixel box of an image of any size: resized to the size the model was trained at, the
    box scaled back."""
    height, width = image.shape[-2:]
    picture = Image.fromarray(to_uint8(image)).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    resized = np.asarray(picture, dtype=np.float32).transpose(2, 0, 1) / 255
    labels, boxes = task.predict(model, resized[None])
    return int(labels[0]), boxes[0] * np.array([width / size[1], height / size[0]] * 2)


def cmd_demo(args: argparse.Namespace) -> int:
    from minicv.demo import run_demo

    run_demo(
        out=Path(args.out),
        device=args.device,
        seed=args.seed,
        epochs=args.epochs,
        train_size=args.train_size,
        test_size=args.test_size,
        models=args.models.split(","),
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from minicv.check import run_check

    return run_check(device=args.device, op=args.op, dtype=args.dtype)


def cmd_bench(args: argparse.Namespace) -> int:
    from minicv.bench.options import CUDASIM_NEEDS_QUICK
    from minicv.bench.run import run_from_args

    if args.device is not None and canonical_name(args.device) == "cudasim" and not args.quick:
        raise UsageError(f"--device cudasim: {CUDASIM_NEEDS_QUICK}")
    run_from_args(args)
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "check": cmd_check,
    "bench": cmd_bench,
    "exercises": exercises.run,
}


def _out_folder(args: argparse.Namespace) -> Path:
    """--out, with train's ``<model>`` filled in."""
    return Path(args.out.replace("<model>", getattr(args, "model", "<model>")))


def _check_args(args: argparse.Namespace) -> None:
    """The mistakes found before any work starts: a device this machine lacks, files or folders that
    do not exist, an --out that is a file, an unknown model in --models."""
    if getattr(args, "device", None) is not None:
        try:
            require_device(args.device)
        except (ArgumentError, DeviceUnavailableError) as err:
            raise UsageError(f"--device {args.device}: {err}") from err
    if getattr(args, "data", "scenes") != "scenes" and not Path(args.data).is_dir():
        raise UsageError(f"--data {args.data}: no such folder (expected 'scenes' or a folder of images/ with "
                         "masks/ or boxes.csv)")
    for option, name in [("--checkpoint", getattr(args, "checkpoint", None))] + [
        ("image", image) for image in getattr(args, "images", [])
    ]:
        if name is not None and not Path(name).is_file():
            raise UsageError(f"{option} {name}: no such file")
    if getattr(args, "out", None) is not None:
        out = _out_folder(args)
        existing = next(p for p in (out, *out.parents) if p.exists())  # "." or "/" at the latest
        if not existing.is_dir():
            raise UsageError(f"--out {out}: {existing} is a file, not a folder")
    if args.command == "demo":
        unknown = [m for m in args.models.split(",") if m not in TASKS]
        if unknown:
            raise UsageError(f"--models {args.models}: unknown {', '.join(map(repr, unknown))}; expected a "
                             f"comma-separated subset of {', '.join(TASKS)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    began = time.perf_counter()
    if args.command != "bench":  # an application's call (minicv/allocator.py); bench has --malloc for it
        reuse_freed_memory()
    try:
        _check_args(args)
        code = COMMANDS[args.command](args)
    except (UsageError, CheckpointError) as err:  # a file the user named (--resume's checkpoint among them)
        args.usage_error(str(err))
    except TrainingDiverged as err:  # a result, not a bug: one line, no traceback
        print(f"minicv {args.command}: {err}", file=sys.stderr)
        return 1
    print(f"minicv {args.command}: done in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
