"""The problems: one class per op at one size, its three ways to run (minicv op, PyTorch, kernels) side by
side; ``RegistryProblem`` times any other op of the registry (minicv/ops.py) on its timing case."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

import minicv
import minicv.functional as F
from minicv.bench.steps import STEPS
from minicv.functional.conv import conv_output_hw, conv_transpose_output_hw
from minicv.ops import OPS, Case
from minicv.tensor import Tensor

if TYPE_CHECKING:
    from minicv.bench.backends import BenchBackend
    from minicv.bench.cases import BenchCase


Pair = tuple[int, int]
ONE: Pair = (1, 1)
ZERO: Pair = (0, 0)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Problem:
    """One op at one size. ``arrays`` holds its inputs and ``gy``, the upstream gradient of its output."""

    op: ClassVar[str] = ""  # the minicv.functional / torch.nn.functional name
    bound: ClassVar[str] = "memory"  # "compute": rate in GFLOP/s; "memory": rate in GB/s
    differentiable: ClassVar[tuple[str, ...]] = ("x",)  # the inputs that get gradients
    kernel_path: ClassVar[bool] = True  # whether a "kernels" path (the kernel-table calls alone) exists
    has_torch: ClassVar[bool] = True  # whether PyTorch has the op (a "torch" path, the ratios' baseline)
    devices: ClassVar[tuple[str, ...] | None] = None  # the minicv devices it runs on (None: every one)
    budget_scale: ClassVar[float] = 1.0  # times the plan's time budget: more repeats for a noisy headline figure

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def minicv(self, t: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def torch(self, t: dict[str, Any]) -> Any:
        raise NotImplementedError

    def kernel_forward(self, k: Any, a: dict[str, Any]) -> Any:
        """The forward kernels; returns what the backward kernels need."""
        raise NotImplementedError

    def kernel_backward(self, k: Any, a: dict[str, Any], saved: Any) -> tuple[Any, ...]:
        """The backward kernels for upstream gradient ``gy``; the gradients of ``differentiable``, in order."""
        raise NotImplementedError

    def work(self, backward: bool, itemsize: int) -> float:
        """Floating-point operations (compute-bound) or bytes moved (memory-bound) of one pass."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError

    def step(self, path: str, case: BenchCase, backend: BenchBackend,
             arrays: dict[str, np.ndarray]) -> Callable[[], Any]:
        """One run of the case through ``path`` ("op", "kernels" or "torch"), as a no-argument callable."""
        return STEPS[path](case, backend, arrays)


def _nbytes(itemsize: int, *shapes: tuple[int, ...]) -> int:
    return itemsize * sum(math.prod(s) for s in shapes)


@dataclass(frozen=True)
class Conv2dProblem(Problem):
    n: int
    c_in: int
    c_out: int
    hw: int
    k: int = 3
    stride: int = 1
    padding: int = 1
    op = "conv2d"
    bound = "compute"
    differentiable = ("x", "w")

    @property
    def out_hw(self) -> int:
        return conv_output_hw((self.hw, self.hw), (self.k, self.k), *self._hyper()[:3])[0]

    @property
    def label(self) -> str:
        return f"conv{self.k}x{self.k} s{self.stride} N{self.n} {self.c_in}->{self.c_out} {self.hw}x{self.hw}"

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        return {
            "x": rng.standard_normal((self.n, self.c_in, self.hw, self.hw), dtype),
            "w": rng.standard_normal((self.c_out, self.c_in, self.k, self.k), dtype) * 0.1,
            "gy": rng.standard_normal((self.n, self.c_out, self.out_hw, self.out_hw), dtype),
        }

    def minicv(self, t: dict[str, Tensor]) -> Tensor:
        return F.conv2d(t["x"], t["w"], stride=self.stride, padding=self.padding)

    def torch(self, t: dict[str, Any]) -> Any:
        import torch.nn.functional as TF

        return TF.conv2d(t["x"], t["w"], stride=self.stride, padding=self.padding)

    def _hyper(self) -> tuple[Pair, Pair, Pair, int]:
        return (self.stride, self.stride), (self.padding, self.padding), ONE, 1

    def kernel_forward(self, k: Any, a: dict[str, Any]) -> Any:
        return k.conv2d_forward(a["x"], a["w"], (self.out_hw, self.out_hw), *self._hyper())

    def kernel_backward(self, k: Any, a: dict[str, Any], saved: Any) -> tuple[Any, ...]:
        return (k.conv2d_backward_input(a["gy"], a["w"], a["x"].shape, *self._hyper()),
                k.conv2d_backward_weight(a["x"], a["gy"], a["w"].shape, *self._hyper()))

    def work(self, backward: bool, itemsize: int) -> float:
        macs = self.n * self.c_out * self.out_hw**2 * self.c_in * self.k**2
        return 2 * macs * (3 if backward else 1)  # backward: one GEMM's worth for the input, one for the weight


