"""The cold cache's helper process (minicv/precompile.py) and the lock it relies on
(kernels/numba/cache_lock.py)."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from minicv.kernels.numba import cache_lock

KERNEL_SOURCE = "from numba import njit\n\n@njit(cache=True)\ndef twice(x):\n    return 2 * x\n"
# another process compiles and saves the kernel, with claims off (they would wait for this test's claim)
COMPILE_UNCLAIMED = textwrap.dedent("""
    import importlib.util, sys
    from minicv.kernels.numba import cache_lock
    cache_lock.dispatcher.Dispatcher.compile = cache_lock._unclaimed_compile
    spec = importlib.util.spec_from_file_location("claimed_kernel", sys.argv[1])
    kernel = sys.modules["claimed_kernel"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel)
    assert kernel.twice(1.0) == 2.0
""")


def _cached_kernel(tmp_path, monkeypatch):
    """A module of one @njit(cache=True) function, in a file of its own, and so with a cache of its own."""
    path = tmp_path / "claimed_kernel.py"
    path.write_text(KERNEL_SOURCE)
    spec = importlib.util.spec_from_file_location("claimed_kernel", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "claimed_kernel", module)  # a cached kernel's globals are its module's
    spec.loader.exec_module(module)
    return module.twice, path


@pytest.mark.skipif(not cache_lock.LOCKED, reason="no flock on this system (Windows): nothing is claimed")
def test_a_compile_waits_for_another_claim_on_the_function_then_loads_what_it_saved(tmp_path, monkeypatch):
    twice, path = _cached_kernel(tmp_path, monkeypatch)
    with open(cache_lock.claim_path(twice), "a") as claim:  # a second open file: flock's other holder
        cache_lock.fcntl.flock(claim, cache_lock.fcntl.LOCK_EX)
        result = []
        call = threading.Thread(target=lambda: result.append(twice(1.0)))
        call.start()
        call.join(0.5)
        assert call.is_alive(), "the compile went ahead while another held the claim"
        subprocess.run([sys.executable, "-c", COMPILE_UNCLAIMED, str(path)], check=True, timeout=300)
    call.join(60)
    assert result == [2.0]
    assert sum(twice._cache_hits.values()) == 1, "the waiting process compiled what the other had saved"
    assert not twice._cache_misses


@pytest.mark.skipif(not cache_lock.LOCKED, reason="no flock on this system (Windows): nothing is claimed")
def test_the_claim_is_taken_once_when_its_file_is_imported_twice(tmp_path, monkeypatch):
    """A source checkout's ``kernels.numba`` and the installed ``minicv.kernels.numba`` are two modules of
    one file; a compile after both imports must not wait for the claim its own process holds."""
    second = importlib.util.spec_from_file_location("second_cache_lock", cache_lock.__file__)
    module = importlib.util.module_from_spec(second)
    claimed = cache_lock.dispatcher.Dispatcher.compile
    try:
        second.loader.exec_module(module)
        assert cache_lock.dispatcher.Dispatcher.compile.unclaimed is cache_lock._unclaimed_compile
        twice, _ = _cached_kernel(tmp_path, monkeypatch)
        call = threading.Thread(target=twice, args=(1.0,), daemon=True)
        call.start()
        call.join(60)
        assert not call.is_alive(), "the compile waits on a claim its own process holds"
    finally:
        cache_lock.dispatcher.Dispatcher.compile = claimed


HELPER_THEN_DEMO = textwrap.dedent("""
    import sys, tempfile
    from pathlib import Path
    from numba.core.registry import CPUDispatcher
    import minicv.demo
    from minicv.models import TASKS
    from minicv.precompile import compile_models

    def signatures():
        return {(module, name, signature) for module, namespace in list(sys.modules.items())
                if module.startswith("minicv.kernels.numba.")
                for name, value in vars(namespace).items() if isinstance(value, CPUDispatcher)
                for signature in value.signatures}

    compile_models(TASKS, (minicv.demo.IMAGE_SIZE, minicv.demo.IMAGE_SIZE), minicv.demo.BATCH_SIZE)
    helped = signatures()
    minicv.demo.compile_ahead = lambda *args: None  # no second helper: this process is the run
    with tempfile.TemporaryDirectory() as out:
        # a whole batch: which algorithm a layer takes depends on it
        minicv.demo.run_demo(Path(out), "numba", epochs=1, train_size=minicv.demo.BATCH_SIZE, validation_size=2,
                             test_size=2)
    missed = signatures() - helped
    print("\\n".join(f"{module}.{name}{signature}" for module, name, signature in sorted(missed, key=str)))
    sys.exit(1 if missed else 0)
""")


def test_the_helper_compiles_every_kernel_signature_the_demo_runs():
    """Else the demo compiles it itself, after the helper: correct, but the cold start gains less. Two threads,
    as the helper runs: the signatures of the launcher's argument packer (one per kernel) count too."""
    run = subprocess.run([sys.executable, "-c", HELPER_THEN_DEMO], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NUMBA_NUM_THREADS": "2"})
    assert run.returncode == 0, f"the demo ran signatures the helper did not compile:\n{run.stdout}{run.stderr}"


def test_the_helper_takes_odd_image_sizes():
    """A naive model trains on any size; the helper's pooling layers must not stop at an odd one."""
    from minicv.precompile import compile_models

    compile_models(["naive"], (17, 23), 2)


def test_the_helper_caps_its_batch_at_helper_pixels(monkeypatch):
    """The helper runs beside the run, its memory added to the run's: its batches hold HELPER_PIXELS pixels at
    most, whatever the run's batch."""
    import minicv.data
    import minicv.precompile

    batches, loader = [], minicv.data.DataLoader
    monkeypatch.setattr(minicv.data, "DataLoader", lambda items, size, *args, **kwargs: batches.append(size) or
                        loader(items, size, *args, **kwargs))
    monkeypatch.setattr(minicv.precompile, "HELPER_PIXELS", 3 * 17 * 23)
    minicv.precompile.compile_models(["naive"], (17, 23), 8)
    assert batches and set(batches) == {3}


def test_minicv_check_starts_the_helper_for_its_numba_rows_only(monkeypatch):
    import minicv.check

    started = []
    monkeypatch.setattr(minicv.check, "check_ahead", lambda ops, dtypes: started.append((ops, dtypes)))
    assert minicv.check.run_check(device="numpy", op="interpolate") == 0
    assert started == []
    assert minicv.check.run_check(device="cpu", op="interpolate", dtype="float32") == 0  # cpu: numba's alias
    assert started == [(["interpolate"], ["float32"])]


def test_the_check_helper_runs_the_numba_rows_last_first(monkeypatch):
    import minicv.check
    from minicv.precompile import compile_checks

    rows = []
    monkeypatch.setattr(minicv.check, "check_op", lambda *row: rows.append(row))
    compile_checks(["conv2d", "max_pool2d"], ["float32", "float64"])
    assert rows == [("max_pool2d", "numba", "float64"), ("max_pool2d", "numba", "float32"),
                    ("conv2d", "numba", "float64"), ("conv2d", "numba", "float32")]


@pytest.mark.parametrize("arguments", [["check", "float32", "interpolate"], ["models", "2", "17", "23", "naive"]])
def test_the_helper_runs_as_its_starters_call_it(arguments):
    subprocess.run([sys.executable, "-m", "minicv.precompile", *arguments], check=True, timeout=600,
                   env={**os.environ, "NUMBA_NUM_THREADS": "1"})
