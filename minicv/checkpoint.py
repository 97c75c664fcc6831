"""Checkpoints: one .npz holding a model's weights, the optimizer's state and the run's metadata.

Written to a temporary file in the same folder, fsynced, then renamed over the old one, so a crash
mid-write never destroys the last good checkpoint (temporary files a killed run left behind are removed
by the next save). Weights or optimizer state holding NaN or inf are never written.

Read all or nothing: every entry the model (and optimizer) needs and every metadata key is checked
before anything is assigned, so a bad file leaves the model as it was. Only those entries are read, each
after its .npy header shows the shape and dtype expected (an entry the model does not use is never
decompressed), and never with pickle (a checkpoint cannot run code).

Layout: ``model/<name>`` arrays (the state_dict), ``optim/<path>`` arrays (the optimizer's state), and
``meta``: one JSON string with the epoch, the random generators' states, whatever the caller adds, and
the non-array leaves of the optimizer's state.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from minicv import random as mc_random
from minicv.errors import CheckpointError
from minicv.nn import Module
from minicv.tensor import Tensor

_ARRAY = "__array__"
_META_LIMIT = 64 * 2**20  # bytes of JSON metadata; the history of a 1000-epoch run takes about 1 MiB
_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


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


def _join_arrays(tree: Any, read: Callable[[tuple[str, ...]], np.ndarray], where: tuple[str, ...] = ()) -> Any:
    """Undo ``_split_arrays``: ``read(where)`` gives the array referenced at path ``where`` of the tree."""
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY}:
            return read(where)
        return {k: _join_arrays(v, read, (*where, k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join_arrays(v, read, (*where, str(i))) for i, v in enumerate(tree)]
    return tree


def _arrays(model: Module, optimizer: Any) -> tuple[dict[str, np.ndarray], Any]:
    """The entries a checkpoint of ``model`` and ``optimizer`` holds, and the optimizer's tree of the rest."""
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    optim_tree = _split_arrays(optimizer.state_dict(), "optim", arrays) if optimizer is not None else None
    return arrays, optim_tree


def _non_finite(arrays: Mapping[str, np.ndarray]) -> list[str]:
    return [key for key, value in arrays.items() if value.dtype.kind in "fc" and not np.isfinite(value).all()]


def non_finite_state(model: Module, optimizer: Any = None) -> list[str]:
    """The checkpoint entries (``model/<name>``, ``optim/state/<i>/<name>``) holding NaN or inf."""
    return _non_finite(_arrays(model, optimizer)[0])


def save_checkpoint(path: str | Path, model: Module, optimizer: Any = None, epoch: int = 0, **extra: Any) -> None:
    """Atomically write ``model``'s weights, ``optimizer``'s state, the epoch and JSON-able ``extra``.

    Raises ValueError naming the entries, and writes nothing, when a weight or state holds NaN or inf.
    """
    path = Path(path)
    arrays, optim_tree = _arrays(model, optimizer)
    bad = _non_finite(arrays)
    if bad:
        raise ValueError(f"checkpoint {path}: not saved, {len(bad)} of {len(arrays)} arrays hold NaN or inf: "
                         f"{_names(bad)}")
    meta = {"epoch": int(epoch), "rng": mc_random.get_state(), "optim": optim_tree, "extra": extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, meta=np.array(json.dumps(meta)), **arrays)  # as load_checkpoint reads
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it the checkpoint
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def _remove_orphans(path: Path) -> None:
    """Delete the temporary files of saves to ``path`` that were killed before their rename."""
    pattern = re.compile(re.escape(path.name) + r"[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp's names
    for orphan in path.parent.glob(glob.escape(path.name) + "*.tmp"):
        if pattern.fullmatch(orphan.name):
            orphan.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; Windows cannot open a folder)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------- reading