@dataclass(frozen=True)
class ConvTranspose2dProblem(Problem):
    n: int
    c_in: int
    c_out: int
    hw: int
    k: int = 4
    stride: int = 2
    padding: int = 1
    op = "conv_transpose2d"
    bound = "compute"
    differentiable = ("x", "w")

    @property
    def out_hw(self) -> int:
        return conv_transpose_output_hw((self.hw, self.hw), (self.k, self.k), *self._hyper()[:3], (0, 0))[0]

    @property
    def label(self) -> str:
        return (f"conv_transpose{self.k}x{self.k} s{self.stride} p{self.padding} N{self.n} "
                f"{self.c_in}->{self.c_out} {self.hw}->{self.out_hw}")

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        return {
            "x": rng.standard_normal((self.n, self.c_in, self.hw, self.hw), dtype),
            "w": rng.standard_normal((self.c_in, self.c_out, self.k, self.k), dtype) * 0.1,
            "gy": rng.standard_normal((self.n, self.c_out, self.out_hw, self.out_hw), dtype),
        }

    def minicv(self, t: dict[str, Tensor]) -> Tensor:
        return F.conv_transpose2d(t["x"], t["w"], stride=self.stride, padding=self.padding)

    def torch(self, t: dict[str, Any]) -> Any:
        import torch.nn.functional as TF

        return TF.conv_transpose2d(t["x"], t["w"], stride=self.stride, padding=self.padding)

    def _hyper(self) -> tuple[Pair, Pair, Pair, int]:
        return (self.stride, self.stride), (self.padding, self.padding), ONE, 1

    def kernel_forward(self, k: Any, a: dict[str, Any]) -> Any:
        return k.conv2d_backward_input(a["x"], a["w"], a["gy"].shape, *self._hyper())

    def kernel_backward(self, k: Any, a: dict[str, Any], saved: Any) -> tuple[Any, ...]:
        # The duals: gx is the conv2d of gy; gy plays the conv's input for the weight gradient.
        return (k.conv2d_forward(a["gy"], a["w"], a["x"].shape[2:], *self._hyper()),
                k.conv2d_backward_weight(a["gy"], a["x"], a["w"].shape, *self._hyper()))

    def work(self, backward: bool, itemsize: int) -> float:
        macs = self.n * self.c_in * self.hw**2 * self.c_out * self.k**2
        return 2 * macs * (3 if backward else 1)


