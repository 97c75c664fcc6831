"""Reverse-mode autograd you can hold in your head.

A Function is one op: ``forward`` and ``backward`` on raw arrays, side by side. ``apply`` runs the
forward on the inputs' common device and, when a gradient may be needed, records the Function as the
node that made its outputs. ``backward`` walks the recorded graph in reverse topological order (an
iterative sort: no recursion limit however deep the graph) and accumulates into the ``.grad`` of the
leaves, across uses and across calls, until they are zeroed explicitly.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from minicv.devices import Device
    from minicv.tensor import Tensor

Array = Any  # what a Function's forward and backward take and return: a NumPy or CuPy array (CuPy has no hints)

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


@contextlib.contextmanager
def set_grad_enabled(mode: bool) -> Iterator[None]:
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(mode)
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Record nothing inside: ``with minicv.no_grad(): ...`` (for evaluation and optimizer steps)."""
    return set_grad_enabled(False)


class Function:
    """One differentiable op. Subclasses set their hyper-parameters in __init__ and implement
    ``forward(*arrays)`` (returning an array or a tuple of arrays) and ``backward(*grad_outputs)``
    (returning one gradient array, or None, per input). Inside both, ``self.device``, ``self.xp`` and
    ``self.kernels`` are those of the inputs' device: the one place a device is chosen.
    """

    device: Device
    inputs: tuple[Any, ...] = ()
    needs_input_grad: tuple[bool, ...] = ()

    @property
    def xp(self) -> Any:
        return self.device.xp

    @property
    def kernels(self) -> Any:
        return self.device.kernels

    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError

    def backward(self, *grad_outputs: Any) -> Any:
        raise NotImplementedError

    def apply(self, *inputs: Any) -> Any:
        """Run forward on Tensors (and plain values); return a Tensor or a tuple of Tensors."""
        from minicv.tensor import Tensor, common_device

        self.device = common_device(*inputs)
        raw = tuple(t.data if isinstance(t, Tensor) else t for t in inputs)
        with np.errstate(all="ignore"):  # inf and NaN are answers, as in PyTorch: no warning
            outputs = self.forward(*raw)
        single = not isinstance(outputs, tuple)
        outputs = (outputs,) if single else outputs
        needs = tuple(isinstance(t, Tensor) and t.requires_grad for t in inputs)
        record = _grad_enabled and any(needs)
        results = tuple(
            Tensor._wrap(y, self.device, record and _is_float(y), self if record else None) for y in outputs
        )
        if record:
            self.inputs = inputs
            self.needs_input_grad = needs
            self.outputs = tuple(weakref.ref(r) for r in results)
        return results[0] if single else results


def _is_float(array: Any) -> bool:
    return array.dtype.kind == "f"


def backward(root: Tensor, grad: Any = None) -> None:
    """Accumulate d(root)/d(leaf) * grad into every leaf that requires a gradient."""
    if not root.requires_grad:
        raise RuntimeError("backward() on a tensor that does not require grad and has no grad_fn")
    xp = root.device.xp
    if grad is None:
        if root.size != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs, not shape {root.shape}")
        grad = xp.ones(root.shape, dtype=root.dtype)
    else:
        grad = grad.data if hasattr(grad, "data") and hasattr(grad, "_node") else grad
        grad = root.device.asarray(grad, dtype=root.dtype)
        if grad.shape != root.shape:
            raise ValueError(f"grad must have the shape of the tensor {root.shape}, but got {grad.shape}")
    # the buffers a leaf may not keep as its .grad: those another leaf holds, and the caller's gradient
    # (a leaf it reaches unchanged, through a reshape say, gets a copy; no pass copies it up front)
    held: set[int] = {id(_owner(grad))}
    if root._node is None:
        _accumulate_leaf(root, grad, held)
        return
    pending = {id(root): grad}  # gradients flowing into non-leaf tensors, keyed by id
    with np.errstate(all="ignore"):  # inf and NaN are answers, as in PyTorch: no warning
        _backward_pass(root._node, pending, held)


def _backward_pass(root: Function, pending: dict[int, Any], held: set[int]) -> None:
    """Hand each node, last made first, the gradients of its outputs; pass its inputs' ones on."""
    for node in reversed(_topological_order(root)):
        grad_outputs = tuple(_pop_grad(pending, ref()) for ref in node.outputs)
        if all(g is None for g in grad_outputs):
            continue
        grad_inputs = node.backward(*grad_outputs)
        if not isinstance(grad_inputs, tuple):
            grad_inputs = (grad_inputs,)
        for tensor, needed, g in zip(node.inputs, node.needs_input_grad, grad_inputs, strict=False):
            if not needed or g is None:
                continue
            g = g.astype(tensor.dtype, copy=False)  # as PyTorch: a gradient has its tensor's dtype (f32 + f64)
            if tensor._node is None:
                _accumulate_leaf(tensor, g, held)
            elif id(tensor) in pending:
                pending[id(tensor)] = pending[id(tensor)] + g
            else:
                pending[id(tensor)] = g


def _pop_grad(pending: dict[int, Any], tensor: Tensor | None) -> Any:
    return None if tensor is None else pending.pop(id(tensor), None)


def _accumulate_leaf(leaf: Tensor, grad: Any, held: set[int]) -> None:
    """Add ``grad`` into ``leaf.grad``. A leaf's first gradient keeps the array it was handed (no copy:
    every gradient array of a pass is the engine's own) unless another leaf already holds that buffer,
    so no two leaves ever share one; later ones are added out of place."""
    from minicv.tensor import Tensor

    grad = grad.astype(leaf.dtype, copy=False)
    if leaf.grad is None:
        buffer = _owner(grad)
        if id(buffer) in held:
            grad, buffer = grad.copy(), None
        held.add(id(buffer if buffer is not None else grad))
        leaf.grad = Tensor._wrap(grad, leaf.device, False, None)
    else:
        leaf.grad.data = leaf.grad.data + grad


def _owner(array: Any) -> Any:
    """The array that owns ``array``'s memory (itself unless it is a view)."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _topological_order(root: Function) -> list[Function]:
    """Nodes ordered so that each comes after every node that made one of its inputs (iterative DFS)."""
    order: list[Function] = []
    visited: set[int] = set()
    stack: list[tuple[Function, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for tensor in node.inputs:
            parent = getattr(tensor, "_node", None)
            if parent is not None and id(parent) not in visited:
                stack.append((parent, False))
    return order
