"""BLAS threads on the numba device: the ops' products run on one OpenBLAS thread there (minicv/blas.py)."""

import numpy as np
import pytest

import minicv as mc
import minicv.functional as F
from minicv import blas


def test_threads_limits_openblas_inside_the_block_and_restores_it():
    before = blas.get_threads()
    assert before is not None, "NumPy's wheel bundles OpenBLAS: its thread controls must be found"
    with blas.threads(1):
        assert blas.get_threads() == 1
    assert blas.get_threads() == before
    with pytest.raises(ZeroDivisionError), blas.threads(1):
        1 / 0  # noqa: B018 (an error inside the block restores the count too)
    assert blas.get_threads() == before
    with blas.threads(None):  # no limit: BLAS's own count
        assert blas.get_threads() == before


@pytest.mark.parametrize(("device", "expected"), [("numba", 1), ("numpy", None)])
def test_linear_runs_its_products_under_the_device_blas_limit(monkeypatch, device, expected):
    counts = []
    threads = blas.threads

    def recording(count):
        counts.append(count)
        return threads(count)

    monkeypatch.setattr(blas, "threads", recording)
    rng = np.random.default_rng(0)
    x = mc.Tensor(rng.standard_normal((4, 6), np.float32), device=device, requires_grad=True)
    w = mc.Tensor(rng.standard_normal((3, 6), np.float32), device=device, requires_grad=True)
    F.linear(x, w).sum().backward()
    assert counts == [expected, expected]  # the forward product, then both backward products
    np.testing.assert_allclose(x.grad.numpy(), np.broadcast_to(w.detach().numpy().sum(0), (4, 6)), rtol=1e-6)
