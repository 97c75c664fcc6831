"""minicv exercises: init writes stubs graded "not started"; the spec copied in passes; classic mistakes
are named; SegNet trains on the learner's kernels."""

import doctest
import inspect
import json
import shutil
from pathlib import Path

import minicv.kernels.numpy as spec
import nbformat
import numpy as np
import pytest
from minicv.kernels import KERNEL_TABLE

from minicv.cli import main
from minicv.devices import get_device
from minicv.exercises.contracts import CONTRACTS, EXERCISES, LECTURE_ORDER
from minicv.exercises.unlock import kernels_needed

SPEC_DIR = Path(spec.__file__).parent


def _init(folder: Path) -> Path:
    assert main(["exercises", "init", str(folder)]) == 0
    return folder


def _with_spec(folder: Path) -> Path:
    _init(folder)
    for path in SPEC_DIR.glob("*.py"):  # the spec copied over the stubs, its __init__.py included
        shutil.copy(path, folder / path.name)
    return folder


def _grade(capsys, folder: Path, *options: str) -> tuple[int, str]:
    code = main(["exercises", "grade", str(folder), *options])
    out = capsys.readouterr().out
    assert "Traceback" not in out
    return code, out


def _rows(out: str) -> dict[str, str]:
    """kernel -> its verdict, from the grader's table."""
    rows = {}
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1] in KERNEL_TABLE:
            rows[parts[1]] = parts[2]
    return rows


def test_the_exercises_cover_the_kernel_table_once_in_the_lectures_order():
    assert sorted(LECTURE_ORDER) == sorted(KERNEL_TABLE)
    assert LECTURE_ORDER[:2] == ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward")


def test_the_worked_examples_of_the_contracts_hold_for_the_spec():
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    globs = {"np": np, **{k: getattr(spec, k) for k in KERNEL_TABLE}}
    for kernel, text in CONTRACTS.items():
        runner.run(doctest.DocTestParser().get_doctest(inspect.cleandoc(text), dict(globs), kernel, None, 0))
    results = runner.summarize(verbose=False)
    assert results.failed == 0 and results.attempted >= len(KERNEL_TABLE)


def test_init_writes_stubs_with_the_specs_signatures_and_never_overwrites(tmp_path, capsys):
    folder = _init(tmp_path / "mine")
    first = capsys.readouterr().out
    from minicv.exercises import load_kernels
    from minicv.exercises.tracks import NUMPY

    learner = NUMPY.load(folder)
    assert sorted(learner.functions) == sorted(KERNEL_TABLE)
    for kernel, function in learner.functions.items():
        ours, theirs = inspect.signature(function), inspect.signature(getattr(spec, kernel))
        assert list(ours.parameters) == list(theirs.parameters)
        assert [p.default for p in ours.parameters.values()] == [p.default for p in theirs.parameters.values()]
        assert inspect.getdoc(function) == inspect.cleandoc(CONTRACTS[kernel])
        with pytest.raises(NotImplementedError, match=kernel):
            getattr(load_kernels(folder), kernel)(*[None] * len(ours.parameters))
    for exercise in EXERCISES:
        path = folder / "notebooks" / f"{exercise.number:02d}_{exercise.module}.ipynb"
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        text = json.dumps(book)
        assert "TODO" in text and "Inline question" in text and "<details>" in text
    assert (folder / "README.md").read_text().count("minicv exercises grade") == 1
    assert "kept" not in first

    (folder / "conv.py").write_text("# my work\n")
    assert main(["exercises", "init", str(folder)]) == 0
    second = capsys.readouterr().out
    assert "wrote" not in second and f"kept {folder / 'conv.py'}" in second
    assert (folder / "conv.py").read_text() == "# my work\n"


def test_a_fresh_init_grades_every_kernel_not_started(tmp_path, capsys):
    code, out = _grade(capsys, _init(tmp_path / "mine"), "--no-timing")
    assert code == 1
    assert _rows(out) == dict.fromkeys(LECTURE_ORDER, "not started")
    assert f"0 of {len(KERNEL_TABLE)} kernels pass" in out


def test_the_spec_copied_over_the_stubs_passes_every_kernel(tmp_path, capsys):
    code, out = _grade(capsys, _with_spec(tmp_path / "mine"))
    assert code == 0, out
    rows = _rows(out)
    assert list(rows) == list(LECTURE_ORDER)
    assert all(verdict.startswith("passing") for verdict in rows.values()), out
    assert "Unlocked: naive, nearest, segnet, learned, loc" in out


