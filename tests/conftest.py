"""Shared fixtures: the devices every conformance test runs on.

numpy, numba and cudasim run everywhere (CI included); cuda runs where CuPy sees a GPU and is
reported as skipped, never as passed, elsewhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numba
import numpy as np
import pytest
from hypothesis import settings

import minicv as mc

CPU_DEVICES = ("numpy", "numba", "cudasim")

# A test that names no device tests the specification: the library's default is numba (DEFAULT_DEVICE,
# for speed), the suite's is numpy. Every device is tested by name through the ``device`` fixture, and
# test_tensor checks the library's own default in a fresh process.
mc.set_default_device("numpy")

# CI draws the same examples on every run (a red build is reproducible); elsewhere hypothesis explores.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def gpu_present() -> bool:
    return mc.is_available("cuda")


DEVICES = [*CPU_DEVICES, pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_present():
        return
    skip = pytest.mark.skip(reason="needs CuPy and an NVIDIA GPU (the cuda device); none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Every device: a test taking this fixture runs once per device."""
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request: pytest.FixtureRequest) -> type:
    return request.param


def tolerances(dtype: type) -> dict:
    """The project's agreed tolerances: float64 1e-10 relative; float32 rtol 1e-4, atol 1e-5."""
    return {"rtol": 1e-10, "atol": 1e-12} if np.dtype(dtype) == np.float64 else {"rtol": 1e-4, "atol": 1e-5}


@contextlib.contextmanager
def numba_threads(count: int) -> Iterator[None]:
    """Run the block on ``count`` numba threads (at most NUMBA_NUM_THREADS), then restore the thread count."""
    saved = numba.get_num_threads()
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(saved)
