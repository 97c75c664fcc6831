"""minicv.functional's losses against PyTorch, on every device: cross_entropy (class indices on the
softmax_cross_entropy kernels, probabilities on xp ops), smooth_l1_loss, l1_loss and mse_loss.

Values and gradients are compared with torch on hypothesis-drawn configurations (weights, ignore_index,
smoothing, reductions, ranks) and on PyTorch's OpInfo samples; the degenerate reductions and every
validation error of the reference (torch_semantics.md sections 6 and 7) are tested; gradcheck in float64.
"""

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import minicv as mc
import minicv.functional as F
from minicv.errors import ArgumentError, DtypeError, OutOfRangeError
from minicv.gradcheck import gradcheck
from tests.functional.test_pooling import (
    SETTINGS,
    as_numpy,
    compare_with_torch,
    dtypes,
    opinfo,
    opinfo_samples,
    seeds,
    to_minicv,
)
from tests.reference import assert_close

REDUCTIONS = ("none", "mean", "sum")


# --------------------------------------------------------------------------- cross_entropy against torch
@st.composite
def class_index_cases(draw):
    """(logits shape, target shape, kwargs, use weight) over every rank cross_entropy takes."""
    classes = draw(st.integers(1, 4))
    rank = draw(st.sampled_from([1, 2, 3, 4, 5]))
    batch = draw(st.integers(0 if rank > 1 else 1, 3))
    spatial = tuple(draw(st.integers(1, 3)) for _ in range(max(rank - 2, 0)))
    shape = (classes,) if rank == 1 else (batch, classes, *spatial)
    target_shape = () if rank == 1 else (batch, *spatial)
    kwargs = {"reduction": draw(st.sampled_from(REDUCTIONS)),
              "ignore_index": draw(st.sampled_from([-100, 0, classes - 1, 7])),
              "label_smoothing": draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, -0.2]))}
    return shape, target_shape, kwargs, draw(st.booleans())


@SETTINGS
@given(case=class_index_cases(), dtype=dtypes, seed=seeds, ignored=st.floats(0, 1))
def test_cross_entropy_class_indices_match_torch(device, case, dtype, seed, ignored):
    shape, target_shape, kwargs, use_weight = case
    rng = np.random.default_rng(seed)
    classes = shape[0] if len(shape) == 1 else shape[1]
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    target = rng.integers(0, classes, target_shape)
    target = np.where(rng.random(target_shape) < ignored, kwargs["ignore_index"], target)  # some ignored
    weight = rng.random(classes).astype(dtype) if use_weight else None
    arrays, grad = [x, target], (True, False)
    if weight is not None:
        arrays, grad = [*arrays, weight], (*grad, False)  # a class weight gets no gradient (as in PyTorch)
    compare_with_torch(lambda *a: F.cross_entropy(*a, **kwargs), lambda *a: TF.cross_entropy(*a, **kwargs), arrays,
                       device, seed, grad=grad)


@SETTINGS
@given(shape=st.sampled_from([(3,), (2, 4), (2, 3, 2), (1, 2, 2, 3)]), reduction=st.sampled_from(REDUCTIONS),
       smoothing=st.sampled_from([0.0, 0.3, -0.1]), use_weight=st.booleans(), dtype=dtypes, seed=seeds)
def test_cross_entropy_probabilities_match_torch(device, shape, reduction, smoothing, use_weight, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    class_dim = 0 if len(shape) == 1 else 1
    probabilities = np.exp(x) / np.exp(x).sum(axis=class_dim, keepdims=True)
    target = rng.permuted(probabilities, axis=class_dim).astype(dtype)
    kwargs = {"reduction": reduction, "label_smoothing": smoothing}
    arrays = [x, target] + ([rng.random(shape[class_dim]).astype(dtype)] if use_weight else [])
    compare_with_torch(lambda *a: F.cross_entropy(*a, **kwargs), lambda *a: TF.cross_entropy(*a, **kwargs), arrays,
                       device, seed, grad=(True, True, False)[: len(arrays)])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_all_targets_ignored(device, reduction, smoothing, weighted):
    """Every target ignored: 'mean' is NaN (0 / 0) with a zero gradient; 'sum' 0; 'none' zeros."""
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2))
    target = np.full((2, 2, 2), -100)
    arrays = [x, target] + ([np.array([1.0, 2.0, 3.0])] if weighted else [])
    kwargs = {"reduction": reduction, "label_smoothing": smoothing}
    compare_with_torch(lambda *a: F.cross_entropy(*a, **kwargs), lambda *a: TF.cross_entropy(*a, **kwargs), arrays,
                       device, 0, grad=(True, False, False)[: len(arrays)])
    y = F.cross_entropy(mc.tensor(x, device=device), mc.tensor(target, device=device), reduction=reduction)
    assert np.isnan(y.numpy()) if reduction == "mean" else not np.any(y.numpy())


