"""The lecture's models: shapes, parameter and FLOP counts, and that one training step lowers the loss."""

import numba
import numpy as np
import pytest

import minicv as mc
import minicv.functional as F
from minicv import optim
from minicv.errors import ArgumentError
from minicv.models import MODELS, SEGMENTERS, TASKS, build_model, check_image_size, layer_flops, profile, takes_size
from minicv.models.localization import localization_loss, normalise_boxes, to_pixels
from tests.conftest import numba_threads

SMALL = {"naive": {"width": 4, "depth": 2}, "loc": {"widths": (4, 8, 8, 8), "hidden": 16, "image_size": 32}}
for _name in ("nearest", "segnet", "learned"):
    SMALL[_name] = {"widths": (4, 8, 8)}


def _images(n=2, size=32, seed=0):
    return mc.tensor(np.random.default_rng(seed).random((n, 3, size, size)), dtype=np.float32)


@pytest.mark.parametrize("name", [n for n, t in TASKS.items() if t == "segmentation"])
def test_segmenters_score_every_pixel(name):
    mc.manual_seed(0)
    model = build_model(name, 6, **SMALL[name])
    scores = model(_images())
    assert scores.shape == (2, 6, 32, 32)


def test_localizer_gives_scores_and_normalised_boxes():
    mc.manual_seed(0)
    scores, boxes = build_model("loc", 3, **SMALL["loc"])(_images())
    assert scores.shape == (2, 3) and boxes.shape == (2, 4)
    assert np.all((boxes.detach().numpy() > 0) & (boxes.detach().numpy() < 1))


def _unfused_conv_bn_relu(in_channels, out_channels, stride=1):
    return mc.nn.Sequential(mc.nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                            mc.nn.BatchNorm2d(out_channels), mc.nn.ReLU())


def _unfused_up_bn_relu(channels):
    return mc.nn.Sequential(mc.nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False),
                            mc.nn.BatchNorm2d(channels), mc.nn.ReLU())


@pytest.mark.parametrize("name", list(MODELS))
def test_fused_batch_norm_relu_keeps_the_state_dict_keys_and_the_outputs(name, monkeypatch):
    """Every model built with BatchNorm2d then ReLU (as before the fusion) has the same state-dict keys as
    today's, in the same order; its state dict loads into today's, which then computes the same outputs
    in training (batch statistics, updated running ones) and in eval."""
    from minicv.models import localization, segmentation

    mc.manual_seed(0)
    fused = build_model(name, 3, **SMALL[name])
    monkeypatch.setattr(segmentation, "conv_bn_relu", _unfused_conv_bn_relu)
    monkeypatch.setattr(segmentation, "up_bn_relu", _unfused_up_bn_relu)
    monkeypatch.setattr(localization, "conv_bn_relu", _unfused_conv_bn_relu)
    mc.manual_seed(1)
    unfused = build_model(name, 3, **SMALL[name])
    norms = [m for m in fused.modules() if isinstance(m, mc.nn.BatchNorm2d)]  # each followed by a ReLU
    assert norms and all(isinstance(m, mc.nn.BatchNormReLU2d) for m in norms)
    assert list(fused.state_dict()) == list(unfused.state_dict())
    fused.load_state_dict(unfused.state_dict())
    for train in (True, False):
        fused.train(train)
        unfused.train(train)
        outputs = [m(_images()) for m in (fused, unfused)]
        for a, b in zip(*(o if isinstance(o, tuple) else (o,) for o in outputs), strict=True):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    for key, value in unfused.state_dict().items():  # the running statistics moved alike
        np.testing.assert_allclose(fused.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_box_convention_round_trips():
    boxes = np.array([[3.0, 5.0, 10.0, 4.0]])
    assert np.allclose(normalise_boxes(boxes, 32, 64), [[3 / 64, 5 / 32, 10 / 64, 4 / 32]])
    assert np.allclose(to_pixels(normalise_boxes(boxes, 32, 64), 32, 64), boxes)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="model: expected one of .*'unet'"):
        build_model("unet", 3)


def test_segnet_unpools_with_the_matching_pool_indices():
    """Max-unpooling puts each value back where its maximum came from: with identity convolutions a
    pool -> unpool round trip keeps the maxima in place and zeros elsewhere."""
    x = mc.tensor(np.random.default_rng(0).permutation(64).reshape(1, 1, 8, 8), dtype=np.float32)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    up = F.max_unpool2d(y, idx, 2).numpy()
    assert np.count_nonzero(up) == 16
    assert np.all((up == 0) | (up == x.numpy()))


