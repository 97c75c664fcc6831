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
from numba.core import caching


@pytest.mark.skipif(not cache_lock.LOCKED, reason="no flock on this system (Windows): saves are not locked")
def test_a_cache_save_waits_while_another_process_holds_the_lock(tmp_path):
    cache_file = caching.IndexDataCacheFile(str(tmp_path), "kernel", source_stamp="stamp")
    with open(tmp_path / cache_lock.LOCK_NAME, "a") as lock:  # a second open file: flock's other holder
        cache_lock.fcntl.flock(lock, cache_lock.fcntl.LOCK_EX)
        save = threading.Thread(target=cache_file.save, args=("signature", "machine code"))
        save.start()
        save.join(0.5)
        assert save.is_alive(), "the save went ahead while the lock was held"
        assert cache_file.load("signature") is None
    save.join(30)
    assert not save.is_alive()
    assert cache_file.load("signature") == "machine code"


@pytest.mark.skipif(not cache_lock.LOCKED, reason="no flock on this system (Windows): saves are not locked")
def test_the_lock_is_taken_once_when_its_file_is_imported_twice(tmp_path):
    """A source checkout's ``kernels.numba`` and the installed ``minicv.kernels.numba`` are two modules of
    one file; a save after both imports must not wait for the lock its own process holds."""
    second = importlib.util.spec_from_file_location("second_cache_lock", cache_lock.__file__)
    module = importlib.util.module_from_spec(second)
    saved = caching.IndexDataCacheFile.save
    try:
        second.loader.exec_module(module)
        cache_file = caching.IndexDataCacheFile(str(tmp_path), "kernel", source_stamp="stamp")
        save = threading.Thread(target=cache_file.save, args=("signature", "machine code"), daemon=True)
        save.start()
        save.join(10)
        assert not save.is_alive(), "the save waits on a lock its own process holds"
        assert cache_file.load("signature") == "machine code"
    finally:
        caching.IndexDataCacheFile.save = saved


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

    compile_models(TASKS, (minicv.demo.IMAGE_SIZE, minicv.demo.IMAGE_SIZE))
    helped = signatures()
    minicv.demo.compile_ahead = lambda *args: None  # no second helper: this process is the run
    with tempfile.TemporaryDirectory() as out:
        minicv.demo.run_demo(Path(out), "numba", epochs=1, train_size=4, validation_size=2, test_size=2)
    missed = signatures() - helped
    print("\\n".join(f"{module}.{name}{signature}" for module, name, signature in sorted(missed, key=str)))
    sys.exit(1 if missed else 0)
""")


def test_the_helper_compiles_every_kernel_signature_the_demo_runs():
    """Else the demo compiles it itself, after the helper: correct, but the cold start gains less."""
    run = subprocess.run([sys.executable, "-c", HELPER_THEN_DEMO], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    assert run.returncode == 0, f"the demo ran signatures the helper did not compile:\n{run.stdout}{run.stderr}"


def test_the_helper_takes_odd_image_sizes():
    """A naive model trains on any size; the helper's pooling layers must not stop at an odd one."""
    from minicv.precompile import compile_models

    compile_models(["naive"], (17, 23))
