"""Checkpoints load all or nothing, read only what the model uses, and are written durably."""

import json
import os
import stat
import tracemalloc

import numpy as np
import pytest

import minicv as mc
from minicv import optim
from minicv.checkpoint import load_checkpoint, read_meta, save_checkpoint
from minicv.cli import UsageError, load_model
from minicv.models import build_model


def _model_and_optimizer(seed=0):
    mc.manual_seed(seed)
    model = build_model("segnet", 6, widths=(4, 4, 4))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    return model, opt


def _stepped(seed=0):
    """A model and an Adam that has stepped once, so the optimizer has state to save."""
    model, opt = _model_and_optimizer(seed)
    model(mc.tensor(np.random.default_rng(seed).random((2, 3, 16, 16), dtype=np.float32))).sum().backward()
    opt.step()
    return model, opt


def _rewrite(path, change, compressed=False):
    """Rewrite the .npz at ``path`` with ``change(entries)`` applied to its dict of entries."""
    with np.load(path) as f:
        entries = {k: f[k] for k in f.files}
    change(entries)
    (np.savez_compressed if compressed else np.savez)(path, **entries)


def _change_meta(change):
    def apply(entries):
        meta = json.loads(str(entries["meta"]))
        change(meta)
        entries["meta"] = np.array(json.dumps(meta))

    return apply


def _snapshot(model, opt):
    state = opt.state_dict()
    return model.state_dict(), state, mc.random.get_state()


