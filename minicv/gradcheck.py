"""Gradient checking: compare a Function's backward with central finite differences.

Small problems get the full Jacobian (one backward per output element, one pair of forwards per
input element). Large ones get PyTorch's fast mode: a random direction ``u`` per input and ``v`` per
output, comparing the numerical ``v . (J u)`` with the analytical ``(v^T J) . u`` from one backward,
with atol scaled by ``sum(u) * sum(v)`` as PyTorch does (an all-atol error matrix E gives v^T E u).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minicv.autograd import no_grad
from minicv.tensor import Tensor

FULL_JACOBIAN_LIMIT = 4096  # input elements x output elements up to which the full Jacobian is checked
LOCALISE_LIMIT = 4096  # input elements up to which a failed fast check looks for the worst element


class GradcheckError(RuntimeError):
    """The analytical gradient disagrees with the numerical one (as PyTorch's GradcheckError)."""


def gradcheck(
    fn: Callable[..., Tensor | Sequence[Tensor]],
    inputs: Tensor | Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    fast: bool | None = None,
    seed: int = 0,
) -> bool:
    """Check the gradients of ``fn`` at ``inputs`` against central differences; True or GradcheckError.

    ``fn`` takes the inputs (Tensors and plain values, in order) and returns a Tensor or a tuple of
    Tensors; the inputs that require grad are perturbed by ``eps``, the floating-point outputs are
    checked (``|analytical - numerical| <= atol + rtol * |numerical|``). Use float64 inputs: the
    default tolerances are meant for them, and other dtypes draw a warning. ``fast=None`` checks the
    full Jacobian when inputs x outputs have at most 4096 elements, the directional check otherwise;
    ``seed`` draws the directions. Gradients already in ``.grad`` are left as they were.

    Example::

        >>> import numpy as np, minicv as mc
        >>> import minicv.functional as F
        >>> x = mc.tensor(np.random.rand(2, 3), dtype=np.float64, requires_grad=True)
        >>> mc.gradcheck(lambda t: F.softmax(t, dim=1), (x,))
        True
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError(
            "gradcheck expects at least one input tensor to require gradient, "
            "but none of them have requires_grad=True."
        )
    for i in checked:
        if inputs[i].dtype != np.float64:
            warnings.warn(
                f"Input #{i} requires gradient and is not a double precision floating point "
                f"({inputs[i].dtype}). This check will likely fail if all the inputs are not of double "
                "precision floating point.",
                stacklevel=2,
            )
    # fresh leaves on the same data: the caller's tensors (leaves or not) keep their .grad and graph
    inputs = tuple(_fresh_leaf(t) if i in checked else t for i, t in enumerate(inputs))
    with _PreservedGrads() as preserved:
        outputs = _as_tuple(fn(*inputs))
        preserved.track_graph(outputs)
        differentiable = [j for j, y in enumerate(outputs) if y.dtype.kind == "f"]
        in_size = sum(inputs[i].size for i in checked)
        out_size = sum(outputs[j].size for j in differentiable)
        if fast is None:
            fast = in_size * out_size > FULL_JACOBIAN_LIMIT
        check = _check_directional if fast else _check_full
        checked = [i for i in checked if inputs[i].size]  # empty tensors have nothing to check
        differentiable = [j for j in differentiable if outputs[j].size]
        check(_Problem(fn, inputs, outputs, checked, differentiable, eps, atol, rtol), seed)
    return True


def _as_tuple(outputs: Any) -> tuple[Tensor, ...]:
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    for y in outputs:
        if not isinstance(y, Tensor):
            raise TypeError(f"gradcheck: fn must return Tensors, but returned a {type(y).__name__}")
    return outputs


def _fresh_leaf(t: Tensor) -> Tensor:
    return Tensor._wrap(t.data, t.device, True, None)


def _to_numpy(array: Any) -> np.ndarray:
    return np.asarray(array.get() if hasattr(array, "get") else array, dtype=np.float64)


class _Problem:
    """The function, its inputs and outputs, and the two ways of differentiating it."""

    def __init__(self, fn, inputs, outputs, checked, differentiable, eps, atol, rtol):
        self.fn, self.inputs, self.outputs = fn, inputs, outputs
        self.checked, self.differentiable = checked, differentiable
        self.eps, self.atol, self.rtol = eps, atol, rtol

    def central_difference(self, i: int, step: Any) -> list[np.ndarray]:
        """(f(x_i + step) - f(x_i - step)) / (2 eps) for every differentiable output, flattened, float64."""
        x = self.inputs[i]
        original = x.data
        try:
            x.data = original + step
            plus = self._evaluate()
            x.data = original - step
            minus = self._evaluate()
        finally:
            x.data = original
        return [(p - m) / (2 * self.eps) for p, m in zip(plus, minus, strict=True)]

    def _evaluate(self) -> list[np.ndarray]:
        with no_grad():
            outputs = _as_tuple(self.fn(*self.inputs))
        return [_to_numpy(outputs[j].data).reshape(-1) for j in self.differentiable]

    def vector_jacobian(self, j: int, v: np.ndarray) -> list[np.ndarray]:
        """v^T J for output j and every checked input, flattened, float64 (zero where unconnected)."""
        y = self.outputs[j]
        for i in self.checked:
            self.inputs[i].grad = None
        if y.requires_grad:
            y.backward(y.device.asarray(v.reshape(y.shape), dtype=y.dtype))
        rows = []
        for i in self.checked:
            x = self.inputs[i]
            if x.grad is None:
                rows.append(np.zeros(x.size))
                continue
            if x.grad.shape != x.shape:
                raise GradcheckError(
                    f"Analytical gradient has incorrect size: input {i} has shape {x.shape}, "
                    f"but its gradient has shape {x.grad.shape}"
                )
            rows.append(_to_numpy(x.grad.data).reshape(-1))
        return rows

    def mismatch(self, analytical: np.ndarray, numerical: np.ndarray, atol: float) -> tuple[bool, int]:
        """Whether allclose fails, and the flat index of the worst element (relative to its tolerance)."""
        excess = np.abs(analytical - numerical) / (atol + self.rtol * np.abs(numerical))
        excess = np.where(np.isnan(analytical) != np.isnan(numerical), np.inf, np.nan_to_num(excess))
        worst = int(np.argmax(excess)) if excess.size else 0
        return bool(excess.size and excess[worst] > 1), worst


def _check_full(problem: _Problem, seed: int) -> None:
    # numerical[i][n]: the (output size, input size) Jacobian block of differentiable output n
    numerical = {}
    for i in problem.checked:
        steps = (_basis_step(problem, i, k) for k in range(problem.inputs[i].size))
        columns = [problem.central_difference(i, step) for step in steps]
        numerical[i] = [np.stack(blocks, axis=-1) for blocks in zip(*columns, strict=True)]
    for n, j in enumerate(problem.differentiable):
        y = problem.outputs[j]
        rows = [problem.vector_jacobian(j, np.eye(1, y.size, k)[0]) for k in range(y.size)]
        for m, i in enumerate(problem.checked):
            x = problem.inputs[i]
            analytical = np.stack([r[m] for r in rows]).reshape(y.size, x.size)
            expected = numerical[i][n].reshape(y.size, x.size)
            failed, worst = problem.mismatch(analytical.reshape(-1), expected.reshape(-1), problem.atol)
            if failed:
                out_k, in_k = np.unravel_index(worst, analytical.shape)
                raise GradcheckError(
                    f"Jacobian mismatch for output {j} with respect to input {i}: at output index "
                    f"{_index(out_k, y.shape)}, input index {_index(in_k, x.shape)}: "
                    f"analytical {float(analytical.flat[worst])!r}, "
                    f"numerical {float(expected.flat[worst])!r} "
                    f"(atol={problem.atol}, rtol={problem.rtol}, eps={problem.eps})"
                )


def _basis_step(problem: _Problem, i: int, k: int) -> Any:
    """eps at flat index k of input i, zero elsewhere."""
    x = problem.inputs[i]
    step = x.device.xp.zeros(x.size, dtype=x.dtype)
    step[k] = problem.eps
    return step.reshape(x.shape)


def _check_directional(problem: _Problem, seed: int) -> None:
    rng = np.random.default_rng(seed)
    u = {i: _unit(rng, problem.inputs[i].size) for i in problem.checked}
    v = {j: _unit(rng, problem.outputs[j].size) for j in problem.differentiable}
    jvp = {}  # (j, i) -> numerical J u
    for i in problem.checked:
        x = problem.inputs[i]
        step = x.device.asarray(problem.eps * u[i].reshape(x.shape), dtype=x.dtype)
        for n, column in enumerate(problem.central_difference(i, step)):
            jvp[problem.differentiable[n], i] = column
    for j in problem.differentiable:
        vjp = problem.vector_jacobian(j, v[j])
        for n, i in enumerate(problem.checked):
            analytical, numerical = vjp[n] @ u[i], v[j] @ jvp[j, i]
            atol = problem.atol * u[i].sum() * v[j].sum()
            if problem.mismatch(np.array([analytical]), np.array([numerical]), atol)[0]:
                raise GradcheckError(
                    f"Jacobian mismatch for output {j} with respect to input {i} (fast mode, seed {seed}): "
                    f"analytical (v^T J).u = {float(analytical)!r}, "
                    f"numerical v.(J u) = {float(numerical)!r}; "
                    + _localise(problem, j, i, v[j], vjp[n])
                )


def _localise(problem: _Problem, j: int, i: int, v: np.ndarray, analytical_row: np.ndarray) -> str:
    """The input element where the analytical v^T J is furthest from the numerical one."""
    x = problem.inputs[i]
    if x.size > LOCALISE_LIMIT:
        return f"input {i} has over {LOCALISE_LIMIT} elements: rerun on a smaller one to find the element"
    numerical_row = np.empty(x.size)
    n = problem.differentiable.index(j)
    for k in range(x.size):
        numerical_row[k] = v @ problem.central_difference(i, _basis_step(problem, i, k))[n]
    worst = problem.mismatch(analytical_row, numerical_row, problem.atol)[1]
    return (
        f"worst input index {_index(worst, x.shape)}: analytical (v^T J) {float(analytical_row[worst])!r}, "
        f"numerical {float(numerical_row[worst])!r}"
    )


def _unit(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random non-negative unit vector, as PyTorch's fast mode draws."""
    vector = rng.random(size)
    return vector / max(np.linalg.norm(vector), np.finfo(np.float64).tiny)


def _index(flat: int | np.integer, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(k) for k in np.unravel_index(flat, shape)) if shape else ()


class _PreservedGrads:
    """Keeps the ``.grad`` of the leaves inside fn (parameters it captures, say) as they were."""

    def __enter__(self) -> _PreservedGrads:
        self.saved: dict[int, tuple[Tensor, Tensor | None]] = {}
        return self

    def track_graph(self, outputs: Sequence[Tensor]) -> None:
        """Set aside the gradients of every tensor reachable from ``outputs``."""
        stack, seen = [y._node for y in outputs if y._node is not None], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for t in node.inputs:
                if isinstance(t, Tensor):
                    self.saved.setdefault(id(t), (t, t.grad))
                    t.grad = None  # backward accumulates into the .grad object itself: keep it out of reach
                    if t._node is not None:
                        stack.append(t._node)

    def __exit__(self, *exc: Any) -> None:
        for t, grad in self.saved.values():
            t.grad = grad
