"""`minicv check` passes on the devices here and fails, naming the op, when a kernel is broken."""

import types

import minicv.kernels.numpy as spec
import numpy as np
import pytest
from minicv.kernels import KERNEL_TABLE

import minicv
from minicv import devices
from minicv.check import CASES, run_check
from minicv.cli import main


@pytest.mark.parametrize("device", ["numpy", "numba", "cudasim"])
def test_check_passes_on_every_device(device, capsys):
    assert run_check(device=device) == 0
    out = capsys.readouterr().out
    assert "all" in out and "passed" in out
    assert all(op in out for op in CASES)


def _register_broken(name, kernel, broken):
    table = types.SimpleNamespace(**{k: getattr(spec, k) for k in KERNEL_TABLE})
    setattr(table, kernel, broken)
    minicv.register_device(name, lambda: np, lambda: table)


@pytest.fixture
def broken_device():
    yield "broken"
    devices._FACTORIES.pop("broken", None)
    devices._DEVICES.pop("broken", None)


def test_a_broken_forward_fails_and_names_the_op(broken_device, capsys):
    def wrong_pool(x, *args):
        y, indices = spec.max_pool2d_forward(x, *args)
        return y * 1.001, indices

    _register_broken(broken_device, "max_pool2d_forward", wrong_pool)
    assert run_check(device=broken_device) == 1
    out = capsys.readouterr().out
    assert "FAILED: max_pool2d, max_unpool2d" in out  # max_unpool2d's case pools first


def test_a_broken_backward_fails_gradcheck(broken_device, capsys):
    _register_broken(broken_device, "conv2d_backward_weight", lambda *args: 1.01 * spec.conv2d_backward_weight(*args))
    assert run_check(device=broken_device, op="conv2d", dtype="float64") == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED: conv2d" in out


def test_check_from_the_command_line_narrows_and_exits(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--op", "nope"])
    assert "unknown op 'nope'" in str(exit_info.value)
    assert main(["check", "--device", "numba", "--op", "interpolate", "--dtype", "float64"]) == 0
    assert "interpolate" in capsys.readouterr().out
