"""Inputs and targets for a check: generated from the seed, or loaded from .npy/.npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradcheck.config import DataSpec, NetworkSpec
from gradcheck.errors import DataError
from gradcheck.usercode import invoke


def load_array(spec: DataSpec, what: str) -> np.ndarray:
    """Load ``spec.file`` (``.npy``, or ``.npz`` with ``spec.key``) and reject non-finite values."""
    import zipfile  # only a data file needs it (2 ms of every check's start-up)

    path: Path = spec.file
    if not path.is_file():
        raise DataError(f"{what} data file {str(path)!r} does not exist.", path=spec.path,
                        hint="data paths are relative to the YAML file's folder")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{what} data file {str(path)!r} is not a readable .npy/.npz file ({exc}).",
                        path=spec.path) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if spec.key is None:
                if len(keys) != 1:
                    raise DataError(f"{what} data file {str(path)!r} holds arrays {keys}; say which "
                                    "one with 'key:'.", path=spec.path)
                key = keys[0]
            elif spec.key not in keys:
                raise DataError(f"{what} data file {str(path)!r} has no array {spec.key!r} "
                                f"(it has {', '.join(keys) or 'none'}).", path=f"{spec.path}.key")
            else:
                key = spec.key
            try:
                array = loaded[key]
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise DataError(f"array {key!r} in {str(path)!r} is corrupt ({exc}).",
                                path=spec.path) from None
    else:
        array = loaded
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{what} data in {str(path)!r} has dtype {array.dtype}; expected real numbers.",
                        path=spec.path)
    if array.ndim < 1 or array.shape[0] < 1:
        raise DataError(f"{what} data in {str(path)!r} has shape {array.shape}; expected a batch "
                        "axis first.", path=spec.path)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise DataError(f"{what} data in {str(path)!r} holds {bad} NaN/Inf value(s).", path=spec.path,
                        hint="clean the data; gradients of non-finite values cannot be checked")
    return array


def generate(spec: DataSpec | None, shape: tuple[int, ...], rng: np.random.Generator,
             default: str) -> np.ndarray:
    """Draw an array of ``shape`` as ``spec`` says (``default`` kind when there is no spec)."""
    kind = spec.data if spec is not None else default
    if kind == "normal":
        mean, std = (spec.mean, spec.std) if spec is not None else (0.0, 1.0)
        return rng.normal(mean, std, shape)
    low, high = (spec.low, spec.high) if spec is not None else (0.0, 1.0)
    return rng.uniform(low, high, shape)


def make_inputs(spec: NetworkSpec) -> dict[str, np.ndarray]:
    """Every network input by name, (batch, *shape): loaded from its ``file`` or drawn from the
    seed; integer inputs as int64 ids (see ``_ids``)."""
    found = {}
    for i, source in enumerate(spec.inputs):
        # The first input keeps the stream it always had, so single-input reports are unchanged.
        key = (1,) if i == 0 else (1, i)
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=key))
        if source.source.file is not None:
            array = load_array(source.source, source.name)
            found[source.name] = (_checked_ids(source, array) if source.dtype == "int"
                                  else array.astype(np.float64))
        elif source.dtype == "int":
            found[source.name] = _ids(rng, (source.batch, *source.shape), source.vocab)
        else:
            found[source.name] = generate(source.source, (source.batch, *source.shape), rng,
                                          "normal")
    rows = {array.shape[0] for array in found.values()}
    if len(rows) > 1:
        raise spec.error(f"the inputs have different batch sizes {sorted(rows)}; every input "
                         "needs one row per sample of the same batch.", "inputs")
    return found


def _ids(rng: np.random.Generator, shape: tuple[int, ...], vocab: int) -> np.ndarray:
    """Token ids uniform in [0, vocab), with a repeat in every sample that has room for one: a
    backward that counts a repeated id once (``dW[ids] += g``) must have something to miss."""
    ids = rng.integers(0, vocab, shape)
    flat = ids.reshape(shape[0], -1)
    if vocab > 1 and flat.shape[1] > 1:
        for row in flat:
            if len(np.unique(row)) == len(row):
                a, b = rng.choice(len(row), size=2, replace=False)
                row[b] = row[a]
    return ids


def _checked_ids(source, array: np.ndarray) -> np.ndarray:
    if not np.all(array == np.round(array)):
        raise DataError(f"input {source.name!r} holds token ids, but its data file has "
                        "non-integer values.", path=source.path)
    ids = array.astype(np.int64)
    if source.vocab is not None and (ids.min() < 0 or ids.max() >= source.vocab):
        raise DataError(f"input {source.name!r}: ids must lie in [0, {source.vocab}), the file "
                        f"has {int(ids.min())}..{int(ids.max())}.", path=source.path)
    return ids


def make_target(spec: NetworkSpec, loss, out_shape: tuple[int, ...], batch: int,
                dtype: np.dtype) -> np.ndarray:
    """Targets for ``loss`` on outputs of per-sample ``out_shape``: integer class labels of the
    shape the loss declares (``Loss.label_shape``: one per sample, or one per time step) or values
    shaped like the output, loaded from ``target.file`` or drawn."""
    labels = loss.target_kind == "labels"
    if labels:
        label_shape, classes = invoke(loss, "label_shape", loss.label_shape, out_shape)
    if spec.target is not None and spec.target.file is not None:
        target = load_array(spec.target, "target")
        if labels:
            if not np.all(target == np.round(target)):
                raise DataError("target labels must be integers.", path="target",
                                where=spec.source.where("target"))
            target = target.astype(np.int64)
        expected = (batch, *label_shape) if labels else (batch, *out_shape)
        if target.shape != expected:
            raise DataError(f"target data has shape {target.shape}; the network needs {expected}.",
                            path="target", where=spec.source.where("target"),
                            hint="targets need one row per input sample")
        return target if labels else target.astype(dtype)
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(2,)))
    if labels:
        _labels_spec(spec, classes)
        return rng.integers(0, classes, (batch, *label_shape))
    if spec.target is not None and spec.target.dtype == "int":
        raise spec.error(f"{spec.loss.type} compares values, not integer labels.",
                         "target.dtype", "drop 'dtype: int' (and 'vocab:')")
    return generate(spec.target, (batch, *out_shape), rng, "uniform").astype(dtype)


def _labels_spec(spec: NetworkSpec, classes: int) -> None:
    """A ``target:`` block for drawn labels may only say they are ids of ``classes`` classes."""
    target = spec.target
    if target is None:
        return
    if target.data is not None or target.dtype != "int":
        raise spec.error(f"{spec.loss.type} takes integer class labels; they are drawn "
                         "uniformly unless loaded with 'file:'.", "target",
                         f"write target: {{dtype: int, vocab: {classes}}} or load them")
    if target.vocab is not None and target.vocab != classes:
        raise spec.error(f"target vocab {target.vocab} does not match the {classes} classes the "
                         f"network's output has for {spec.loss.type}.", "target.vocab")