def test_cross_entropy_zero_weight_targets(device):
    """Non-ignored targets whose classes all weigh 0: 'mean' is NaN, and so is their gradient."""
    x = np.random.default_rng(1).standard_normal((2, 3, 2))
    target = np.array([[0, -100], [0, 0]])
    compare_with_torch(lambda *a: F.cross_entropy(*a), lambda *a: TF.cross_entropy(*a),
                       [x, target, np.array([0.0, 1.0, 1.0])], device, 0, grad=(True, False, False))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_empty_batch(device, reduction):
    x = mc.zeros(0, 3, 2, 2, dtype=np.float64, device=device, requires_grad=True)
    y = F.cross_entropy(x, mc.tensor(np.zeros((0, 2, 2), np.int64), device=device), reduction=reduction)
    expected = TF.cross_entropy(torch.zeros(0, 3, 2, 2, dtype=torch.float64), torch.zeros(0, 2, 2, dtype=torch.long),
                                reduction=reduction)
    assert_close(y.detach().numpy(), expected, np.float64)


def test_cross_entropy_ignore_index_inside_the_classes(device):
    """An in-range ignore_index class still counts in every other pixel's softmax (issue #63004)."""
    x = np.random.default_rng(2).standard_normal((4, 3))
    compare_with_torch(lambda *a: F.cross_entropy(*a, ignore_index=1), lambda *a: TF.cross_entropy(*a, ignore_index=1),
                       [x, np.array([1, 0, 2, 1])], device, 0, grad=(True, False))


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_float32_gradient_of_large_logits_is_as_exact_as_torch(device, smoothing):
    """Confident pixels (logits ~40, ulp 4e-6 in float32): the softmax comes from (x - max) - log_sum, not
    from a rounded logsumexp, so the float32 gradient is within PyTorch's own error of the exact one."""
    rng = np.random.default_rng(4)
    x = (15 * rng.standard_normal((2, 21, 8, 8))).astype(np.float32)
    x[:, 3] += 40
    target = rng.integers(0, 21, (2, 8, 8))
    exact = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    TF.cross_entropy(exact, torch.from_numpy(target), reduction="sum", label_smoothing=smoothing).backward()
    ours = mc.tensor(x, device=device, requires_grad=True)
    F.cross_entropy(ours, mc.tensor(target, device=device), reduction="sum", label_smoothing=smoothing).backward()
    np.testing.assert_allclose(ours.grad.to("numpy").numpy(), exact.grad.numpy(), rtol=0, atol=5e-7)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_gradcheck(device, smoothing):
    x = mc.tensor(np.random.default_rng(3).standard_normal((2, 4, 2, 3)), device=device, requires_grad=True)
    target = mc.tensor(np.array([[[0, 1, 3], [2, -100, 1]], [[3, 3, 0], [1, 2, 2]]]), device=device)
    weight = mc.tensor(np.array([0.5, 1.0, 2.0, 0.1]), device=device)
    assert gradcheck(lambda a: F.cross_entropy(a, target, weight, label_smoothing=smoothing), [x])
    probabilities = mc.tensor(np.full((2, 4, 2, 3), 0.25), device=device, requires_grad=True)
    assert gradcheck(lambda a, p: F.cross_entropy(a, p, label_smoothing=smoothing), [x, probabilities])