class _Archive:
    """An open .npz whose entries are read one at a time, each only after its header is checked."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path}: no such file")
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except _UNREADABLE as err:
            raise CheckpointError(f"checkpoint {path}: not a readable .npz file ({err})") from err
        self.entries = {name.removesuffix(".npy"): name for name in self.zip.namelist() if name.endswith(".npy")}
        if "meta" not in self.entries:
            self.zip.close()
            raise CheckpointError(f"checkpoint {path}: not a minicv checkpoint (no 'meta' entry)")

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.zip.close()

    def read(self, key: str, shapes: tuple[tuple[int, ...], ...] | None, dtype: Any = None,
             limit: int | None = None) -> np.ndarray:
        """Entry ``key``, after its header shows one of ``shapes`` (any with None, then at most
        ``limit`` bytes) and a dtype that casts to ``dtype`` (numbers; text for ``meta``)."""
        if key not in self.entries:
            raise CheckpointError(f"checkpoint {self.path}: entry '{key}' is missing")
        try:
            with self.zip.open(self.entries[key]) as f:
                version = np.lib.format.read_magic(f)
                if version not in _HEADERS:
                    raise ValueError(f".npy format version {version} (minicv writes 1.0 and 2.0)")
                shape, _, found = _HEADERS[version](f)
        except _UNREADABLE as err:
            raise CheckpointError(f"checkpoint {self.path}: entry '{key}' is unreadable ({err})") from err
        what = f"checkpoint {self.path}: entry '{key}'"
        if found.hasobject or found.kind not in "biufcU":
            raise CheckpointError(f"{what} holds {found} values; minicv reads numbers and text, never Python objects")
        if dtype is not None and not np.can_cast(found, dtype, "same_kind"):
            raise CheckpointError(f"{what} holds {found} values, but {np.dtype(dtype)} values are expected")
        if shapes is not None and shape not in shapes:
            raise CheckpointError(f"{what} has shape {shape}, but the model expects {' or '.join(map(str, shapes))}")
        if limit is not None and found.itemsize * int(np.prod(shape, dtype=object)) > limit:
            raise CheckpointError(f"{what} has shape {shape} of {found}, over the limit of {limit} bytes")
        try:
            with self.zip.open(self.entries[key]) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except _UNREADABLE as err:
            raise CheckpointError(f"{what} is unreadable ({err})") from err

    def meta(self) -> dict:
        """The checked metadata: ``epoch`` (int >= 0), ``rng``, ``optim`` (None or a dict), ``extra`` (dict)."""
        text = str(self.read("meta", ((),), np.str_, _META_LIMIT))
        try:
            meta = json.loads(text)
        except ValueError as err:  # JSONDecodeError, or a number too long to convert
            raise CheckpointError(f"checkpoint {self.path}: entry 'meta' is not valid JSON ({err})") from err
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {self.path}: entry 'meta' is not a JSON object")
        checks = {
            "epoch": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative int"),
            "rng": (mc_random.is_state, "a state of minicv's random generator"),
            "optim": (lambda v: v is None or isinstance(v, dict), "null or an object"),
            "extra": (lambda v: isinstance(v, dict), "an object"),
        }
        for key, (ok, expected) in checks.items():
            if key not in meta:
                raise CheckpointError(f"checkpoint {self.path}: meta key '{key}' is missing")
            if not ok(meta[key]):
                raise CheckpointError(f"checkpoint {self.path}: meta key '{key}' is not {expected}: "
                                 f"{_shorten(repr(meta[key]))}")
        return meta


def read_meta(path: str | Path) -> dict:
    """A checkpoint's metadata (epoch and what the writer added) without loading any weights."""
    with _Archive(Path(path)) as archive:
        meta = archive.meta()
    return {"epoch": meta["epoch"], **meta["extra"]}


def load_checkpoint(path: str | Path, model: Module, optimizer: Any = None) -> dict:
    """Load a checkpoint into ``model`` (and ``optimizer``); return its metadata (epoch, extra).

    Raises CheckpointError (a ValueError) naming the file and the entry or key when it is missing,
    unreadable, not a minicv checkpoint, when a weight or optimizer state is missing or has the wrong
    shape or dtype, or when the metadata is not what minicv writes; nothing is loaded then. Warns
    (RuntimeWarning) when weights hold NaN or inf.
    """
    path = Path(path)
    expected = model.state_dict()
    with _Archive(path) as archive:
        meta = archive.meta()
        names = {key.removeprefix("model/") for key in archive.entries if key.startswith("model/")}
        missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"checkpoint {path}: does not match the model: missing {missing}, "
                                  f"unexpected {unexpected}")
        weights = {
            name: archive.read(f"model/{name}", (value.shape,), value.dtype) for name, value in expected.items()
        }
        optim_state = None
        if optimizer is not None:
            if meta["optim"] is None:
                raise CheckpointError(f"checkpoint {path}: holds no optimizer state")
            optim_state = _join_arrays(meta["optim"], _optimizer_reader(archive, optimizer))
    if optim_state is not None:
        try:  # checks everything before it assigns anything, so the model is loaded only once this passed
            optimizer.load_state_dict(optim_state)
        except (ValueError, TypeError, KeyError) as err:
            raise CheckpointError(f"checkpoint {path}: meta key 'optim' does not fit the optimizer: {err}") from err
    model.load_state_dict(weights)  # keys and shapes were checked above: cannot fail
    mc_random.set_state(meta["rng"])
    bad = _non_finite({f"model/{name}": value for name, value in weights.items()})
    if bad:
        warnings.warn(f"checkpoint {path}: {len(bad)} of {len(weights)} weight arrays hold NaN or inf "
                      f"({_names(bad)}); the model's outputs will be meaningless", RuntimeWarning, stacklevel=2)
    return {"epoch": meta["epoch"], **meta["extra"]}


def _optimizer_reader(archive: _Archive, optimizer: Any) -> Callable[[tuple[str, ...]], np.ndarray]:
    """Reads the array referenced at a path of the optimizer's tree: only ``state/<i>/<name>``, from its
    own entry, shaped as parameter i or a scalar (the step count)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def read(where: tuple[str, ...]) -> np.ndarray:
        key = "/".join(("optim", *where))
        if not (len(where) == 3 and where[0] == "state" and where[1].isdecimal() and int(where[1]) < len(params)):
            raise CheckpointError(f"checkpoint {archive.path}: meta key 'optim' has an array at '{key}', where the "
                             f"optimizer's state for one of its {len(params)} parameters is expected")
        param = params[int(where[1])]
        return archive.read(key, (tuple(param.shape), ()), param.dtype)

    return read


def _names(keys: list[str], shown: int = 5) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
