"""Inputs and targets for a check: generated from the seed, or loaded from .npy/.npz files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from gradcheck.config import DataSpec, NetworkSpec
from gradcheck.errors import DataError
from gradcheck.usercode import invoke


def load_array(spec: DataSpec, what: str) -> np.ndarray:
    """Load ``spec.file`` (``.npy``, or ``.npz`` with ``spec.key``) and reject non-finite values."""
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


def make_input(spec: NetworkSpec) -> np.ndarray:
    """The network input (batch, *shape): loaded from ``input.file`` or drawn from the seed."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(1,)))
    if spec.input.source.file is not None:
        return load_array(spec.input.source, "input").astype(np.float64)
    return generate(spec.input.source, (spec.input.batch, *spec.input.shape), rng, "normal")


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
        if spec.target is not None:
            raise spec.error(f"{spec.loss.type} takes integer class labels; they are drawn "
                             "uniformly unless loaded with 'file:'.", "target")
        return rng.integers(0, classes, (batch, *label_shape))
    return generate(spec.target, (batch, *out_shape), rng, "uniform").astype(dtype)