def test_cross_entropy_opinfo_samples(device):
    samples = opinfo_samples("nn.functional.cross_entropy")
    assert samples
    for i, (x, args, kwargs) in enumerate(samples):
        target, *rest = args
        torch_kwargs = dict(kwargs)
        weight = torch_kwargs.pop("weight", None)
        arrays = [as_numpy(x), as_numpy(target)] + ([as_numpy(weight)] if weight is not None else [])
        grad = (True, as_numpy(target).dtype.kind == "f", False)[: len(arrays)]
        compare_with_torch(with_optional_weight(F.cross_entropy, *rest, **torch_kwargs),
                           with_optional_weight(TF.cross_entropy, *rest, **torch_kwargs), arrays, device, i, grad=grad)


def with_optional_weight(fn, *rest, **kwargs):
    """fn(input, target, *rest, **kwargs), with a third array (if any) passed as the keyword ``weight``."""

    def call(x, target, weight=None):
        return fn(x, target, *rest, **kwargs, **({} if weight is None else {"weight": weight}))

    return call


# --------------------------------------------------------------------------- cross_entropy errors
def z(*shape, dtype=np.float32):
    return mc.zeros(*shape, dtype=dtype)


def labels(*shape, value=0, dtype=np.int64):
    return mc.tensor(np.full(shape, value, dtype=dtype))


CE_ERRORS = {
    "target dtype (class path)": (lambda: F.cross_entropy(z(2, 3), labels(2, dtype=np.float32)), DtypeError,
                                  "expected target dtype to be Long or Byte, but got Float"),
    "uint8 target for 4-D input": (lambda: F.cross_entropy(z(2, 3, 2, 2), labels(2, 2, 2, dtype=np.uint8)), DtypeError,
                                   "expected scalar type Long but found Byte"),
    "probability target not float": (lambda: F.cross_entropy(z(2, 3), labels(2, 3)), DtypeError,
                                     "Expected floating point type for target with class probabilities, got Long"),
    "probability target with ignore_index": (lambda: F.cross_entropy(z(2, 3), z(2, 3), ignore_index=1), ArgumentError,
                                             "ignore_index is not supported for floating point target"),
    "batch mismatch": (lambda: F.cross_entropy(z(2, 3, 2, 2), labels(3, 2, 2)), ArgumentError,
                       re.escape("Expected input batch_size (2) to match target batch_size (3).")),
    "target not 3-D for 4-D input": (lambda: F.cross_entropy(z(2, 3, 2, 2), labels(2, 2)), ArgumentError,
                                     re.escape("only batches of spatial targets supported (3D tensors) but got "
                                               "targets of dimension: 2")),
    "spatial mismatch": (lambda: F.cross_entropy(z(2, 3, 2, 2), labels(2, 2, 3)), ArgumentError,
                         re.escape("size mismatch (got input: [2, 3, 2, 2] , target: [2, 2, 3]")),
    "k-D spatial mismatch": (lambda: F.cross_entropy(z(2, 3, 4), labels(2, 5)), ArgumentError,
                             re.escape("Expected target size [2, 4], got [2, 5]")),
    "multi-target": (lambda: F.cross_entropy(z(2, 3), labels(2, 2)), ArgumentError,
                     "0D or 1D target tensor expected, multi-target not supported"),
    "1-D input, long target": (lambda: F.cross_entropy(z(3), labels(2)), ArgumentError,
                               "For 1D input, 1D target must have size 1, but got target size: 2"),
    "0-D input": (lambda: F.cross_entropy(z(), labels(1)), ArgumentError, re.escape("Expected 1 or more dimensions")),
    "weight size (2-D)": (lambda: F.cross_entropy(z(2, 3), labels(2), weight=z(2)), ArgumentError,
                          re.escape("weight tensor should be defined either for all 3 classes or no classes but got "
                                    "weight tensor of shape: [2]")),
    "weight size (4-D)": (lambda: F.cross_entropy(z(2, 3, 2, 2), labels(2, 2, 2), weight=z(2)), ArgumentError,
                          "weight tensor should be defined either for all or no classes"),
    "weight size (probabilities)": (lambda: F.cross_entropy(z(2, 3), z(2, 3), weight=z(2)), ArgumentError,
                                    re.escape("cross_entropy: weight tensor should be defined either for all 3 classes "
                                              "or no classes but got weight tensor of shape: [2]")),
    "weight dtype": (lambda: F.cross_entropy(z(2, 3, 2, 2), labels(2, 2, 2), weight=z(3, dtype=np.float64)), DtypeError,
                     "expected scalar type Float but found Double"),
    "reduction": (lambda: F.cross_entropy(z(2, 3), labels(2), reduction="avg"), ArgumentError,
                  "avg is not a valid value for reduction"),
    "integer logits": (lambda: F.cross_entropy(labels(2, 3), labels(2)), DtypeError, "cross_entropy"),
    "target out of bounds": (lambda: F.cross_entropy(z(2, 3), mc.tensor(np.array([1, 3]))), OutOfRangeError,
                             "Target 3 is out of bounds."),
    "target out of bounds, reduction none": (lambda: F.cross_entropy(z(2, 3), mc.tensor(np.array([1, 3])),
                                                                     reduction="none"),
                                             OutOfRangeError, "Target 3 is out of bounds."),
    "-100 out of bounds when not ignored": (lambda: F.cross_entropy(z(2, 3), labels(2, value=-100), ignore_index=5),
                                            OutOfRangeError, "Target -100 is out of bounds."),
    "label_smoothing above 1": (lambda: F.cross_entropy(z(2, 3), labels(2), label_smoothing=1.5), ArgumentError,
                                re.escape("label_smoothing must be between 0.0 and 1.0. Got: 1.5")),
    "label_smoothing above 1 (probabilities)": (lambda: F.cross_entropy(z(2, 3), z(2, 3), label_smoothing=1.5),
                                                ArgumentError, "label_smoothing must be between 0.0 and 1.0"),
    "float ignore_index": (lambda: F.cross_entropy(z(2, 3), labels(2), ignore_index=1.5), TypeError, "ignore_index"),
}


