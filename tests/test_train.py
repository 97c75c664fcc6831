"""Training, evaluation, checkpoints: resume ends where an uninterrupted run ends; bad checkpoints fail clearly."""

import json

import numpy as np
import pytest

import minicv as mc
from minicv import optim
from minicv.checkpoint import load_checkpoint, read_meta, save_checkpoint
from minicv.data import DataLoader, SceneDataset
from minicv.errors import TrainingDiverged
from minicv.models import build_model
from minicv.train import evaluate, fit, make_task


def _setup(seed=0):
    mc.manual_seed(seed)
    items = [SceneDataset("train", 12, size=32, seed=seed)[i] for i in range(12)]
    model = build_model("segnet", 6, widths=(4, 4, 4))
    loader = DataLoader(items, 4, shuffle=True, seed=seed, flip=True)
    return model, loader, items, optim.Adam(model.parameters(), lr=1e-2)


def _fit(model, loader, items, opt, out, **kwargs):
    """Three epochs with a cosine schedule: everything a resume must restore is in play."""
    schedule = optim.CosineAnnealingLR(opt, 3)
    task = make_task("segmentation", 6)
    return fit(
        model, task, loader, DataLoader(items, 6), opt, 3, out, progress=False, scheduler=schedule, **kwargs
    )


def _weights(model):
    return model.state_dict()


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    straight_model, loader, items, opt = _setup()
    _fit(straight_model, loader, items, opt, tmp_path / "straight")
    straight = _weights(straight_model)

    _fit(*_setup(), tmp_path / "resumed", stop_after=1)
    model, loader, items, opt = _setup(seed=0)  # a fresh process: new model, optimizer and loader
    mc.manual_seed(123)  # whatever the generator holds now, the checkpoint restores it
    history = _fit(model, loader, items, opt, tmp_path / "resumed", resume=True)
    resumed = _weights(model)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert straight.keys() == resumed.keys()
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
    assert (tmp_path / "resumed" / "log.csv").read_text().count("\n") == 4


def test_evaluate_reports_segmentation_metrics():
    model, _, items, _ = _setup()
    scores = evaluate(model, make_task("segmentation", 6), DataLoader(items, 6))
    assert set(scores) == {"pixel_accuracy", "mean_iou", "boundary_f1"}
    assert all(0 <= v <= 1 for v in scores.values())


def test_checkpoint_round_trip_and_atomic_write(tmp_path):
    model, _, _, opt = _setup()
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt, epoch=4, note="hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]  # no temporary left behind
    other, _, _, other_opt = _setup(seed=1)
    meta = load_checkpoint(path, other, other_opt)
    assert meta["epoch"] == 4 and meta["note"] == "hello" and read_meta(path)["note"] == "hello"
    for key, value in _weights(model).items():
        np.testing.assert_array_equal(value, other.state_dict()[key])


def test_bad_checkpoints_give_clear_errors(tmp_path):
    model, _, _, opt = _setup()
    with pytest.raises(ValueError, match="no such file"):
        load_checkpoint(tmp_path / "missing.npz", model)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz: not a readable"):
        load_checkpoint(garbage, model)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a minicv checkpoint"):
        load_checkpoint(foreign, model)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt)
    wider = build_model("segnet", 6, widths=(4, 4, 8))
    with pytest.raises(ValueError, match="has shape .* but the model expects"):
        load_checkpoint(path, wider)
    before = _weights(wider)
    for key, value in before.items():  # nothing was loaded
        np.testing.assert_array_equal(value, wider.state_dict()[key])
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(path, build_model("naive", 6, width=4, depth=2))


def test_checkpoint_refuses_pickles(tmp_path):
    model, _, _, _ = _setup()
    path = tmp_path / "pickled.npz"
    np.savez(path, meta=np.array([{"epoch": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled.npz"):
        load_checkpoint(path, model)


def test_keep_best_ends_with_the_best_validation_epoch(tmp_path):
    """The model ends with the weights of the epoch that scored best on the validation scenes, saved as
    best.npz when reached; the last checkpoint still holds the last epoch."""
    model, loader, items, opt = _setup()
    history = _fit(model, loader, items, opt, tmp_path, keep_best="mean_iou")
    best = max(range(3), key=lambda i: history[i]["mean_iou"])
    last = build_model("segnet", 6, widths=(4, 4, 4))
    load_checkpoint(tmp_path / "checkpoint.npz", last)
    kept = build_model("segnet", 6, widths=(4, 4, 4))
    meta = load_checkpoint(tmp_path / "best.npz", kept)
    assert meta["epoch"] == best + 1
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, kept.state_dict()[key], err_msg=key)
    task = make_task("segmentation", 6)
    assert evaluate(model, task, DataLoader(items, 6))["mean_iou"] == history[best]["mean_iou"]
    if best != 2:  # the last epoch was not the best: the model no longer holds its weights
        assert any(not np.array_equal(v, last.state_dict()[k]) for k, v in model.state_dict().items())


def test_keep_best_after_a_resume_passes_over_a_nan_first_epoch(tmp_path, monkeypatch):
    """A metric with nothing to measure is NaN, which never counts as better: a resumed run whose first
    epoch scored NaN still keeps its best epoch (max() over the history kept the NaN that came first)."""
    scores = iter([float("nan"), 0.5, 0.2])
    monkeypatch.setattr("minicv.train.evaluate", lambda model, task, loader: {"mean_iou": next(scores)})
    _fit(*_setup(), tmp_path, keep_best="mean_iou", stop_after=1)
    history = _fit(*_setup(), tmp_path, keep_best="mean_iou", resume=True)
    assert [h["mean_iou"] for h in history][1:] == [0.5, 0.2]
    assert read_meta(tmp_path / "best.npz")["epoch"] == 2


@pytest.mark.parametrize("task_name, model_name", [("segmentation", "segnet"), ("localization", "loc")])
def test_data_follows_the_model_to_its_device(task_name, model_name, tmp_path):
    """fit and evaluate take no device: every batch goes where the model is (numba, not the suite's
    default numpy, which a mixed-device op would refuse)."""
    mc.manual_seed(0)
    items = [SceneDataset("train", 4, size=32, seed=0)[i] for i in range(4)]
    kwargs = {"image_size": 32} if model_name == "loc" else {"widths": (4, 4, 4)}
    model = build_model(model_name, 3 if model_name == "loc" else 6, **kwargs).to("numba")
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].device.name))
    task = make_task(task_name, 3 if model_name == "loc" else 6)
    history = fit(model, task, DataLoader(items, 2), DataLoader(items, 4), optim.SGD(model.parameters(), lr=1e-3), 1,
                  tmp_path, progress=False)
    assert len(history) == 1 and evaluate(model, task, DataLoader(items, 4)).keys() == history[0].keys() - {
        "epoch", "loss", "seconds"}
    assert seen == ["numba"] * 4  # two training steps, the validation batch, evaluate's batch


