"""The glue ops of minicv.functional.basic against PyTorch, forward and backward, on every device.

Hand-written cases cover what the lecture's models use; PyTorch's own OpInfo samples cover the rest.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicv as mc
import minicv.functional as F
from minicv.errors import ArgumentError, DtypeError, OutOfRangeError
from tests.reference import assert_close, float64_reference

# the device and dtype fixtures are plain strings and types: sharing them across examples is safe
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def to_mc(value, device, requires_grad=None):
    """torch tensors (also inside lists and tuples) become minicv tensors; the rest passes through."""
    if isinstance(value, torch.Tensor):
        grad = value.requires_grad if requires_grad is None else requires_grad
        return mc.tensor(value.detach().numpy().copy(), device=device, requires_grad=grad)
    if isinstance(value, (list, tuple)):
        return type(value)(to_mc(v, device, requires_grad) for v in value)
    return value


def compare(mc_fn, torch_fn, arrays, device, grad=True):
    """Run both on the same arrays; compare every output, then the input gradients for one random
    grad_output of output 0. The reference is PyTorch in float64 (tests/reference.py); torch_fn runs
    several times, so it must not change state it shares between calls."""
    dtype = arrays[0].dtype
    inputs = [mc.tensor(a, device=device, requires_grad=grad) for a in arrays]
    y = mc_fn(*inputs)
    ys = y if isinstance(y, tuple) else (y,)
    g = np.random.default_rng(99).standard_normal(ys[0].shape).astype(dtype) if grad else None
    expected = float64_reference(torch_fn, arrays, dtype, [grad] * len(arrays), g)
    for i, (out, (e, allowance)) in enumerate(zip(ys, expected, strict=False)):
        assert out.shape == e.shape and out.dtype == dtype and out.device.name == device
        assert_close(out.detach().numpy(), e, dtype, f"output {i}", allowance)
    if not grad:
        return
    ys[0].backward(g)
    for i, (t, (e, allowance)) in enumerate(zip(inputs, expected[len(ys):], strict=True)):
        actual = np.zeros(t.shape, dtype) if t.grad is None else t.grad.numpy()
        assert actual.dtype == dtype
        assert_close(actual, e, dtype, f"gradient of input {i}", allowance)


def randn(seed, *shape, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@SETTINGS
@given(seed=seeds, shape=shapes)
def test_relu(device, dtype, seed, shape):
    compare(F.relu, TF.relu, [randn(seed, *shape, dtype=dtype)], device)


@SETTINGS
@given(seed=seeds, shape=shapes, bias=st.booleans(), out_features=st.integers(1, 5))
def test_linear(device, dtype, seed, shape, bias, out_features):
    x = randn(seed, *shape, dtype=dtype)
    w = randn(seed + 1, out_features, shape[-1], dtype=dtype)
    arrays = [x, w] + ([randn(seed + 2, out_features, dtype=dtype)] if bias else [])
    compare(F.linear, TF.linear, arrays, device)


MATMUL_SHAPES = [((3,), (3,)), ((3,), (2, 3, 4)), ((2, 3, 4), (4,)), ((5, 3), (3, 2)), ((2, 5, 3), (3, 2)),
                 ((3,), (3, 4)), ((4, 3), (3,)), ((2, 1, 4, 3), (5, 3, 2))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_with_vectors_and_batches(device, dtype, shapes):
    arrays = [randn(i, *shape, dtype=dtype) for i, shape in enumerate(shapes)]
    compare(lambda a, b: a @ b, lambda a, b: a @ b, arrays, device)


def test_linear_rejects_mismatched_weight():
    with pytest.raises(ValueError, match="weight"):
        F.linear(mc.ones(2, 3), mc.ones(4, 2))


@SETTINGS
@given(seed=seeds, shape=shapes, data=st.data())
def test_softmax_and_log_softmax(device, dtype, seed, shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = randn(seed, *shape, dtype=dtype) * 5
    compare(lambda t: F.softmax(t, dim=dim), lambda t: TF.softmax(t, dim=dim), [x], device)
    compare(lambda t: F.log_softmax(t, dim=dim), lambda t: TF.log_softmax(t, dim=dim), [x], device)


def test_softmax_is_stable_for_large_logits():
    y = F.log_softmax(mc.tensor(np.array([[1000.0, 0.0, -1000.0]])), dim=1)
    np.testing.assert_allclose(y.numpy(), [[0.0, -1000.0, -2000.0]])


@SETTINGS
@given(seed=seeds, shape=shapes, keepdim=st.booleans(), data=st.data())
def test_sum_and_mean(device, dtype, seed, shape, keepdim, data):
    dims = data.draw(st.one_of(st.none(), st.lists(st.integers(0, len(shape) - 1), unique=True, max_size=len(shape))))
    x = randn(seed, *shape, dtype=dtype)
    torch_dims = dims if dims is not None else None
    compare(lambda t: F.sum(t, dims, keepdim), lambda t: torch.sum(t, torch_dims, keepdim), [x], device)
    compare(lambda t: t.mean(dims, keepdim), lambda t: torch.mean(t, torch_dims, keepdim), [x], device)


def test_reduction_dims_out_of_range_raise():
    with pytest.raises(OutOfRangeError, match="Dimension out of range"):
        mc.ones(2, 3).sum(2)


@SETTINGS
@given(seed=seeds, shape=shapes, data=st.data())
def test_reshape_flatten_permute_transpose(device, dtype, seed, shape, data):
    x = randn(seed, *shape, dtype=dtype)
    order = data.draw(st.permutations(range(len(shape))))
    compare(lambda t: t.reshape(-1, shape[-1]), lambda t: t.reshape(-1, shape[-1]), [x], device)
    compare(lambda t: t.permute(*order) * 1.5, lambda t: t.permute(*order) * 1.5, [x], device)
    start = min(1, len(shape) - 1)
    compare(lambda t: t.flatten(start), lambda t: t.flatten(start), [x], device)
    compare(lambda t: t.transpose(0, -1), lambda t: t.transpose(0, -1), [x], device)
    compare(lambda t: t.unsqueeze(1).squeeze(1), lambda t: t.unsqueeze(1).squeeze(1), [x], device)


GETITEMS = [
    (1,),
    (slice(None, None, 2),),
    (Ellipsis, 0),
    (slice(1, None), 0),
    ([0, 2, 0],),  # repeated index: gradients add up
    (np.array([True, False, True, True]),),
]


@pytest.mark.parametrize("index", GETITEMS, ids=str)
def test_getitem(device, dtype, index):
    x = randn(0, 4, 3, 2, dtype=dtype)
    torch_index = tuple(torch.tensor(i) if isinstance(i, np.ndarray) else i for i in index)
    compare(lambda t: t[index], lambda t: t[torch_index], [x], device)


@SETTINGS
@given(seed=seeds, shape=shapes, data=st.data(), value=st.sampled_from([None, 1.5]))
def test_pad_in_pytorchs_form_with_negative_crops(device, dtype, seed, shape, data, value):
    # crops leave at least one element per axis
    pairs = [(data.draw(st.integers(-(n // 2), 2)), data.draw(st.integers(-(n - n // 2 - 1), 2))) for n in shape[::-1]]
    flat = [w for pair in pairs[: data.draw(st.integers(1, len(shape)))] for w in pair]
    x = randn(seed, *shape, dtype=dtype)
    compare(lambda t: F.pad(t, flat, value=value), lambda t: TF.pad(t, flat, value=value), [x], device)


def test_pad_in_per_axis_form():
    x = mc.tensor(np.ones((1, 2)), requires_grad=True)
    y = F.pad(x, ((0, 0), (1, 2)))
    np.testing.assert_array_equal(y.detach().numpy(), [[0, 1, 1, 0, 0]])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 1]])


def test_pad_errors():
    with pytest.raises(ArgumentError, match="divisible by 2"):
        F.pad(mc.ones(2, 2), [1, 2, 3])
    with pytest.raises(ArgumentError, match="negative size"):
        F.pad(mc.ones(2, 2), [-2, -1])
    with pytest.raises(ArgumentError, match="constant"):
        F.pad(mc.ones(2, 2), [1, 1], mode="reflect")


@SETTINGS
@given(seed=seeds, shape=shapes, data=st.data(), count=st.integers(1, 3))
def test_cat(device, dtype, seed, shape, data, count):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    arrays = []
    for i in range(count):
        size = list(shape)
        size[dim] = data.draw(st.integers(1, 3))
        arrays.append(randn(seed + i, *size, dtype=dtype))
    compare(lambda *ts: F.cat(ts, dim), lambda *ts: torch.cat(ts, dim), arrays, device)


@pytest.mark.parametrize("op", ["exp", "log", "sqrt", "abs", "sigmoid"])
def test_unary_ops(device, dtype, op):
    x = np.random.default_rng(3).uniform(0.5, 2.0, (3, 4)).astype(dtype) * np.array([1, -1, 1, 1], dtype)
    if op in ("log", "sqrt"):
        x = np.abs(x)
    compare(getattr(F, op), getattr(torch, op), [x], device)


# --------------------------------------------------------------------------- batch norm
@SETTINGS
@given(seed=seeds, n=st.integers(2, 3), c=st.integers(1, 3), hw=st.sampled_from([(), (2,), (2, 3)]),
       affine=st.booleans(), momentum=st.sampled_from([0.1, 0.5]), eps=st.sampled_from([1e-5, 0.3]))
def test_batch_norm_training_updates_running_stats(device, dtype, seed, n, c, hw, affine, momentum, eps):
    x = randn(seed, n, c, *hw, dtype=dtype) * 3 + 1
    stats = [randn(seed + 1, c, dtype=dtype), np.abs(randn(seed + 2, c, dtype=dtype)) + 0.5]
    affine_arrays = [randn(seed + 3, c, dtype=dtype), randn(seed + 4, c, dtype=dtype)] if affine else []

    def ours(t, *wb):
        mean, var = (mc.tensor(s, device=device) for s in stats)
        return F.batch_norm(t, mean, var, *wb, training=True, momentum=momentum, eps=eps), mean, var

    def theirs(t, *wb):  # runs once per reference trial: fresh running statistics each time
        mean, var = (torch.tensor(s, dtype=t.dtype) for s in stats)
        return TF.batch_norm(t, mean, var, *wb, training=True, momentum=momentum, eps=eps), mean, var

    compare(ours, theirs, [x, *affine_arrays], device)


def test_batch_norm_of_nearly_equal_values_matches_the_float64_answer(device, dtype):
    """The draw that once failed: PyTorch's float32 answer is 3e-4 off here (the variance of nearly
    equal values loses digits), so only the float64 answer with a conditioning-aware tolerance decides."""
    x = np.array([[5.209728, -1.3], [5.208488, 0.7]], dtype=dtype)

    def ours(t):
        mean, var = mc.zeros(2, device=device, dtype=dtype), mc.ones(2, device=device, dtype=dtype)
        return F.batch_norm(t, mean, var, training=True, eps=1e-5), mean, var

    def theirs(t):
        mean, var = torch.zeros(2, dtype=t.dtype), torch.ones(2, dtype=t.dtype)
        return TF.batch_norm(t, mean, var, training=True, eps=1e-5), mean, var

    compare(ours, theirs, [x], device)


@SETTINGS
@given(seed=seeds, n=st.integers(1, 3), c=st.integers(1, 3), hw=st.sampled_from([(), (2, 3)]), affine=st.booleans())
def test_batch_norm_eval_uses_running_stats_and_leaves_them(device, dtype, seed, n, c, hw, affine):
    x = randn(seed, n, c, *hw, dtype=dtype)
    stats = [randn(seed + 1, c, dtype=dtype), np.abs(randn(seed + 2, c, dtype=dtype)) + 0.5]
    affine_arrays = [randn(seed + 3, c, dtype=dtype), randn(seed + 4, c, dtype=dtype)] if affine else []
    mc_stats = [mc.tensor(s, device=device) for s in stats]

    def ours(t, *wb):
        return F.batch_norm(t, *mc_stats, *wb, training=False)

    def theirs(t, *wb):
        return TF.batch_norm(t, *(torch.tensor(s, dtype=t.dtype) for s in stats), *wb, training=False)

    compare(ours, theirs, [x, *affine_arrays], device)
    for s, original in zip(mc_stats, stats, strict=True):
        np.testing.assert_array_equal(s.numpy(), original)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (5, 2), (1, 2, 7)])
def test_batch_norm_gradcheck(device, training, shape):
    """float64 central differences through the device's batch_norm kernels, NCHW, NC and N=1 NCL input."""
    rng = np.random.default_rng(7)
    x, weight, bias = (mc.tensor(rng.standard_normal(s) * 2 + 1, device=device, requires_grad=True)
                       for s in (shape, shape[1:2], shape[1:2]))
    running = [mc.tensor(rng.standard_normal(shape[1]), device=device),
               mc.tensor(rng.uniform(0.5, 2.0, shape[1]), device=device)]
    stats = [None, None] if training else running  # gradcheck calls it again and again: no running update
    assert mc.gradcheck(lambda t, w, b: F.batch_norm(t, *stats, w, b, training=training, eps=1e-3),
                        (x, weight, bias))