@pytest.mark.parametrize("name", list(CE_ERRORS))
def test_cross_entropy_errors(name):
    call, error, pattern = CE_ERRORS[name]
    with pytest.raises(error, match=pattern):
        call()


def test_negative_label_smoothing_is_ignored():
    x, target = z(2, 3) + mc.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3)), labels(2)
    assert F.cross_entropy(x, target, label_smoothing=-0.5).item() == F.cross_entropy(x, target).item()


def test_legacy_size_average_and_reduce():
    x = mc.tensor(np.arange(6.0).reshape(2, 3))
    with pytest.warns(UserWarning, match="reduction='sum'"):
        y = F.cross_entropy(x, labels(2), size_average=False)
    assert_close(y.numpy(), TF.cross_entropy(torch.arange(6.0, dtype=torch.float64).reshape(2, 3),
                                             torch.zeros(2, dtype=torch.long), reduction="sum"), np.float64)


# --------------------------------------------------------------------------- smooth L1, L1, MSE
LOSSES = {"smooth_l1_loss": (F.smooth_l1_loss, TF.smooth_l1_loss), "l1_loss": (F.l1_loss, TF.l1_loss),
          "mse_loss": (F.mse_loss, TF.mse_loss)}
BROADCASTS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), ()), ((5,), ()), ((0, 3), (0, 3))]


@SETTINGS
@given(loss=st.sampled_from(list(LOSSES)), shapes=st.sampled_from(BROADCASTS), reduction=st.sampled_from(REDUCTIONS),
       beta=st.sampled_from([1.0, 0.25, 0.0, 3.0]), weighted=st.booleans(), dtype=dtypes, seed=seeds)
def test_elementwise_losses_match_torch(device, loss, shapes, reduction, beta, weighted, dtype, seed):
    rng = np.random.default_rng(seed)
    x, target = (rng.standard_normal(s).astype(dtype) for s in shapes)
    kwargs = {"reduction": reduction}
    arrays = [x, target]
    if loss == "smooth_l1_loss":
        kwargs["beta"] = beta
    elif weighted:  # l1/mse take an optional weight of the input's shape (differentiable, as in PyTorch)
        arrays.append(rng.random(shapes[0]).astype(dtype))
    ours, theirs = LOSSES[loss]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        compare_with_torch(with_optional_weight(ours, **kwargs), with_optional_weight(theirs, **kwargs), arrays,
                           device, seed)