def test_demo_end_to_end_on_tiny_data(tmp_path):
    """The demo's whole path: validation scenes pick each model's best epoch, the test scenes score it."""
    from minicv.demo import run_demo

    results = run_demo(tmp_path, device="numba", epochs=2, train_size=8, validation_size=4, test_size=4,
                       models=("segnet", "loc"))
    assert set(results) == {"segnet", "loc"}
    assert 0 <= results["segnet"]["mean_iou"] <= 1 and 0 <= results["loc"]["class_accuracy"] <= 1
    for name in results:
        assert (tmp_path / name / "best.npz").exists() and (tmp_path / name / "checkpoint.npz").exists()
    assert {p.name for p in tmp_path.glob("*.png")} >= {"segmentation.png", "localization.png"}
    assert "| segnet |" in (tmp_path / "results.md").read_text()


class _NanAt:
    """The segmentation task, but the loss of the ``at``-th training step (counted over the run) is NaN;
    ``score`` adds a metric that is always NaN."""

    def __init__(self, at):
        self.task, self.at, self.steps = make_task("segmentation", 6), at, 0

    def loss(self, model, batch):
        self.steps += 1
        loss = self.task.loss(model, batch)
        return loss * float("nan") if self.steps == self.at else loss

    def score(self, model, loader):
        return {**self.task.score(model, loader), "nan_metric": float("nan")}


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path.name} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.filterwarnings("ignore:(overflow|invalid value) encountered:RuntimeWarning")  # it diverges
def test_a_non_finite_loss_stops_training_and_keeps_the_last_finite_checkpoint(tmp_path):
    model, loader, items, opt = _setup()  # 3 steps per epoch: step 5 is epoch 2, step 2
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2: the loss is nan; .*checkpoint.npz holds epoch 1"):
        fit(model, _NanAt(5), loader, DataLoader(items, 6), opt, 3, tmp_path, progress=False)
    kept = build_model("segnet", 6, widths=(4, 4, 4))
    assert load_checkpoint(tmp_path / "checkpoint.npz", kept)["epoch"] == 1
    history = _strict_json(tmp_path / "history.json")
    assert [h["epoch"] for h in history] == [1] and history[0]["nan_metric"] is None
    assert (tmp_path / "log.csv").read_text().count("\n") == 2


@pytest.mark.filterwarnings("ignore:(overflow|invalid value) encountered:RuntimeWarning")  # it diverges
def test_non_finite_weights_stop_training_before_any_checkpoint(tmp_path):
    """An update that overflows the weights, from a finite loss: caught at the end of the epoch."""
    model, _, items, _ = _setup()
    loader = DataLoader(items, 12)  # one step per epoch: the next loss never shows it
    opt = optim.SGD(model.parameters(), lr=float("inf"))
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1: \d+ arrays hold NaN or inf after the update "
                                               r"\(first model/\S+\); no checkpoint was written"):
        fit(model, make_task("segmentation", 6), loader, DataLoader(items, 6), opt, 2, tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.npz").exists()


def test_resume_names_the_checkpoint_and_key_of_a_bad_history(tmp_path):
    model, loader, items, opt = _setup()
    _fit(model, loader, items, opt, tmp_path, stop_after=1)
    path = tmp_path / "checkpoint.npz"
    with np.load(path) as f:
        entries = {k: f[k] for k in f.files}
    meta = json.loads(str(entries["meta"]))
    meta["extra"]["history"] = []
    np.savez(path, **{**entries, "meta": np.array(json.dumps(meta))})
    with pytest.raises(ValueError, match=r"checkpoint.npz: meta key 'history' cannot be restored.*a list of 1"):
        _fit(*_setup(), tmp_path, resume=True)
