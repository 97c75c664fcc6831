"""The explicit vectors of the Numba kernels (kernels/numba/simd.py), lane by lane against NumPy."""

import numpy as np
import pytest
from minicv.kernels.numba import simd
from numba import njit

DTYPES = [np.float32, np.float64]


@njit
def _lanes(a):
    return simd.lanes(a), simd.lanes(simd.zeros(a)), simd.lanes(simd.interleave(simd.zeros(a), simd.zeros(a)))


@njit
def _multiply_add(a, i, b, j, c, k, out):
    """out[:lanes] = a[i] * b[j:j+lanes] + c[k:k+lanes], then out[lanes:2*lanes] = out[:lanes] + c[k:...]."""
    total = simd.fma(simd.broadcast(a, i), simd.load(b, j), simd.load(c, k))
    simd.store(out, 0, total)
    simd.store(out, simd.lanes(c), simd.add(total, simd.load(c, k)))


@njit
def _interleave(a, b, out):
    simd.store(out, 0, simd.interleave(simd.load(a, 0), simd.load(b, 0)))


@njit
def _deinterleave(a, evens, odds):
    even, odd = simd.deinterleave(simd.load(a, 0), simd.load(a, simd.lanes(a)))
    simd.store(evens, 0, even)
    simd.store(odds, 0, odd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lanes_fill_vector_bytes(dtype):
    lanes = simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    assert _lanes(np.zeros(1, dtype)) == (lanes, lanes, 2 * lanes)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fma_broadcast_load_store_add_match_numpy(dtype):
    lanes = simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    a = rng.standard_normal(9).astype(dtype)[::3]  # a strided array: broadcast honours the stride
    b, c = rng.standard_normal(lanes + 5).astype(dtype), rng.standard_normal(lanes + 7).astype(dtype)
    out = np.full(2 * lanes + 1, np.nan, dtype)
    _multiply_add(a, 2, b, 5, c, 3, out)
    # in float64, float32's products are exact, so this is fma's single rounding; float64 gets a tolerance
    expected = (a[2].astype(np.float64) * b[5:].astype(np.float64) + c[3:3 + lanes]).astype(dtype)
    np.testing.assert_allclose(out[:lanes], expected, rtol=0 if dtype == np.float32 else 1e-15)
    np.testing.assert_allclose(out[lanes:2 * lanes], out[:lanes] + c[3:3 + lanes], rtol=0)
    assert np.isnan(out[-1])  # nothing written past the vectors


@pytest.mark.parametrize("dtype", DTYPES)
def test_interleave_alternates_lanes(dtype):
    lanes = simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    a, b = np.arange(lanes, dtype=dtype), -np.arange(lanes, dtype=dtype) - 1
    out = np.empty(2 * lanes, dtype)
    _interleave(a, b, out)
    np.testing.assert_array_equal(out[0::2], a)
    np.testing.assert_array_equal(out[1::2], b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_deinterleave_deals_lanes_of_two_vectors(dtype):
    lanes = simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    a = np.arange(2 * lanes, dtype=dtype)
    evens, odds = np.full(lanes, np.nan, dtype), np.full(lanes, np.nan, dtype)
    _deinterleave(a, evens, odds)
    np.testing.assert_array_equal(evens, a[0::2])
    np.testing.assert_array_equal(odds, a[1::2])


@pytest.mark.parametrize("shape", [(0,), (1,), (3, 5), (2, 7, 33)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_starts_on_a_cache_line(shape, dtype):
    for _ in range(8):  # whatever offset numpy's allocation happens to have
        a = simd.empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % simd.CACHE_LINE == 0  # an empty array has no data to place


@njit
def _repeat(a, out):
    copies = simd.repeat(simd.load(a, 0), 3)
    for k in range(3):
        simd.store(out, k * simd.lanes(a), simd.add(copies[k], simd.load(a, 0)))
    return len(copies)


@pytest.mark.parametrize("dtype", DTYPES)
def test_repeat_makes_a_tuple_of_copies(dtype):
    lanes = simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    a = np.arange(lanes, dtype=dtype)
    out = np.full(3 * lanes + 1, np.nan, dtype)
    assert _repeat(a, out) == 3
    np.testing.assert_array_equal(out[:-1], np.tile(2 * a, 3))
    assert np.isnan(out[-1])
