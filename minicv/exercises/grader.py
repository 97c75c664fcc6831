"""``minicv exercises grade DIR``: grade a learner's kernels one by one, in the lecture's order.

Each kernel goes through four stages and stops at the first that fails:

1. its own calls: every call the engine makes on the grading cases (``cases.py``), replayed on the
   learner's kernel and on the spec: the type, shape and dtype of each output, then its values;
2. PyTorch (when importable): the cases through the engine in float64, with the learner's kernel swapped
   into the spec's table, against ``torch.nn.functional``;
3. gradcheck: ``minicv.gradcheck`` of those ops in float64 (central differences);
4. timing: the learner's kernel against the spec's on a larger call (best of a few runs), where the
   track's times mean something (not on cudasim).

A track may run the kernels in more ways than one (the CUDA track: cudasim's reverse thread order, a
GPU): once stages 1-3 pass, the kernel's own calls are graded again in each, and the first that fails
is the row, with that way's hint.

A stub's NotImplementedError means "not started"; any other exception in the learner's code is shown
as their file, line and message, never as a traceback.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from minicv.devices import Device
from minicv.exercises.cases import KernelCall, inputs, record, run_op, run_torch
from minicv.exercises.hints import GENERAL_HINTS, Failure, hint_for
from minicv.exercises.tracks import LearnerError, LearnerTable, Track, mixed_table
from minicv.gradcheck import GradcheckError, gradcheck
from minicv.ops import Case
from minicv.tensor import Tensor

NOT_STARTED, FAILING, PASSING, FASTER = "not started", "failing", "passing", "passing and faster than the spec"
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}  # of the largest magnitude of the expected output
TORCH_TOLERANCE = 1e-8  # float64, against PyTorch's float64
OUTPUT_NAMES = {
    "max_pool2d_forward": ("y", "indices"),
    "softmax_cross_entropy_forward": ("loss", "stats"),
    "conv2d_forward": ("y",),
    "upsample_nearest_forward": ("y",),
    "unpool_scatter": ("out",),
    "unpool_gather": ("out",),
    "conv2d_backward_weight": ("gw",),
    "batch_norm_forward": ("y", "mean", "var"),
    "batch_norm_backward": ("gx", "gweight", "gbias"),
}
TIMING_RUNS = 5  # best of: the spec and the learner alternate, so a busy machine slows both
FASTER_MARGIN = 1.1  # "faster than the spec" only beyond timing noise


@dataclass
class Row:
    """The grade of one kernel."""

    kernel: str
    status: str
    stage: str = ""  # the stage that failed
    detail: str = ""  # what is wrong, and where
    hint: str = ""
    speedup: float | None = None  # the spec's time over the learner's

    @property
    def passed(self) -> bool:
        return self.status in (PASSING, FASTER)


@dataclass
class Grader:
    track: Track
    learner: LearnerTable
    calls: list[KernelCall]
    torch_available: bool
    timing: bool = True

    @classmethod
    def for_folder(cls, track: Track, learner: LearnerTable, timing: bool = True) -> Grader:
        try:
            import torch  # noqa: F401 (only whether it imports)
        except ImportError:
            torch_available = False
        else:
            torch_available = True
        return cls(track, learner, record(track.spec_table()), torch_available, timing)

    def grade(self, kernel: str) -> Row:
        if kernel not in self.learner.functions:
            error = self.learner.errors.get(kernel, LearnerError("not written"))
            stage = "compile" if error.compiling else "import"
            return Row(kernel, NOT_STARTED if error.not_started else FAILING, stage, error.message)
        function = self.learner.functions[kernel]
        calls = [c for c in self.calls if c.kernel == kernel and not c.graded.timing]
        row = self._own_calls(kernel, function, calls)
        if row is None and self.torch_available:
            row = self._against_torch(kernel, function, [c for c in _cases_of(calls) if c.torch])
        if row is None:
            row = self._gradcheck(kernel, function, [c for c in _cases_of(calls) if c.smooth])
        for run in self.learner.runs:
            if row is None and (row := self._own_calls(kernel, run.functions[kernel], calls)) is not None:
                row.stage, row.hint = run.label, run.hint or row.hint
        if row is None:
            row = Row(kernel, PASSING)
            if self.timing and self.track.timed:
                row.speedup = self._time(kernel, function)
                row.status = FASTER if row.speedup > FASTER_MARGIN else PASSING
        return row

    # ------------------------------------------------------------------ stage 1: the kernel's own calls
    def _own_calls(self, kernel: str, function: Callable[..., Any], calls: list[KernelCall]) -> Row | None:
        spec = getattr(self.track.spec_table(), kernel)
        failures: list[tuple[KernelCall, Failure, str]] = []
        for number, call in enumerate(calls):
            args, kwargs = call.copied()
            expected = _as_tuple(spec(*args, **kwargs))
            args, kwargs = call.copied()
            try:
                with np.errstate(all="ignore"):  # an overflow is graded (and hinted at), not warned about
                    got = function(*args, **kwargs)
            except Exception as err:  # the learner's code may raise anything: report their frame
                error = self.track.error(err, self.learner.folder)
                if error.not_started and number == 0:
                    return Row(kernel, NOT_STARTED)
                if error.compiling:  # one message, not a hint about the kernel's maths
                    return Row(kernel, FAILING, "compile", error.message)
                failures.append((call, Failure(kernel, call.args, call.kwargs, expected, None), error.message))
                continue
            problem = _modified_argument(spec, call, args, kwargs) or _compare(kernel, expected, got)
            if problem is not None:
                failure, message = problem
                failure.args, failure.kwargs = call.args, call.kwargs
                failures.append((call, failure, message))
        if not failures:
            return None
        for _, failure, _ in failures:
            failure.others_pass = len(failures) < len(calls)
        recognised = hint_for([f for _, f, _ in failures])
        call, failure, message = failures[0]
        if recognised is not None:
            failure, hint = recognised
            call, _, message = next(f for f in failures if f[1] is failure)
        else:
            hint = GENERAL_HINTS[kernel] if failure.hint is None else failure.hint
        wrong = f" ({len(failures)} of {len(calls)} cases fail)" if len(calls) > 1 else ""
        return Row(kernel, FAILING, "against the spec", f"case '{call.graded.label}'{wrong}: {message}", hint)

    # ------------------------------------------------------------------ stage 2: PyTorch
    def _against_torch(self, kernel: str, function: Callable[..., Any], cases: list[Case]) -> Row | None:
        device = self._device(kernel, function)
        for case in cases:
            case64 = dataclasses.replace(case, dtype="float64")
            try:
                out, grads = run_op(case64, device)
            except Exception as err:  # an error in the learner's code inside the engine
                return self._engine_error(kernel, "against PyTorch", case, err)
            ref_out, ref_grads = run_torch(case64)
            names = ["output"] + [f"gradient of input {i}" for i in range(len(grads))]
            for name, got, expected in zip(names, [out, *grads], [ref_out, *ref_grads], strict=True):
                mismatch = _first_mismatch(expected, got, TORCH_TOLERANCE)
                if mismatch:
                    return Row(kernel, FAILING, "against PyTorch", f"case '{case.label}' (float64): {name} {mismatch}",
                               GENERAL_HINTS[kernel])
        return None

    # ------------------------------------------------------------------ stage 3: gradcheck
    def _gradcheck(self, kernel: str, function: Callable[..., Any], cases: list[Case]) -> Row | None:
        import minicv.functional as F

        device = self._device(kernel, function)
        for case in cases:
            case64 = dataclasses.replace(case, dtype="float64")
            arrays, fixed = inputs(case64)
            tensors = [Tensor(a, requires_grad=True, device=device) for a in arrays]
            fixed_tensors = {k: Tensor(v, device=device) for k, v in fixed.items()}
            try:
                gradcheck(lambda *xs, c=case64, k=fixed_tensors: c.call(F, *xs, **k), tensors)
            except GradcheckError as err:
                return Row(kernel, FAILING, "gradcheck", f"case '{case.label}' (float64): {str(err).splitlines()[0]}",
                           "the backward is not the derivative of the forward: " + GENERAL_HINTS[kernel])
            except Exception as err:
                return self._engine_error(kernel, "gradcheck", case, err)
        return None

    # ------------------------------------------------------------------ stage 4: timing
    def _time(self, kernel: str, function: Callable[..., Any]) -> float:
        """The spec's best time over the learner's, the two run alternately after a warm-up call each."""
        call = next(c for c in self.calls if c.kernel == kernel and c.graded.timing)
        spec = getattr(self.track.spec_table(), kernel)
        best = [float("inf"), float("inf")]
        for run in range(TIMING_RUNS + 1):  # run 0 warms up (first-touch page faults, caches)
            for which, candidate in enumerate((spec, function)):
                args, kwargs = call.copied()
                began = time.perf_counter()
                candidate(*args, **kwargs)
                if run:
                    best[which] = min(best[which], time.perf_counter() - began)
        return best[0] / max(best[1], 1e-9)

    def _device(self, kernel: str, function: Callable[..., Any]) -> Device:
        """The spec's table with only this kernel the learner's: a row depends on its own kernel alone."""
        xp = __import__(self.track.array_module)
        return Device("student", xp, mixed_table(self.track.spec_table(), kernel, function))

    def _engine_error(self, kernel: str, stage: str, case: Case, err: Exception) -> Row:
        return Row(kernel, FAILING, stage, f"case '{case.label}': {self.track.describe(err, self.learner.folder)}",
                   GENERAL_HINTS[kernel])


def _cases_of(calls: list[KernelCall]) -> list[Case]:
    return list(dict.fromkeys(c.graded for c in calls))


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _modified_argument(spec: Callable[..., Any], call: KernelCall, args: tuple, kwargs: dict) -> tuple | None:
    """The learner's kernel wrote into one of its input arrays (the engine reuses them)."""
    names = list(inspect.signature(spec).parameters)
    for name, before, after in zip(names, call.args, args, strict=False):
        if isinstance(before, np.ndarray) and not np.array_equal(before, after, equal_nan=before.dtype.kind == "f"):
            return (Failure(call.kernel, call.args, call.kwargs, (), (), hint=""),
                    f"your kernel wrote into its argument `{name}`: leave the inputs as they are and write into a "
                    "new array (np.zeros(..., dtype=...)) or a copy")
    return None