# Each mistake, applied to the spec, and the words of the hint the grader must give for it.
MISTAKES = {
    "flat indices over the window": (
        "pooling.py", "max_pool2d_forward",
        "return y, ((top + i * dh) * w + left + j * dw).astype(np.int64)", "return y, (i * kw + j).astype(np.int64)",
        "your indices count inside the window",
    ),
    "ceil_mode's last window ignored": (
        "pooling.py", "max_pool2d_forward", "extra_end = (max(0,", "extra_end = (0, 0) if True else (max(0,",
        "with ceil_mode the output has 5x4 windows",
    ),
    "output_padding ignored": (
        "conv.py", "conv2d_backward_input", "    n, c_in, h, wd = x_shape\n",
        "    n, c_in, h, wd = x_shape\n    h, wd = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in "
        "zip(gy.shape[2:], stride, padding, dilation, w.shape[2:])]\n",
        "x_shape has rows/columns no window reads",
    ),
    "softmax without subtracting the max": (
        "loss.py", "softmax_cross_entropy_forward", "shifted = x - largest[:, None]", "shifted = x",
        "exp overflowed on large logits",
    ),
    "max-pool backward overwrites overlapping windows": (
        "pooling.py", "unpool_scatter", "np.add.at(out, offsets, flat_values)", "out[offsets] = flat_values",
        "ADD the values at a repeated index",
    ),
    "ignore_index counted": (
        "loss.py", "softmax_cross_entropy_forward",
        "return np.where(valid, loss, 0), np.stack", "return loss, np.stack",
        "must get loss 0 and gradient 0",
    ),
    "ties to the last maximum": (
        "pooling.py", "max_pool2d_forward", "first_max = np.argmax(taps == y[..., None], axis=-1)",
        "first_max = kh * kw - 1 - np.argmax(taps[..., ::-1] == y[..., None], axis=-1)",
        "the FIRST in row-major scan order wins",
    ),
    "the wrong dtype": (
        "upsample.py", "upsample_nearest_forward",
        "return np.ascontiguousarray(x[:, :, src_h[:, None], src_w[None, :]])",
        "return np.ascontiguousarray(x[:, :, src_h[:, None], src_w[None, :]]).astype(np.float64)",
        "is float64, expected float32 (the input's dtype)",
    ),
    "writing into an argument": (
        "upsample.py", "upsample_nearest_backward", "    return _gather_adjoint(_gather_adjoint(gy",
        "    gy[...] = 0\n    return _gather_adjoint(_gather_adjoint(gy", "wrote into its argument `gy`",
    ),
    "an exception in the learner's code": (
        "conv.py", "conv2d_forward",
        "    n, _, h, wd = x.shape\n", "    n, _, h, wd = x.shape\n    raise ValueError('oops')\n",
        "conv.py, line {line}: ValueError: oops",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_classic_mistake_gets_its_hint(tmp_path, capsys, mistake):
    file, kernel, right, wrong, words = MISTAKES[mistake]
    folder = _with_spec(tmp_path / "mine")
    text = (folder / file).read_text()
    assert right in text
    text = text.replace(right, wrong)
    (folder / file).write_text(text)
    if "{line}" in words:  # the line of the learner's raise, wherever the spec's code puts it
        words = words.format(line=next(n for n, line in enumerate(text.splitlines(), 1) if "oops" in line))
    code, out = _grade(capsys, folder, "--only", kernel, "--no-timing")
    assert code == 1
    assert _rows(out)[kernel].startswith("FAILING")
    assert words in " ".join(out.split()), out


def test_a_file_that_does_not_import_fails_only_its_kernels(tmp_path, capsys):
    folder = _init(tmp_path / "mine")
    (folder / "loss.py").write_text("def softmax_cross_entropy_forward(:\n")
    code, out = _grade(capsys, folder, "--no-timing")
    rows = _rows(out)
    assert code == 1
    assert rows["softmax_cross_entropy_forward"] == rows["softmax_cross_entropy_backward"] == "FAILING (import)"
    assert "loss.py, line 1: SyntaxError" in out
    assert rows["conv2d_forward"] == "not started"


def test_segnet_needs_conv_batch_norm_pool_unpool_and_cross_entropy():
    assert kernels_needed("segnet") == {
        "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "batch_norm_forward",
        "batch_norm_backward", "max_pool2d_forward", "unpool_scatter", "unpool_gather",
        "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    }


TRAIN = ["--model", "segnet", "--epochs", "1", "--train-size", "4", "--test-size", "2", "--size", "16",
         "--batch-size", "4"]


def test_segnet_trains_on_the_learners_kernels(tmp_path):
    folder = _with_spec(tmp_path / "mine")
    assert main(["exercises", "train", str(folder), *TRAIN, "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "checkpoint.npz").exists()
    assert get_device("student").kernels.conv2d_forward.__module__.startswith("minicv_learner_")


def test_training_on_stubs_names_the_kernel_not_written(tmp_path, capsys):
    folder = _init(tmp_path / "mine")
    assert main(["exercises", "train", str(folder), *TRAIN, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "conv.py, line" in err and "conv2d_forward: not written yet" in err and "Traceback" not in err


def test_the_notebooks_code_runs_on_the_spec_and_prints_the_expected_examples(tmp_path, monkeypatch, capsys):
    import minicv.exercises

    folder = _with_spec(tmp_path / "mine")
    capsys.readouterr()
    graded = []
    monkeypatch.setattr(minicv.exercises, "grade", lambda *args, **kwargs: graded.append(kwargs.get("only")))
    monkeypatch.chdir(folder / "notebooks")
    for exercise in EXERCISES:
        book = nbformat.read(f"{exercise.number:02d}_{exercise.module}.ipynb", as_version=4)
        namespace = {}
        for cell in book.cells:
            if cell.cell_type == "code":
                exec(cell.source, namespace)  # noqa: S102 (the notebook's own cells)
                lines = cell.source.splitlines()
                expected = [line.split("# expected: ")[1] for line in lines if "# expected: " in line]
                assert capsys.readouterr().out.splitlines() == expected
    assert graded == [only for exercise in EXERCISES for only in (*exercise.kernels, None)]


@pytest.mark.parametrize("stage", ["against PyTorch", "gradcheck"])
def test_the_engine_stages_name_a_kernel_that_disagrees(tmp_path, stage):
    from minicv.exercises.grader import FAILING, Grader
    from minicv.exercises.tracks import NUMPY

    grader = Grader.for_folder(NUMPY, NUMPY.load(_with_spec(tmp_path / "mine")), timing=False)
    cases = list(dict.fromkeys(c.case for c in grader.calls if c.kernel == "conv2d_forward" and not c.case.timing))
    doubled = lambda *args: 2 * spec.conv2d_forward(*args)  # noqa: E731
    row = (grader._against_torch if stage == "against PyTorch" else grader._gradcheck)("conv2d_forward", doubled, cases)
    assert row.status == FAILING and row.stage == stage
    assert "case 'conv2d 3x3 padding 1'" in row.detail