def test_profile_counts_parameters_and_conv_flops():
    mc.manual_seed(0)
    model = build_model("naive", 6, width=4, depth=2)
    info = profile(model, (3, 16, 16))
    expected_params = (3 * 4 * 9 + 2 * 4) + (4 * 4 * 9 + 2 * 4) + (4 * 6 + 6)  # convs + batch norms + classifier
    assert info["parameters"] == expected_params
    expected_flops = 2 * 16 * 16 * (3 * 4 * 9 + 4 * 4 * 9 + 4 * 6)
    assert info["flops"] == expected_flops


def test_transposed_conv_flops_count_each_input_pixel_once():
    layer = mc.nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
    assert layer_flops(layer, (1, 4, 5, 5), (1, 2, 10, 10)) == 2 * 4 * 25 * 2 * 16


def _loss_fn(name, model, images, rng):
    """The training loss of model ``name`` on images, its targets (6 segmentation classes, or 3 classes and
    a box) drawn from rng onto the images' device."""
    n, _, h, w = images.shape
    if TASKS[name] == "segmentation":
        mask = mc.tensor(rng.integers(0, 6, (n, h, w)), device=images.device)
        return lambda: F.cross_entropy(model(images), mask)
    labels = mc.tensor(rng.integers(0, 3, n), device=images.device)
    boxes = mc.tensor(rng.uniform(0.2, 0.5, (n, 4)), dtype=np.float32, device=images.device)
    return lambda: localization_loss(*model(images), labels, boxes)[0]


@pytest.mark.parametrize("name", list(MODELS))
def test_a_few_steps_lower_the_loss(name):
    mc.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(name, 3 if name == "loc" else 6, **SMALL[name])
    opt = optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = _loss_fn(name, model, _images(4, 32), rng)
    first = loss_fn().item()
    for _ in range(5):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < first


def _numba_training_run(name, threads):
    """The parameters after two SGD-with-momentum steps of model ``name`` (its default widths) on numba,
    N8 3x32x32, run on ``threads`` numba threads."""
    mc.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(name, 3 if name == "loc" else 6, **({"image_size": 32} if name == "loc" else {})).to("numba")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = _loss_fn(name, model, _images(8, 32).to("numba"), rng)
    with numba_threads(threads):
        for _ in range(2):
            opt.zero_grad()
            loss_fn().backward()
            opt.step()
    return [p.detach().numpy() for p in model.parameters()]


@pytest.mark.parametrize("name", list(MODELS))
def test_a_numba_training_run_gives_the_same_bits_on_any_number_of_threads(name):
    """Every numba kernel splits its work by the shapes alone, or sums each output whole within one task,
    so the weights after training are the same bits on one thread as on every thread: a learner's run
    does not depend on the cores it got."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread here: nothing to compare it with")
    one, every = _numba_training_run(name, 1), _numba_training_run(name, numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(one, every, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenters_take_exactly_the_sizes_takes_size_says(name):
    mc.manual_seed(0)
    model = build_model(name, 3, **SMALL[name])
    for height, width in [(16, 24), (20, 20), (12, 16), (8, 9)]:
        try:
            with mc.no_grad():
                works = model(mc.zeros(1, 3, height, width)).shape[-2:] == (height, width)
        except (ValueError, IndexError, RuntimeError):  # segnet: "invalid max index"
            works = False
        assert works == takes_size(model, height, width), (height, width)


def test_check_image_size_names_the_source_and_the_sizes_that_work():
    model = build_model("segnet", 3)
    check_image_size(model, 24, 16)
    with pytest.raises(ArgumentError, match=r"^my_data: PoolingSegmenter takes heights and widths that are multiples "
                       r"of 8 \(it halves them 3 times\), got 20x20 \(WxH\); nearest that work: width 16 or 24, "
                       r"height 16 or 24$"):
        check_image_size(model, 20, 20, "my_data")
    with pytest.raises(ArgumentError, match="image_size: Localizer takes heights and widths that are multiples of 16"):
        build_model("loc", 3, image_size=(20, 32))
