"""The registry of ops (minicv/ops.py) is the one list: every device supplies its kernels, and an op added
to it reaches `minicv check` and the benchmark without any other list being edited."""

import minicv.kernels.numpy as spec
import numpy as np
import pytest

import minicv
from minicv import devices, ops
from minicv.autograd import Function
from minicv.bench.run import setup
from minicv.bench.timing import QUICK_PLAN
from minicv.check import check_rows, run_check
from minicv.exercises.contracts import CONTRACTS, LECTURE_ORDER
from minicv.exercises.cuda import CUDA_FILES
from minicv.exercises.hints import GENERAL_HINTS
from minicv.exercises.tracks import NUMPY
from minicv.ops import Case, Op, register_op


@pytest.mark.parametrize("device", devices.device_names())
def test_every_device_supplies_every_kernel_of_the_registry(device):
    """Each device's table is loaded without creating the device: cuda's imports no CuPy until a call."""
    _, table, _ = devices._FACTORIES[device]
    assert devices.missing_kernels(table()) == []


def test_the_exercises_ask_for_every_kernel_of_the_registry():
    """The student device is the learner's table: every kernel has a contract, an exercise, a hint, a spec
    module (the NumPy and Numba stubs) and a .cu file (the CUDA track's stubs)."""
    for kernel in ops.kernel_table():
        assert kernel in CONTRACTS and kernel in LECTURE_ORDER and kernel in GENERAL_HINTS
        assert NUMPY.module_of(kernel) in CUDA_FILES


def test_the_kernel_table_is_the_registrys_kernels_each_once():
    kernels = [k for op in ops.OPS.values() for k in op.kernels]
    assert set(ops.kernel_table()) == set(kernels) and len(ops.kernel_table()) == len(set(kernels))
    with pytest.raises(ValueError, match="'conv2d' is already registered"):
        register_op(ops.OPS["conv2d"])


# ---- a toy op, added through the registry alone ------------------------------------------------------------

def scale(x, factor):
    """The toy op's one kernel (its own adjoint): factor * x in x's dtype."""
    return x * x.dtype.type(factor)


class ScaleFunction(Function):
    def __init__(self, factor: float):
        self.factor = factor

    def forward(self, x):
        return self.kernels.scale(x, self.factor)

    def backward(self, gy):
        return self.kernels.scale(gy, self.factor)


TOY = Op(
    "scale", ("scale",),
    check=Case("scale by 3", lambda rng: ([rng.standard_normal((2, 3, 4))], {}),
               lambda f, x: ScaleFunction(3.0).apply(x), torch=False),
    cases=(Case("timing: scale by 3, (4, 8, 16, 16)", lambda rng: ([rng.standard_normal((4, 8, 16, 16))], {}),
                lambda f, x: ScaleFunction(3.0).apply(x), timing=True, torch=False),),
)


@pytest.fixture
def toy_op(monkeypatch):
    """The toy op registered, with its numpy kernel; the registry and the spec are restored afterwards."""
    monkeypatch.setattr(spec, "scale", scale, raising=False)
    yield register_op(TOY)
    del ops.OPS[TOY.name]
    for name in ("toy", "lacking"):
        devices._FACTORIES.pop(name, None)
        devices._DEVICES.pop(name, None)


def test_a_device_lacking_a_registered_kernel_is_refused_naming_it(toy_op):
    table = {k: getattr(spec, k) for k in ops.kernel_table() if k != "scale"}
    assert devices.missing_kernels(type("Table", (), table)) == ["scale"]
    minicv.register_device("lacking", lambda: np, lambda: type("Table", (), table))
    with pytest.raises(RuntimeError, match="device 'lacking' lacks the kernels scale"):
        devices.get_device("lacking")


def test_a_new_op_reaches_check(toy_op, capsys):
    assert run_check(device="numpy", op="scale") == 0
    out = capsys.readouterr().out
    assert "scale             numpy    float64" in out and "all 2 checks passed" in out
    rows = list(check_rows(list(ops.OPS), ["numpy"], ["float64"], torch=False))
    assert [r["op"] for r in rows][-1] == "scale" and rows[-1]["ok"] and rows[-1]["gradcheck"]


def test_a_new_op_reaches_the_benchmark(toy_op):
    run = setup("numpy", None, quick=True)
    toy = [c for c in run.cases if c.problem.op == "scale"]
    assert [(c.group, c.passes) for c in toy] == [("registry", "fwd"), ("registry", "fwd+bwd")]
    jobs = [j for j in run.jobs if j.case.problem.op == "scale"]
    assert [(j.backend.name, j.path) for j in jobs] == [("numpy", "op")] * 2  # PyTorch has no such op
    for job in jobs:
        row = job.run(QUICK_PLAN, job.case.problem.arrays(np.random.default_rng(0), np.float32))
        assert "error" not in row and row["median_s"] > 0 and row["case"] == "scale by 3, (4, 8, 16, 16)"
        assert row["gbps"] > 0 and row["work"] == 4 * 2 * 4 * 8 * 16 * 16 * (2 if job.case.backward else 1)


def test_a_wrong_kernel_of_the_new_op_fails_check(toy_op, capsys):
    wrong = {k: getattr(spec, k) for k in ops.kernel_table()}
    wrong["scale"] = lambda x, factor: scale(x, factor * 1.01)
    minicv.register_device("toy", lambda: np, lambda: type("Table", (), wrong))
    assert run_check(device="toy", op="scale") == 1
    assert "FAILED: scale" in capsys.readouterr().out