def _zeros_after_normalising(dtype) -> np.ndarray:
    """(2, 3, 2, 3) input whose channels hold small integers with mean 0 exactly: with bias 0, every 0 of
    x normalises to exactly 0 (training, or eval with running mean 0), where ReLU's gradient is 0."""
    channel = np.array([-3, -2, -1, 0, 0, 0, 1, 2, 3, -4, 4, 0])
    rng = np.random.default_rng(4)
    x = np.stack([rng.permutation(channel).reshape(2, 2, 3) for _ in range(3)], axis=1)
    return x.astype(dtype)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_relu_is_relu_of_batch_norm(device, dtype, training):
    """The fused op and the two ops apart agree to the bit (same kernels, same rounding), forward and
    backward, on outputs of exactly 0 and negatives, and update the running statistics alike."""
    x = _zeros_after_normalising(dtype)
    weight = np.array([1.5, -0.5, 2.0], dtype)
    results = []
    for fused in (True, False):
        t, w, b = (mc.tensor(a, device=device, requires_grad=True) for a in (x, weight, np.zeros(3, dtype)))
        stats = [mc.zeros(3, device=device, dtype=dtype), mc.tensor(np.array([0.5, 1.0, 2.0], dtype), device=device)]
        if fused:
            y = F.batch_norm_relu(t, *stats, w, b, training=training, momentum=0.3, eps=1e-3)
        else:
            y = F.relu(F.batch_norm(t, *stats, w, b, training=training, momentum=0.3, eps=1e-3))
        y.backward(mc.tensor(randn(9, *x.shape, dtype=dtype) + 0.5, device=device))
        results.append([y.detach().numpy(), t.grad.numpy(), w.grad.numpy(), b.grad.numpy(),
                        *(s.numpy() for s in stats)])
    assert (results[0][0] == 0).sum() > x.size // 4  # exact zeros (x at the mean) and clamped negatives
    for name, a, e in zip(["y", "gx", "gweight", "gbias", "running_mean", "running_var"], *results, strict=True):
        np.testing.assert_array_equal(a, e, err_msg=name)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_batch_norm_relu_matches_torch(device, dtype, training, seed):
    """Against torch.relu(torch.nn.functional.batch_norm(...)) in float64 (PyTorch has no fused call)."""
    x = randn(seed, 3, 4, 2, 5, dtype=dtype) * 2 + 1
    weight, bias = randn(seed + 1, 4, dtype=dtype), randn(seed + 2, 4, dtype=dtype)
    stats = [randn(seed + 3, 4, dtype=dtype), np.abs(randn(seed + 4, 4, dtype=dtype)) + 0.5]

    def ours(t, w, b):
        return F.batch_norm_relu(t, *(None if training else mc.tensor(s, device=device) for s in stats), w, b,
                                 training=training)

    def theirs(t, w, b):
        running = (None if training else torch.tensor(s, dtype=t.dtype) for s in stats)
        return torch.relu(TF.batch_norm(t, *running, w, b, training=training))

    compare(ours, theirs, [x, weight, bias], device)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_relu_gradcheck(device, training):
    """float64 central differences through the fused kernels, on inputs tie-free for the ReLU: no output
    within 1e-3 of 0, far beyond gradcheck's steps."""
    rng = np.random.default_rng(11)
    x, weight, bias = rng.standard_normal((2, 3, 4, 5)) * 2 + 1, rng.standard_normal(3), rng.standard_normal(3)
    running = [rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)]
    stats = [None, None] if training else [mc.tensor(s, device=device) for s in running]
    tensors = [mc.tensor(a, device=device, requires_grad=True) for a in (x, weight, bias)]
    with mc.no_grad():
        normalised = F.batch_norm(*tensors[:1], *stats, *tensors[1:], training=training, eps=1e-3).numpy()
    assert np.abs(normalised).min() > 1e-3 and (normalised < 0).any()
    assert mc.gradcheck(lambda t, w, b: F.batch_norm_relu(t, *stats, w, b, training=training, eps=1e-3), tensors)


