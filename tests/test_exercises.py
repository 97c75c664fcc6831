"""minicv exercises: init writes stubs graded "not started"; the spec copied in passes; classic mistakes
are named; SegNet trains on the learner's kernels."""

import doctest
import inspect
import json
import shutil
from pathlib import Path

import minicv.kernels.cuda.launch as cuda_launch
import minicv.kernels.numba as numba_kernels
import minicv.kernels.numpy as spec
import nbformat
import numpy as np
import pytest

from minicv.cli import main
from minicv.devices import get_device
from minicv.exercises.contracts import CONTRACTS, EXERCISES, LECTURE_ORDER
from minicv.exercises.unlock import kernels_needed
from minicv.ops import kernel_table

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
        if len(parts) == 3 and parts[0].isdigit() and parts[1] in kernel_table():
            rows[parts[1]] = parts[2]
    return rows


def test_the_exercises_cover_the_kernel_table_once_in_the_lectures_order():
    assert sorted(LECTURE_ORDER) == sorted(kernel_table())
    assert LECTURE_ORDER[:2] == ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward")


def test_the_worked_examples_of_the_contracts_hold_for_the_spec():
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    globs = {"np": np, **{k: getattr(spec, k) for k in kernel_table()}}
    for kernel, text in CONTRACTS.items():
        runner.run(doctest.DocTestParser().get_doctest(inspect.cleandoc(text), dict(globs), kernel, None, 0))
    results = runner.summarize(verbose=False)
    assert results.failed == 0 and results.attempted >= len(kernel_table())


def test_init_writes_stubs_with_the_specs_signatures_and_never_overwrites(tmp_path, capsys):
    folder = _init(tmp_path / "mine")
    first = capsys.readouterr().out
    from minicv.exercises import load_kernels
    from minicv.exercises.tracks import NUMPY

    learner = NUMPY.load(folder)
    assert sorted(learner.functions) == sorted(kernel_table())
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
    assert f"0 of {len(kernel_table())} kernels pass" in out


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
    assert (tmp_path / "run" / "checkpoint.npz").exists() and (tmp_path / "run" / "segmentation.png").exists()
    assert get_device("student").kernels.conv2d_forward.__module__.startswith("minicv_learner_")