def _assert_unchanged(model, opt, snapshot):
    weights, state, rng = snapshot
    for key, value in weights.items():
        np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=key)
    now = opt.state_dict()
    assert now["param_groups"] == state["param_groups"]
    assert now["state"].keys() == state["state"].keys()
    for i, entries in state["state"].items():
        for name, value in entries.items():
            np.testing.assert_array_equal(now["state"][i][name], value, err_msg=f"{i}/{name}")
    assert mc.random.get_state() == rng


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of a stepped segnet + Adam, and a different model + Adam to load it into."""
    path = tmp_path / "ck.npz"
    save_checkpoint(path, *_stepped(seed=0), epoch=3, history=[])
    return path, *_stepped(seed=1)


def test_missing_optimizer_state_loads_nothing(saved):
    path, model, opt = saved
    _rewrite(path, lambda entries: entries.pop("optim/state/0/exp_avg"))
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"ck\.npz: entry 'optim/state/0/exp_avg' is missing"):
        load_checkpoint(path, model, opt)
    _assert_unchanged(model, opt, before)


def test_optimizer_state_missing_from_the_metadata_too_loads_nothing(saved):
    """Without the entry and its mention in meta, Adam would fail on its next step: refused up front."""
    path, model, opt = saved
    _rewrite(path, lambda entries: entries.pop("optim/state/0/exp_avg"))
    _rewrite(path, _change_meta(lambda meta: meta["optim"]["state"]["0"].pop("exp_avg")))
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"ck\.npz: meta key 'optim' .*parameter 0 holds \['exp_avg_sq', 'step'\]"):
        load_checkpoint(path, model, opt)
    _assert_unchanged(model, opt, before)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda entries: entries.update(meta=np.array("{not json")), "entry 'meta' is not valid JSON"),
        (lambda entries: entries.update(meta=np.array("[1, 2]")), "entry 'meta' is not a JSON object"),
        (_change_meta(lambda meta: meta.pop("epoch")), "meta key 'epoch' is missing"),
        (_change_meta(lambda meta: meta.update(epoch="3")), "meta key 'epoch' is not a non-negative int"),
        (_change_meta(lambda meta: meta.update(epoch=-1)), "meta key 'epoch' is not a non-negative int"),
        (_change_meta(lambda meta: meta.pop("rng")), "meta key 'rng' is missing"),
        (_change_meta(lambda meta: meta["rng"].update(bit_generator="MT19937")), "meta key 'rng' is not a state"),
        (_change_meta(lambda meta: meta["rng"]["state"].update(state=-1)), "meta key 'rng' is not a state"),
        (_change_meta(lambda meta: meta["rng"].pop("state")), "meta key 'rng' is not a state"),
        (_change_meta(lambda meta: meta.update(extra=[])), "meta key 'extra' is not an object"),
        (_change_meta(lambda meta: meta.update(optim=[])), "meta key 'optim' is not null or an object"),
        (_change_meta(lambda meta: meta["optim"].pop("param_groups")), "meta key 'optim' .*'param_groups'"),
        (_change_meta(lambda meta: meta["optim"]["state"].update({"99": {}})), "names parameter 99"),
        (_change_meta(lambda meta: meta["optim"]["state"].update({"x": {}})), "names parameter x"),
        (_change_meta(lambda meta: meta["optim"]["param_groups"].append({"params": []})), "number of parameters"),
        (_change_meta(lambda meta: meta["optim"]["param_groups"][0].update(lr={"__array__": "model/x"})),
         "array at 'optim/param_groups/0/lr'"),
        (lambda entries: entries.update(meta=np.array([b"x"])), "entry 'meta' holds |S1 values"),
        (lambda entries: entries.update({"model/down.0.0.1.bias": entries["model/down.0.0.1.bias"].astype(str)}),
         "entry 'model/down.0.0.1.bias' holds <U\\d+ values, but float32 values are expected"),
    ],
)
def test_tampered_metadata_names_the_file_and_key_and_loads_nothing(saved, tamper, message):
    path, model, opt = saved
    _rewrite(path, tamper)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"ck\.npz: .*" + message):
        load_checkpoint(path, model, opt)
    _assert_unchanged(model, opt, before)


def test_read_meta_checks_the_metadata_too(saved):
    path, _, _ = saved
    _rewrite(path, _change_meta(lambda meta: meta.pop("epoch")))
    with pytest.raises(ValueError, match=r"ck\.npz: meta key 'epoch' is missing"):
        read_meta(path)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda config: config["kwargs"].update(colour="red"), r"'config.kwargs' does not build .*colour"),
        (lambda config: config.pop("num_classes"), "'config.num_classes' is missing"),
        (lambda config: config.update(model="resnet"), "'config.model' is not one of"),
        (lambda config: config.update(classes=["a"]), "'config.classes' names 1 classes"),
        (lambda config: config.update(kwargs=[]), "'config.kwargs' is not an object"),
    ],
)
def test_a_bad_model_config_names_the_file_and_key(tmp_path, tamper, message):
    """``minicv eval`` and ``predict`` rebuild the model from the config ``minicv train`` saved."""
    model, opt = _model_and_optimizer()
    config = {"model": "segnet", "num_classes": 6, "classes": list("abcdef"), "kwargs": {"widths": [4, 4, 4]},
              "image_size": [16, 16]}
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt, config=config)
    assert load_model(str(path), "numpy")[1] == config
    tamper(config)
    save_checkpoint(path, model, opt, config=config)
    with pytest.raises(UsageError, match=r"ck\.npz: meta key " + message):  # minicv eval: one line
        load_model(str(path), "numpy")


def _peak_bytes_while(call):
    tracemalloc.start()
    try:
        call()
    except ValueError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    "tamper",
    [
        lambda entries: entries.update(unused=np.zeros(2**25, np.float32)),  # loaded, never read
        lambda entries: entries.update({"model/down.0.0.1.bias": np.zeros(2**25, np.float32)}),
        lambda entries: entries.update({"optim/state/0/exp_avg": np.zeros(2**25, np.float32)}),
        lambda entries: entries.update(meta=np.array("x" * 2**25)),
    ],
    ids=["unused entry", "model entry", "optimizer entry", "meta"],
)
def test_entries_the_model_does_not_use_or_of_the_wrong_size_are_never_read(saved, tamper):
    """A few hundred KB of compressed zeros that would expand to 128 MiB: the header says so first."""
    path, model, opt = saved
    _rewrite(path, tamper, compressed=True)
    assert path.stat().st_size < 2**20
    assert _peak_bytes_while(lambda: load_checkpoint(path, model, opt)) < 2**24


def test_loading_warns_about_non_finite_weights(saved):
    path, model, _ = saved
    _rewrite(path, lambda entries: entries["model/down.0.0.0.weight"].flat.__setitem__(0, np.nan))
    warning = r"ck\.npz: 1 of \d+ weight arrays hold NaN or inf \(model/down.0.0.0.weight\)"
    with pytest.warns(RuntimeWarning, match=warning):
        load_checkpoint(path, model)


def test_non_finite_weights_or_state_are_never_saved(tmp_path):
    path = tmp_path / "ck.npz"
    model, opt = _stepped()
    save_checkpoint(path, model, opt, epoch=1)
    before = path.read_bytes()
    next(iter(opt.state.values()))["exp_avg_sq"][0] = np.inf
    with pytest.raises(ValueError, match=r"ck\.npz: not saved, 1 of \d+ arrays hold NaN or inf: optim/state/0/exp_av"):
        save_checkpoint(path, model, opt, epoch=2)
    model.down[0][0][0].weight.data[0] = np.nan
    with pytest.raises(ValueError, match="model/down.0.0.0.weight"):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


def test_a_killed_save_leaves_nothing_behind_once_saved_again(tmp_path):
    model, opt = _model_and_optimizer()
    orphans = [tmp_path / "checkpoint.npzk1_x9q0z.tmp", tmp_path / "checkpoint.npz3vbq7m2a.tmp"]
    others = [tmp_path / "best.npzk1_x9q0z.tmp", tmp_path / "checkpoint.npz.tmp", tmp_path / "notes.tmp"]
    for file in orphans + others:
        file.write_bytes(b"partial")
    save_checkpoint(tmp_path / "checkpoint.npz", model, opt)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint.npz", *(p.name for p in others)])


def test_the_file_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def record_fsync(fd):
        mode = os.fstat(fd).st_mode
        events.append(("file" if stat.S_ISREG(mode) and os.fstat(fd).st_size else "folder", "fsync"))
        fsync(fd)

    def record_replace(src, dst):
        events.append(("file", "replace"))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    save_checkpoint(tmp_path / "ck.npz", *_model_and_optimizer())
    assert events == [("file", "fsync"), ("file", "replace"), ("folder", "fsync")]
