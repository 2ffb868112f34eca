"""Calling code written without gradcheck in mind: course function pairs and foreign classes.

Such code draws from numpy's global generator or reseeds it (cs231n's dropout calls
``np.random.seed``), writes into its arguments (``x -= x.max()``), may hand out arrays it reuses
and returns whatever its author chose. So every call runs with the global random state of numpy
and of Python's ``random`` set to a seed of the layer's own and restored afterwards (a check
neither disturbs the caller's state nor depends on it, and repeated calls draw alike), on copies
of the arrays gradcheck owns; what comes back is validated with messages that name the function
and copied (``astype``), so a later call cannot change an output the engine keeps. The options
the function and object layers share (``args``, ``kwargs``, ``mixes_batch``) are validated here.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np

from gradcheck.errors import ConfigError, GradcheckError, LayerError
from gradcheck.plugins import exception_origin, load_reference

# Rows of the batch a layer is probed with at build (its output shape, its batch independence).
PROBE_BATCH = 3


@contextlib.contextmanager
def saved_rng():
    """numpy's global random state and Python's ``random`` restored on leaving to what they were
    on entering, also after an exception."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def call(label: str, seed: int, fn, *args, **kwargs):
    """``call_seeded`` inside ``saved_rng``: one call that leaves the global state as it was."""
    with saved_rng():
        return call_seeded(label, seed, fn, *args, **kwargs)


def call_seeded(label: str, seed: int, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with numpy's and Python's global generators seeded with ``seed``
    first (the caller restores them with ``saved_rng``: saving costs ~25x seeding, so a run of
    calls shares one save). An exception ``fn`` raises becomes a LayerError naming ``label`` (the
    user's function) and the line that raised."""
    np.random.seed(seed)
    random.seed(seed)
    try:
        return fn(*args, **kwargs)
    except (GradcheckError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise LayerError(f"{label} raised {type(exc).__name__}: {exc}"
                         f"{exception_origin(exc)}.") from exc


def option_path(unit, key: str) -> str | None:
    """The YAML path of ``unit``'s option ``key`` (``layers[2].forward``), when built from YAML."""
    return f"{unit.yaml_path}.{key}" if unit.yaml_path else None


def resolve(ref, what: str, unit) -> object:
    """The callable ``ref`` names (``file.py:name`` / ``module:name``), or ``ref`` itself when it
    is already callable (the Python API); errors are located at ``unit``'s option ``what``."""
    if callable(ref):
        return ref
    return load_reference(ref, unit.base_dir, what, where=unit.yaml_where,
                          path=option_path(unit, what))


def label_of(ref) -> str:
    """How messages name a user function: its YAML reference, or its Python name."""
    if isinstance(ref, str):
        return ref
    return getattr(ref, "__qualname__", None) or getattr(ref, "__name__", None) or repr(ref)


def describe(value) -> str:
    """A short description of a returned value for an error message."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


def expect_array(value, what: str, shape: tuple[int, ...], why: str) -> np.ndarray:
    """``value`` if it is a float array of ``shape``, else a LayerError saying ``what`` it is and
    ``why`` that shape was expected."""
    if not isinstance(value, np.ndarray):
        raise LayerError(f"{what} is {describe(value)}, expected a numpy array of shape "
                         f"{tuple(shape)} ({why}).")
    if value.shape != tuple(shape):
        raise LayerError(f"{what} has shape {value.shape}, expected {tuple(shape)} ({why}).",
                         hint="a gradient has the shape of what it differentiates")
    if not np.issubdtype(value.dtype, np.floating):
        raise LayerError(f"{what} has dtype {value.dtype}, expected floats.")
    return value


def expect_batch(value, what: str, batch: int) -> np.ndarray:
    """``value`` if it is a float array with ``batch`` rows (a forward's output), else a
    LayerError."""
    if not isinstance(value, np.ndarray) or value.ndim < 2 or value.shape[0] != batch:
        raise LayerError(f"{what} is {describe(value)}, expected an array of shape (batch, ...) "
                         f"with the {batch} rows of its input.",
                         hint="forward maps x of shape (batch, *input_shape) to (batch, *output)")
    if not np.issubdtype(value.dtype, np.floating):
        raise LayerError(f"{what} has dtype {value.dtype}, expected floats.")
    return value


def batch_dependence(run, x: np.ndarray) -> str | None:
    """Why ``run`` (x -> y) is not applied to each sample on its own, or None if it is.

    The engine may evaluate a layer that does not mix the batch on single rows or on copies of
    the batch stacked along it, so each sample alone and a batch stacked twice must give the
    rows the batch gives: a batch statistic or a mask drawn for x's shape does not.
    """
    whole = run(x)
    for i in range(len(x)):
        alone = run(x[i:i + 1])
        if not _same(alone[0], whole[i]):
            return f"sample {i} run alone gives another output than in a batch of {len(x)}"
    twice = run(np.concatenate([x, x]))
    if not _same(twice[len(x):], whole):
        return "a batch stacked twice gives another output for its second copy than the batch"
    return None


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    # A BLAS product may block a 1-row and a 3-row batch differently: a few ulps, not a mask.
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-9, atol=1e-12 * (1 + scale)))


def extra_arguments(args, kwargs, layer: str) -> tuple[list, dict]:
    """``args:`` (a list) and ``kwargs:`` (a mapping of identifiers), validated."""
    args = [] if args is None else args
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(args, (list, tuple)):
        raise ConfigError(f"{layer} option 'args' must be a list of extra positional arguments, "
                          f"got {describe(args)}.",
                          hint="e.g. args: [{stride: 1, pad: 1}]")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier()
                                               for k in kwargs):
        raise ConfigError(f"{layer} option 'kwargs' must map argument names to values, got "
                          f"{kwargs!r}.", hint="e.g. kwargs: {stride: 1}")
    return list(args), dict(kwargs)


def check_mixes_batch(value, layer: str) -> bool:
    """The ``mixes_batch`` option, validated."""
    if not isinstance(value, bool):
        raise ConfigError(f"{layer} option 'mixes_batch' must be true or false, got {value!r}.")
    return value


def check_independent(layer, input_shape, rng: np.random.Generator) -> None:
    """Refuse ``mixes_batch: false`` for a layer whose samples are not independent."""
    x = rng.standard_normal((PROBE_BATCH, *input_shape))
    reason = batch_dependence(layer.forward, x)
    if reason is not None:
        raise LayerError(f"mixes_batch is false, but {reason}.",
                         path=option_path(layer, "mixes_batch"),
                         hint="remove 'mixes_batch: false' (a batch statistic, or a mask drawn "
                         "for x's shape, needs the whole batch at every call)")