def test_training_on_stubs_names_the_kernel_not_written(tmp_path, capsys):
    folder = _init(tmp_path / "mine")
    assert main(["exercises", "train", str(folder), *TRAIN, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "conv.py, line" in err and "conv2d_forward: not written yet" in err and "Traceback" not in err


@pytest.mark.parametrize("track", ["numpy", "numba", "cuda"])
def test_the_notebooks_code_runs_on_the_tracks_kernels_and_prints_the_expected_examples(tmp_path, monkeypatch,
                                                                                         capsys, track):
    # Every code cell of every notebook, on the spec (NumPy track) or the project's own kernels of the track
    # copied over the stubs (the CUDA track's on cudasim, without a GPU): the worked examples must hold.
    import minicv.exercises

    folder = _with_spec(tmp_path / "mine") if track == "numpy" else _with_project_kernels(tmp_path / "mine", track)
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


# ---- the Numba and CUDA tracks ---------------------------------------------------------------------------

NUMBA_DIR = Path(numba_kernels.__file__).parent
CUDA_DIR = Path(cuda_launch.__file__).parent


def _init_track(folder: Path, track: str) -> Path:
    assert main(["exercises", "init", str(folder), "--track", track]) == 0
    return folder


def _with_project_kernels(folder: Path, track: str) -> Path:
    """The project's own kernels of the track copied over the stubs (all its files, helpers included)."""
    _init_track(folder, track)
    for path in NUMBA_DIR.glob("*.py") if track == "numba" else [*CUDA_DIR.glob("*.cu"), *CUDA_DIR.glob("*.cuh")]:
        shutil.copy(path, folder / path.name)
    return folder


def _mutate(path: Path, right: str, wrong: str) -> int:
    """Replace ``right`` by ``wrong`` in the learner's file; the line number of the change."""
    text = path.read_text()
    assert text.count(right) == 1, right
    path.write_text(text.replace(right, wrong))
    return text[: text.index(right)].count("\n") + 1


@pytest.mark.parametrize("track", ["numba", "cuda"])
def test_a_fresh_init_of_a_track_grades_every_kernel_not_started(tmp_path, capsys, track):
    folder = _init_track(tmp_path / "mine", track)
    assert "wrote" in capsys.readouterr().out
    code, out = _grade(capsys, folder, "--no-timing")  # the track init recorded in the folder
    assert code == 1
    assert f"({track} track" in out
    assert _rows(out) == dict.fromkeys(LECTURE_ORDER, "not started")


def test_the_numba_stubs_have_the_specs_signatures_and_contracts(tmp_path):
    from minicv.exercises.tracks import NUMBA

    learner = NUMBA.load(_init_track(tmp_path / "mine", "numba"))
    assert sorted(learner.functions) == sorted(kernel_table())
    for kernel, function in learner.functions.items():
        assert list(inspect.signature(function).parameters) == list(inspect.signature(getattr(spec, kernel)).parameters)
        assert inspect.getdoc(function) == inspect.cleandoc(CONTRACTS[kernel])
    assert "from numba import njit" in (tmp_path / "mine" / "conv.py").read_text()


def test_the_cuda_stubs_have_the_project_kernels_names_and_parameters(tmp_path):
    from minicv.exercises.cuda import _KERNEL, CUDA_FILES, NOT_STARTED

    folder = _init_track(tmp_path / "mine", "cuda")
    for file in CUDA_FILES.values():
        ours, theirs = ((d / file).read_text() for d in (folder, CUDA_DIR))
        kernels = [k.group(2, 3, 4) for k in _KERNEL.finditer(theirs)]
        assert [k.group(2, 3, 4) for k in _KERNEL.finditer(ours)] == kernels
        assert ours.count(f"    // {NOT_STARTED}\n") == len(kernels)
    assert (folder / "common.cuh").read_text() == (CUDA_DIR / "common.cuh").read_text()


def test_a_cuda_notebook_names_the_kernels_of_its_file_and_needs_no_gpu(tmp_path):
    from minicv.exercises.cuda import _KERNEL, CUDA_FILES

    folder = _init_track(tmp_path / "mine", "cuda")
    for exercise in EXERCISES:
        file = CUDA_FILES[exercise.module]
        book = nbformat.read(folder / "notebooks" / f"{exercise.number:02d}_{exercise.module}.ipynb", as_version=4)
        intro = book.cells[0].source
        assert all(k[3] in intro for k in _KERNEL.finditer((folder / file).read_text())) and "no GPU" in intro
        todos = [cell.source.splitlines()[0] for cell in book.cells if "# TODO" in cell.source]
        assert todos == [f"# TODO: write the kernels of {file} that {k} launches, then check the worked example:"
                         for k in exercise.kernels]


@pytest.mark.parametrize("track", ["numpy", "numba", "cuda"])
def test_the_learners_readme_counts_the_kernels_and_its_commands_parse(tmp_path, track):
    import re
    import shlex

    from minicv.cli import build_parser

    folder = _init_track(tmp_path / "mine", track)
    text = (folder / "README.md").read_text()
    assert f"runs on {len(kernel_table())} small kernels" in text
    commands = [shlex.split(c) for c in re.findall(r"`(minicv [^`]*)`", text)]
    assert [c[1:3] for c in commands] == [["exercises", "grade"], ["exercises", "train"]]
    for command in commands:
        args = build_parser().parse_args(command[1:])
        assert args.folder == str(folder)
    build_parser().parse_args(["train", *args.train_args, "--device", "student"])  # what `train` runs


def test_a_folder_holds_one_track(tmp_path):
    folder = _init_track(tmp_path / "mine", "numba")
    with pytest.raises(SystemExit, match="holds the numba track"):
        main(["exercises", "init", str(folder), "--track", "cuda"])


def test_the_numba_track_passes_with_the_projects_kernels_and_fails_a_mutated_one(tmp_path, capsys):
    folder = _with_project_kernels(tmp_path / "mine", "numba")
    code, out = _grade(capsys, folder, "--only", "upsample_nearest_backward", "--no-timing")
    assert code == 0 and _rows(out) == {"upsample_nearest_backward": "passing"}, out
    _mutate(folder / "upsample.py", "row[src_w[j]] += source[j]", "row[src_w[j]] = source[j]")
    code, out = _grade(capsys, folder, "--only", "upsample_nearest_backward", "--no-timing")
    assert code == 1 and _rows(out) == {"upsample_nearest_backward": "FAILING (against the spec)"}, out
    assert "first wrong element" in out


def test_a_numba_compile_error_is_one_line_with_the_learners_file_and_line(tmp_path, capsys):
    folder = _with_project_kernels(tmp_path / "mine", "numba")
    line = _mutate(folder / "upsample.py", "row[src_w[j]] += source[j]", 'row[src_w[j]] += source[j] + "s"')
    code, out = _grade(capsys, folder, "--only", "upsample_nearest_backward", "--no-timing")
    assert code == 1 and _rows(out) == {"upsample_nearest_backward": "FAILING (compile)"}, out
    message = " ".join(out.split())
    assert f"upsample.py, line {line}: Numba could not compile it: No implementation of function" in message
    assert "candidate" not in message and "During:" not in message  # Numba's pages are cut to their point


def test_the_cuda_track_passes_with_the_projects_kernels_and_fails_a_mutated_one(tmp_path, capsys):
    folder = _with_project_kernels(tmp_path / "mine", "cuda")
    code, out = _grade(capsys, folder, "--no-timing")
    assert code == 0, out
    assert all(verdict == "passing" for verdict in _rows(out).values()) and len(_rows(out)) == len(kernel_table()), out
    _mutate(folder / "pool.cu", "if (value > best || isnan(value))", "if (value < best || isnan(value))")
    code, out = _grade(capsys, folder, "--only", "max_pool2d_forward", "--no-timing")
    assert code == 1 and _rows(out) == {"max_pool2d_forward": "FAILING (against the spec)"}, out


def test_a_cuda_compile_error_is_one_line_and_fails_only_its_files_kernels(tmp_path, capsys):
    folder = _init_track(tmp_path / "mine", "cuda")
    line = _mutate(folder / "upsample.cu", "T* __restrict__ y,\n", "T* __restrict__ y, oops,\n")
    code, out = _grade(capsys, folder, "--no-timing")
    rows = _rows(out)
    assert code == 1
    assert rows["upsample_nearest_forward"] == rows["upsample_nearest_backward"] == "FAILING (compile)"
    assert f"upsample.cu, line {line}: g++ could not compile it:" in out and "oops" in out
    assert rows["conv2d_forward"] == "not started"


# A kernel of the learner's own: thread 0 of each block stages src_w in shared memory for the others.
STAGED_UPSAMPLE = r"""
template <typename T>
__global__ void upsample_nearest_forward_kernel(const T* __restrict__ x, const long long* __restrict__ src_h,
                                                const long long* __restrict__ src_w, T* __restrict__ y,
                                                long long count, int H, int W, int H_out, int W_out) {
    __shared__ long long columns[1024];
    if (threadIdx.x == 0)
        for (int j = 0; j < W_out; ++j) columns[j] = src_w[j];
    __syncthreads();
    GRID_STRIDE_LOOP(e, count) {
        const int j = e % W_out, i = e / W_out % H_out;
        y[e] = x[e / (static_cast<long long>(H_out) * W_out) * H * W + src_h[i] * W + columns[j]];
    }
}
"""


def test_a_missing_barrier_passes_in_order_fails_in_reverse_and_gets_its_hint(tmp_path, capsys):
    # conv.cu, the project's one kernel with shared memory, fails in both orders without either of its
    # barriers (every thread reads what threads before AND after it load), so a kernel of this shape is
    # where the forward order hides the race: thread 0 writes, every later thread reads.
    folder = _with_project_kernels(tmp_path / "mine", "cuda")
    source = (folder / "upsample.cu").read_text()
    start, end = source.index("// y[plane, i, j]"), source.index("// gx[plane, h, w]")
    (folder / "upsample.cu").write_text(source[:start] + STAGED_UPSAMPLE + source[end:])
    code, out = _grade(capsys, folder, "--only", "upsample_nearest_forward", "--no-timing")
    assert code == 0, out
    _mutate(folder / "upsample.cu", "    __syncthreads();\n", "")
    code, out = _grade(capsys, folder, "--only", "upsample_nearest_forward", "--no-timing")
    assert code == 1 and _rows(out) == {"upsample_nearest_forward": "FAILING (cudasim, threads in reverse order)"}
    from minicv.exercises.hints import MISSING_BARRIER

    assert MISSING_BARRIER in " ".join(out.split())