def _compare(kernel: str, expected: tuple[np.ndarray, ...], got: Any) -> tuple[Failure, str] | None:
    """The first difference between the spec's outputs and the learner's, as a Failure and in words."""
    names = OUTPUT_NAMES.get(kernel, ("gx",))
    got_parts = _as_tuple(got) if len(expected) > 1 else (got,)
    if len(expected) > 1 and (not isinstance(got, tuple | list) or len(got_parts) != len(expected)):
        return (Failure(kernel, (), {}, expected, got_parts),
                f"returned {_describe(got)}, expected a tuple of {len(expected)} arrays ({', '.join(names)})")
    for part, (name, want, have) in enumerate(zip(names, expected, got_parts, strict=True)):
        failure = Failure(kernel, (), {}, expected, got_parts, part)
        if not isinstance(have, np.ndarray):
            return failure, f"`{name}` is {_describe(have)}, expected a NumPy array"
        if have.shape != want.shape:
            return failure, f"`{name}` has shape {have.shape}, expected {want.shape}"
        if have.dtype != want.dtype:
            source = "int64 (indices)" if want.dtype.kind == "i" else f"{want.dtype} (the input's dtype)"
            failure.hint = ("make the result in the right dtype: np.zeros(shape, dtype=x.dtype) (np.zeros alone "
                            "is float64), or .astype(np.int64) for indices")
            return failure, f"`{name}` is {have.dtype}, expected {source}"
        tolerance = 0.0 if want.dtype.kind == "i" else TOLERANCE[str(want.dtype)]
        wrong = _wrong(want, have, tolerance)
        if wrong.any():
            failure.wrong = wrong
            return failure, f"`{name}` (shape {want.shape}) {_first_mismatch(want, have, tolerance)}"
    return None