def test_batch_norm_relu_shares_the_checks_of_batch_norm():
    with pytest.raises(ArgumentError, match=r"batch_norm_relu: expected weight of shape \(3,\)"):
        F.batch_norm_relu(mc.ones(2, 3), None, None, mc.ones(2), training=True)
    with pytest.raises(ArgumentError, match="batch_norm_relu: running_mean and running_var are required"):
        F.batch_norm_relu(mc.ones(2, 3), None, None)
    with pytest.raises(DtypeError, match="batch_norm_relu: expected bias of dtype float32"):
        F.batch_norm_relu(mc.ones(2, 3), None, None, None, mc.ones(3, dtype=np.float64), training=True)


def test_batch_norm_refuses_mixed_dtypes_as_pytorch_does():
    x = mc.ones(2, 3, dtype=np.float32)
    with pytest.raises(DtypeError, match="expected weight of dtype float32"):
        F.batch_norm(x, None, None, mc.ones(3, dtype=np.float64), training=True)
    with pytest.raises(DtypeError, match="expected running_mean of dtype float32"):
        F.batch_norm(x, mc.zeros(3, dtype=np.float64), mc.ones(3, dtype=np.float32))
    with pytest.raises(RuntimeError, match="mixed dtype"):
        TF.batch_norm(torch.ones(2, 3), None, None, torch.ones(3, dtype=torch.float64), training=True)


