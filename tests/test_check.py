"""`minicv check` passes on the devices here and fails, naming the op, when a kernel is broken."""

import os
import subprocess
import sys
import types

import minicv.kernels.numpy as spec
import numpy as np
import pytest
from minicv.kernels.numba.notice import COMPILE_NOTICE

import minicv
from minicv import check, devices
from minicv.check import run_check
from minicv.cli import main
from minicv.ops import OPS, kernel_table


@pytest.mark.parametrize("device", ["numpy", "numba", "cudasim"])
def test_check_passes_on_every_device(device, capsys):
    assert run_check(device=device) == 0
    out = capsys.readouterr().out
    assert "all" in out and "passed" in out
    assert all(op in out for op in OPS)


def _register_broken(name, kernel, broken):
    table = types.SimpleNamespace(**{k: getattr(spec, k) for k in kernel_table()})
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


def test_rows_are_printed_as_they_finish(monkeypatch, capsys):
    """A cold numba cache makes the first rows take a minute: each shows when done, not all at the end."""
    seen_before = []

    def check_op_seeing_the_output(name, device, dtype):
        seen_before.append(capsys.readouterr().out)
        return check_op(name, device, dtype)

    check_op = check.check_op
    monkeypatch.setattr(check, "check_op", check_op_seeing_the_output)
    assert run_check(device="numpy", op="interpolate") == 0
    assert "result" in seen_before[0]  # the header first
    assert "interpolate       numpy    float32" in seen_before[1]  # the first row before the second is computed


def test_the_first_compile_is_announced_once_and_a_warm_cache_is_quiet(tmp_path):
    command = [sys.executable, "-m", "minicv.cli", "check", "--device", "numba", "--op", "interpolate",
               "--dtype", "float64"]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # a cache of its own: cold at first
    cold = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert cold.stderr.count(COMPILE_NOTICE) == 1  # several kernels compile, one notice
    assert "interpolate       numba" in cold.stdout
    warm = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert COMPILE_NOTICE not in warm.stderr


def test_check_from_the_command_line_narrows_and_exits(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--op", "nope"])
    assert exit_info.value.code == 2
    assert "minicv check: error: argument --op: invalid choice: 'nope'" in capsys.readouterr().err
    assert main(["check", "--device", "numba", "--op", "interpolate", "--dtype", "float64"]) == 0
    assert "interpolate" in capsys.readouterr().out
