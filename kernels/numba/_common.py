"""Index arithmetic shared by the windowed kernels (conv, pooling)."""

from numba import njit

Pair = tuple[int, int]  # (along h, along w)


@njit(inline="always", cache=True)
def valid_outputs(k: int, s: int, p: int, d: int, size: int, out_size: int) -> tuple[int, int]:
    """The range [lo, hi) of outputs o whose tap k reads inside the input: 0 <= o*s - p + k*d < size.

    Loops over [lo, hi) need no bounds test inside, so LLVM vectorises them.
    """
    offset = k * d - p
    lo = 0 if offset >= 0 else (-offset + s - 1) // s
    hi = (size - 1 - offset) // s + 1 if size - 1 - offset >= 0 else 0
    lo = min(lo, out_size)
    return lo, max(lo, min(hi, out_size))