def test_smooth_l1_at_beta_boundary(device):
    """|z| == beta: the linear branch, gradient +-1 (PyTorch's)."""
    x = np.array([1.0, -1.0, 0.5, 0.0, 2.0])
    compare_with_torch(lambda a, b: F.smooth_l1_loss(a, b, reduction="none"),
                       lambda a, b: TF.smooth_l1_loss(a, b, reduction="none"), [x, np.zeros(5)], device, 0)


def test_broadcast_warning():
    with pytest.warns(UserWarning, match=re.escape("Using a target size ((4,)) that is different to the input size "
                                                   "((3, 4))")):
        F.mse_loss(z(3, 4), z(4))


@pytest.mark.parametrize("loss", list(LOSSES))
def test_elementwise_losses_gradcheck(device, loss):
    rng = np.random.default_rng(4)
    x = mc.tensor(rng.standard_normal((3, 4)), device=device, requires_grad=True)
    target = mc.tensor(rng.standard_normal((4,)), device=device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert gradcheck(lambda a, b: LOSSES[loss][0](a, b), [x, target])
        assert gradcheck(lambda a, b: LOSSES[loss][0](a, b, reduction="none"), [x, target])


@pytest.mark.parametrize("loss", ["smooth_l1_loss", "mse_loss", "l1_loss"])
def test_elementwise_opinfo_samples(device, loss):
    samples = opinfo_samples(f"nn.functional.{loss}")
    assert samples
    for i, (x, args, kwargs) in enumerate(samples):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            compare_with_torch(with_optional_weight(LOSSES[loss][0], **kwargs),
                               with_optional_weight(LOSSES[loss][1], **kwargs),
                               [as_numpy(x), as_numpy(args[0])], device, i)


def test_l1_loss_opinfo_error_inputs():
    errors = list(opinfo("nn.functional.l1_loss").error_inputs(device="cpu"))
    assert errors
    for error in errors:
        sample = error.sample_input
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with pytest.raises(error.error_type, match=error.error_regex):
                F.l1_loss(to_minicv(sample.input, "numpy"), *(to_minicv(a, "numpy") for a in sample.args),
                          **sample.kwargs)


ELEMENTWISE_ERRORS = {
    "negative beta": (lambda: F.smooth_l1_loss(z(3), z(3), beta=-1.0), ArgumentError,
                      "smooth_l1_loss does not support negative values for beta."),
    "not broadcastable": (lambda: F.mse_loss(z(5, 4), z(5)), ArgumentError,
                          re.escape("The size of tensor a (4) must match the size of tensor b (5) at non-singleton "
                                    "dimension 1")),
    "reduction": (lambda: F.smooth_l1_loss(z(3), z(3), reduction="avg"), ArgumentError,
                  "avg is not a valid value for reduction"),
    "weight shape": (lambda: F.mse_loss(z(3), z(3), weight=z(2)), ArgumentError, "Weights and input must have the "
                     "same size."),
    "weighted reduction": (lambda: F.mse_loss(z(3), z(3), reduction="avg", weight=z(3)), ArgumentError,
                           re.escape("Invalid reduction mode: avg. Expected one of 'none', 'mean', 'sum'.")),
    "integer input": (lambda: F.mse_loss(labels(3), labels(3)), DtypeError, "mse_loss"),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE_ERRORS))
def test_elementwise_errors(name):
    call, error, pattern = ELEMENTWISE_ERRORS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the one warning expected is PyTorch's, for a target of another size
        warnings.filterwarnings("ignore", "Using a target size", UserWarning)
        with pytest.raises(error, match=pattern):
            call()


def test_beta_zero_is_l1(device):
    x, target = (mc.tensor(np.array([0.3, -2.0, 0.0]), device=device) for _ in range(2))
    assert F.smooth_l1_loss(x, target * 0.5, beta=0.0).item() == F.l1_loss(x, target * 0.5).item()