def _wrong(expected: np.ndarray, got: np.ndarray, tolerance: float) -> np.ndarray:
    """The elements of got further from expected than tolerance times expected's largest magnitude."""
    finite = expected[np.isfinite(expected)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    with np.errstate(invalid="ignore"):
        far = ~(np.abs(got.astype(np.float64) - expected) <= tolerance * scale)
    same_special = (np.isnan(expected) & np.isnan(got)) | (np.isinf(expected) & (got == expected))
    return far & ~same_special


def _first_mismatch(expected: np.ndarray, got: np.ndarray, tolerance: float) -> str:
    """'at [0, 1, 2]: expected 1.5, got 0.75 (3 of 40 elements wrong)', or '' when they agree."""
    if got.shape != expected.shape:
        return f"has shape {got.shape}, expected {expected.shape}"
    wrong = _wrong(expected, got, tolerance)
    if not wrong.any():
        return ""
    index = tuple(int(i) for i in np.argwhere(wrong)[0])
    return (f"first wrong element at {list(index)}: expected {_value(expected[index])}, got {_value(got[index])} "
            f"({int(wrong.sum())} of {wrong.size} elements wrong)")


def _value(x: Any) -> str:
    return f"{x.item():.7g}" if np.asarray(x).dtype.kind == "f" else str(x.item())


def _describe(value: Any) -> str:
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"