def test_batch_norm_errors():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(mc.ones(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="running_mean"):
        F.batch_norm(mc.ones(2, 3), mc.zeros(2), mc.ones(3), training=False)
    with pytest.raises(ValueError, match="required"):
        F.batch_norm(mc.ones(2, 3), None, None, training=False)
    with pytest.raises(ArgumentError, match="at least 2 dimensions"):  # PyTorch's odd 1-D rules: not followed
        F.batch_norm(mc.ones(3), mc.zeros(3), mc.ones(3))


@pytest.mark.parametrize("given", ["running_mean", "running_var"])
def test_batch_norm_refuses_one_running_statistic_alone_as_pytorch_does(given):
    """Training used to update the one given and fail on the other with an AttributeError."""
    stats = {"running_mean": None, "running_var": None, given: mc.ones(3)}
    message = "running_mean and running_var must either both be None or neither be None"
    with pytest.raises(ArgumentError, match=message):
        F.batch_norm(mc.ones(2, 3), **stats, training=True)
    with pytest.raises(ValueError, match=message):
        TF.batch_norm(torch.ones(2, 3), **{k: None if v is None else torch.ones(3) for k, v in stats.items()},
                      training=True)


# --------------------------------------------------------------------------- PyTorch's OpInfo samples
def _op_db():
    from torch.testing._internal.common_methods_invocations import op_db

    return {(op.name, op.variant_test_name): op for op in op_db}


OPINFO_OPS = {
    ("nn.functional.relu", ""): F.relu,
    ("nn.functional.linear", ""): F.linear,
    ("nn.functional.batch_norm", ""): F.batch_norm,
    ("softmax", ""): F.softmax,
    ("log_softmax", ""): F.log_softmax,
    ("sum", ""): F.sum,
    ("mean", ""): F.mean,
    ("reshape", ""): F.reshape,
    ("nn.functional.pad", "constant"): F.pad,
    ("cat", ""): F.cat,
    ("__getitem__", ""): mc.Tensor.__getitem__,
}


def _index_to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, tuple):
        return tuple(_index_to_numpy(v) for v in value)
    return value