@dataclass(frozen=True)
class MaxPool2dProblem(Problem):
    """max_pool2d with return_indices=True (kernel = stride, no padding)."""

    n: int
    c: int
    hw: int
    k: int = 2
    op = "max_pool2d"

    @property
    def label(self) -> str:
        return f"max_pool2d {self.k}x{self.k} N{self.n} C{self.c} {self.hw}x{self.hw}"

    @property
    def _shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.n, self.c, self.hw, self.hw), (self.n, self.c, self.hw // self.k, self.hw // self.k)

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        x_shape, y_shape = self._shapes
        return {"x": rng.standard_normal(x_shape, dtype), "gy": rng.standard_normal(y_shape, dtype)}

    def minicv(self, t: dict[str, Tensor]) -> Tensor:
        return F.max_pool2d(t["x"], self.k, return_indices=True)[0]

    def torch(self, t: dict[str, Any]) -> Any:
        import torch.nn.functional as TF

        return TF.max_pool2d(t["x"], self.k, return_indices=True)[0]

    def _hyper(self) -> tuple[Pair, Pair, Pair, Pair]:
        return (self.k, self.k), (self.k, self.k), ZERO, ONE

    def kernel_forward(self, k: Any, a: dict[str, Any]) -> Any:
        out_hw = self._shapes[1][2:]
        return k.max_pool2d_forward(a["x"], *self._hyper(), out_hw)

    def kernel_backward(self, k: Any, a: dict[str, Any], saved: Any) -> tuple[Any, ...]:
        _, indices = saved
        return (k.unpool_scatter(a["gy"], indices, (self.hw, self.hw), self._hyper()),)

    def work(self, backward: bool, itemsize: int) -> float:
        x_shape, y_shape = self._shapes
        forward = _nbytes(itemsize, x_shape, y_shape) + _nbytes(8, y_shape)  # x read; y, int64 indices written
        return forward + (_nbytes(itemsize, y_shape, x_shape) if backward else 0)  # gy read, gx written


@dataclass(frozen=True)
class MaxUnpool2dProblem(Problem):
    """max_unpool2d of a k x k max pool's values and indices back to hw x hw."""

    n: int
    c: int
    hw: int
    k: int = 2
    op = "max_unpool2d"

    @property
    def label(self) -> str:
        return f"max_unpool2d {self.k}x{self.k} N{self.n} C{self.c} {self.hw // self.k}->{self.hw}"

    @property
    def _shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.n, self.c, self.hw // self.k, self.hw // self.k), (self.n, self.c, self.hw, self.hw)

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        pooled_shape, out_shape = self._shapes
        # Each window's maximum at a random tap (di, dj): flat offset (k*i + di) * hw + k*j + dj.
        rows = self.k * np.arange(pooled_shape[2])[:, None] + rng.integers(0, self.k, pooled_shape)
        cols = self.k * np.arange(pooled_shape[3]) + rng.integers(0, self.k, pooled_shape)
        return {
            "x": rng.standard_normal(pooled_shape, dtype),
            "indices": (rows * self.hw + cols).astype(np.int64),
            "gy": rng.standard_normal(out_shape, dtype),
        }

    def minicv(self, t: dict[str, Tensor]) -> Tensor:
        return F.max_unpool2d(t["x"], t["indices"], self.k, output_size=(self.hw, self.hw))

    def torch(self, t: dict[str, Any]) -> Any:
        import torch.nn.functional as TF

        return TF.max_unpool2d(t["x"], t["indices"], (self.k, self.k), output_size=(self.hw, self.hw))

    def kernel_forward(self, k: Any, a: dict[str, Any]) -> Any:
        return k.unpool_scatter(a["x"], a["indices"], (self.hw, self.hw))

    def kernel_backward(self, k: Any, a: dict[str, Any], saved: Any) -> tuple[Any, ...]:
        return (k.unpool_gather(a["gy"], a["indices"]),)

    def work(self, backward: bool, itemsize: int) -> float:
        pooled_shape, out_shape = self._shapes
        forward = _nbytes(itemsize, pooled_shape, out_shape) + _nbytes(8, pooled_shape)
        return forward + (_nbytes(itemsize, out_shape, pooled_shape) if backward else 0)


@dataclass(frozen=True)
class NearestProblem(Problem):
    """interpolate(mode='nearest', scale_factor=scale)."""

    n: int
    c: int
    hw: int
    scale: int = 2
    op = "interpolate"

    @property
    def label(self) -> str:
        return f"nearest x{self.scale} N{self.n} C{self.c} {self.hw}->{self.hw * self.scale}"

    @property
    def _shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        out = self.hw * self.scale
        return (self.n, self.c, self.hw, self.hw), (self.n, self.c, out, out)

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        x_shape, y_shape = self._shapes
        src = np.arange(self.hw * self.scale, dtype=np.int64) // self.scale  # floor(dst * in / out)
        return {"x": rng.standard_normal(x_shape, dtype), "gy": rng.standard_normal(y_shape, dtype), "src": src}

    def minicv(self, t: dict[str, Tensor]) -> Tensor:
        return F.interpolate(t["x"], scale_factor=self.scale, mode="nearest")

    def torch(self, t: dict[str, Any]) -> Any:
        import torch.nn.functional as TF

        return TF.interpolate(t["x"], scale_factor=self.scale, mode="nearest")

    def kernel_forward(self, k: Any, a: dict[str, Any]) -> Any:
        return k.upsample_nearest_forward(a["x"], a["src"], a["src"])

    def kernel_backward(self, k: Any, a: dict[str, Any], saved: Any) -> tuple[Any, ...]:
        return (k.upsample_nearest_backward(a["gy"], a["src"], a["src"], (self.hw, self.hw)),)

    def work(self, backward: bool, itemsize: int) -> float:
        x_shape, y_shape = self._shapes
        return _nbytes(itemsize, x_shape, y_shape) * (2 if backward else 1)  # backward: gy read, gx written


@dataclass(frozen=True)
class CrossEntropyProblem(Problem):
    """cross_entropy(x, target) per pixel, reduction='mean'."""

    n: int
    classes: int
    hw: int
    op = "cross_entropy"

    @property
    def label(self) -> str:
        return f"cross_entropy N{self.n} C{self.classes} {self.hw}x{self.hw}"

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        pixels = self.n * self.hw * self.hw
        return {
            "x": rng.standard_normal((self.n, self.classes, self.hw, self.hw), dtype),
            "target": rng.integers(0, self.classes, (self.n, self.hw, self.hw)),
            "weight": np.ones(self.classes, dtype),
            "g": np.full((self.n, self.hw * self.hw), 1 / pixels, dtype),  # d mean / d loss[n, p]
        }

    def minicv(self, t: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(t["x"], t["target"])

    def torch(self, t: dict[str, Any]) -> Any:
        import torch.nn.functional as TF

        return TF.cross_entropy(t["x"], t["target"])

    def _flat(self, a: dict[str, Any]) -> tuple[Any, Any, Any, int, float]:
        pixels = self.hw * self.hw
        return a["x"].reshape(self.n, self.classes, pixels), a["target"].reshape(self.n, pixels), a["weight"], \
            IGNORE_INDEX, 0.0

    def kernel_forward(self, k: Any, a: dict[str, Any]) -> Any:
        return k.softmax_cross_entropy_forward(*self._flat(a))

    def kernel_backward(self, k: Any, a: dict[str, Any], saved: Any) -> tuple[Any, ...]:
        _, stats = saved
        return (k.softmax_cross_entropy_backward(*self._flat(a), stats, a["g"]).reshape(a["x"].shape),)

    def work(self, backward: bool, itemsize: int) -> float:
        x_shape = (self.n, self.classes, self.hw, self.hw)
        forward = _nbytes(itemsize, x_shape) + _nbytes(8, x_shape[:1] + x_shape[2:])  # logits, int64 targets
        return forward + (_nbytes(itemsize, x_shape) if backward else 0)  # gx written


@dataclass(frozen=True)
class RegistryProblem(Problem):
    """An op of the registry (minicv/ops.py) that no problem class above times, on the ``timing`` case of its
    entry: through minicv and through PyTorch's same call (no kernels path). Its rate counts the bytes of
    its inputs and output once, twice with the backward (the gradients written, gy read)."""

    name: str

    kernel_path = False

    @property
    def op(self) -> str:  # type: ignore[override]  # an instance's op: the registry entry it times
        return self.name

    @property
    def case(self) -> Case:
        case = OPS[self.name].timing_case()
        if case is None:
            raise ValueError(f"minicv bench: op {self.name!r} of the registry has no case with timing=True")
        return case

    @property
    def has_torch(self) -> bool:  # type: ignore[override]
        return self.case.torch

    @functools.cached_property
    def _shapes(self) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...], tuple[int, ...]]:
        """(the shapes of the differentiable inputs, the names of the fixed ones, the output's shape)."""
        inputs, fixed = self.case.make(np.random.default_rng(0))
        with minicv.no_grad():
            out = self.case.call(F, *(Tensor(a, device="numpy") for a in inputs),
                                 **{k: Tensor(v, device="numpy") for k, v in fixed.items()})
        return tuple(a.shape for a in inputs), tuple(fixed), tuple(out.shape)

    @property
    def differentiable(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"input{i}" for i in range(len(self._shapes[0])))

    @property
    def label(self) -> str:
        return self.case.label.removeprefix("timing: ")

    def arrays(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        inputs, fixed = self.case.make(rng)
        named = zip(self.differentiable, inputs, strict=True)
        arrays: dict[str, np.ndarray] = {name: a.astype(dtype) for name, a in named}
        arrays.update({k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in fixed.items()})
        return {**arrays, "gy": rng.standard_normal(self._shapes[2]).astype(dtype)}

    def _call(self, f: Any, t: dict[str, Any]) -> Any:
        return self.case.call(f, *(t[name] for name in self.differentiable), **{k: t[k] for k in self._shapes[1]})

    def minicv(self, t: dict[str, Tensor]) -> Tensor:
        return self._call(F, t)

    def torch(self, t: dict[str, Any]) -> Any:
        import torch.nn.functional as TF

        return self._call(TF, t)

    def work(self, backward: bool, itemsize: int) -> float:
        inputs, _, out = self._shapes
        return _nbytes(itemsize, *inputs, out) * (2 if backward else 1)
