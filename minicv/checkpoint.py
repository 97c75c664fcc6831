"""Checkpoints: one .npz holding a model's weights, the optimizer's state and the run's metadata.

Written to a temporary file in the same folder, then renamed over the old one, so a crash mid-write
never destroys the last good checkpoint. Read with ``allow_pickle=False`` (a checkpoint cannot run
code) and checked against the model's own shapes before anything is loaded.

Layout: ``model/<name>`` arrays (the state_dict), ``optim/<path>`` arrays (the optimizer's state), and
``meta``: one JSON string with the epoch, the random generators' states, whatever the caller adds, and
the non-array leaves of the optimizer's state.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from minicv import random as mc_random
from minicv.nn import Module
from minicv.tensor import Tensor

_ARRAY = "__array__"


def _split_arrays(tree: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replace each array leaf of a nested dict/list by a reference, collecting the arrays."""
    if isinstance(tree, Tensor):
        tree = tree.detach().numpy()
    if isinstance(tree, np.ndarray):
        arrays[prefix] = tree
        return {_ARRAY: prefix}
    if isinstance(tree, dict):
        return {str(k): _split_arrays(v, f"{prefix}/{k}", arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split_arrays(v, f"{prefix}/{i}", arrays) for i, v in enumerate(tree)]
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _join_arrays(tree: Any, arrays: Any) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY}:
            return np.array(arrays[tree[_ARRAY]])
        return {k: _join_arrays(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join_arrays(v, arrays) for v in tree]
    return tree


def save_checkpoint(path: str | Path, model: Module, optimizer: Any = None, epoch: int = 0, **extra: Any) -> None:
    """Atomically write ``model``'s weights, ``optimizer``'s state, the epoch and JSON-able ``extra``."""
    path = Path(path)
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    optim_tree = _split_arrays(optimizer.state_dict(), "optim", arrays) if optimizer is not None else None
    meta = {"epoch": int(epoch), "rng": mc_random.get_state(), "optim": optim_tree, "extra": extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_meta(path: str | Path) -> dict:
    """A checkpoint's metadata (epoch and what the writer added) without loading any weights."""
    arrays = _read(Path(path))
    meta = json.loads(str(arrays["meta"]))
    return {"epoch": meta["epoch"], **meta["extra"]}


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"checkpoint {path}: not a readable .npz file ({err})") from err
    if "meta" not in arrays:
        raise ValueError(f"checkpoint {path}: not a minicv checkpoint (no 'meta' entry)")
    return arrays


def load_checkpoint(path: str | Path, model: Module, optimizer: Any = None) -> dict:
    """Load a checkpoint into ``model`` (and ``optimizer``); return its metadata (epoch, extra).

    Raises ValueError naming the file when it is missing, unreadable, not a minicv checkpoint, or when
    a weight is missing or has the wrong shape; nothing is loaded then.
    """
    path = Path(path)
    arrays = _read(path)
    meta = json.loads(str(arrays["meta"]))
    expected = model.state_dict()
    weights = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint {path}: does not match the model: missing {missing}, unexpected {unexpected}")
    for name, value in expected.items():
        if tuple(value.shape) != weights[name].shape:
            raise ValueError(
                f"checkpoint {path}: '{name}' has shape {weights[name].shape}, "
                f"but the model expects {tuple(value.shape)}"
            )
    model.load_state_dict(weights)
    if optimizer is not None:
        if meta.get("optim") is None:
            raise ValueError(f"checkpoint {path}: holds no optimizer state")
        optimizer.load_state_dict(_join_arrays(meta["optim"], arrays))
    mc_random.set_state(meta["rng"])
    return {"epoch": meta["epoch"], **meta["extra"]}