@pytest.mark.parametrize("key", OPINFO_OPS, ids=lambda key: "_".join(filter(None, key)))
def test_opinfo_samples(device, key):
    op, ours = _op_db()[key], OPINFO_OPS[key]
    for sample in op.sample_inputs("cpu", torch.float64, requires_grad=True):
        if key[0] == "nn.functional.batch_norm" and sample.input.ndim < 2:
            with pytest.raises(ArgumentError):  # a documented deviation: PyTorch accepts a 1-D empty input
                ours(to_mc(sample.input, device), *to_mc(sample.args, device), **sample.kwargs)
            continue
        args = _index_to_numpy(sample.args) if key[0] == "__getitem__" else sample.args
        # batch norm updates its running stats in place: torch gets copies, so both start from the same
        torch_args = [a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                      for a in sample.args]
        mc_input, mc_args = to_mc(sample.input, device), to_mc(args, device)
        mc_kwargs = to_mc(sample.kwargs, device)
        y = ours(mc_input, *mc_args, **mc_kwargs)
        ty = op.op(sample.input, *torch_args, **sample.kwargs)
        np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        assert y.shape == tuple(ty.shape)
        if not ty.requires_grad or ty.numel() == 0:
            continue
        g = np.random.default_rng(0).standard_normal(y.shape)
        y.backward(g)
        wanted = [t for t in _flatten((sample.input, torch_args), torch.Tensor) if t.requires_grad]
        mine = [t for t in _flatten((mc_input, mc_args), mc.Tensor) if t.requires_grad]
        expected = torch.autograd.grad(ty, wanted, torch.tensor(g), allow_unused=True)
        for t, e in zip(mine, expected, strict=True):
            actual = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
            np.testing.assert_allclose(actual, 0 if e is None else e.numpy(), rtol=1e-10, atol=1e-12)


def _flatten(value, kind):
    if isinstance(value, kind):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flatten(v, kind)]
    return []


def test_opinfo_reshape_error_inputs_raise():
    for error in _op_db()["reshape", ""].error_inputs("cpu"):
        sample = error.sample_input
        with pytest.raises((RuntimeError, ValueError)):
            F.reshape(to_mc(sample.input, "numpy"), *sample.args)
