"""``check_layer`` and ``check_function``: check one layer (or a forward/backward function pair)
in isolation, from a test, without writing a YAML file.

The layer is put in a one-layer network under the ``projection`` loss (L = sum(G * y) with a
fixed random G), so its backward is compared with finite differences for every parameter and
for its input, against an arbitrary upstream gradient.
"""

from __future__ import annotations

import inspect

import numpy as np

from gradcheck.check import run_check
from gradcheck.settings import settings_for
from gradcheck.config import load_config
from gradcheck.errors import ConfigError, LayerError
from gradcheck.contract import Layer
from gradcheck.layers.function import Function
from gradcheck.assemble import build_unit, construct, option_error, projected
from gradcheck.network import Batch
from gradcheck.registry import layer_class
from gradcheck.report import Report
from gradcheck.usercode import seed_rng


def check_layer(layer: str | type | Layer, input_shape, *, batch: int = 3, seed: int = 0,
                dtype: str = "float64", mode: str | None = None, eps: float | None = None,
                rtol: float | None = None, atol: float | None = None, samples: int | None = None,
                jobs: int | str | None = None, **layer_options) -> Report:
    """Check the gradients of one layer and return the Report.

    ``layer`` is a registered name (``"conv2d"``), a ``gradcheck.Layer`` subclass (registered or
    not) or an instance; ``input_shape`` is per sample (no batch axis). Other keyword arguments
    are the layer's own options (``units=3``), as in YAML; they are not accepted with an instance.
    The input is drawn standard normal and the upstream gradient G = ``target`` normal, both
    from ``seed``, exactly as a one-layer YAML network under ``loss: projection`` would have them.
    ``mode``/``eps``/``rtol``/``atol``/``samples``/``jobs`` override the defaults as on the
    command line (``jobs``: 1 unless given). Raises ``GradcheckError`` subclasses for a bad
    layer or options.
    """
    input_shape = _shape(input_shape)
    check_options = {"mode": mode, "eps": eps, "rtol": rtol, "atol": atol, "samples": samples,
                     "jobs": jobs}
    unit, name = _instance(layer, layer_options)
    return _check_unit(unit, name, input_shape, batch, seed, dtype, check_options)


def check_function(forward, backward, x, params=(), *, args=(), kwargs=None,
                   mixes_batch: bool = True, name: str | None = None, seed: int = 0,
                   dtype: str = "float64", mode: str | None = None, eps: float | None = None,
                   rtol: float | None = None, atol: float | None = None,
                   samples: int | None = None, jobs: int | str | None = None) -> Report:
    """Check a course-style pair of Python functions and return the Report.

    ``out, cache = forward(x, *params, *args, **kwargs)`` and ``dx, *dparams = backward(dout,
    cache)`` (see the ``function`` layer). ``x``: (batch, *input_shape), the point the check is
    made at; ``params``: a dict (name -> float array, in forward's order) or a list (named after
    forward's parameters). The arrays are used as they are: perturbed in place during the check
    and restored. The pair is checked under the ``projection`` loss like ``check_layer``: dout is
    G normal from ``seed``. Other options as for ``check_layer``.
    """
    x = np.asarray(x)
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise ConfigError(f"check_function: x must be a numeric array of shape (batch, "
                          f"*input_shape), got {x.dtype} of shape {x.shape}.")
    layer = Function(forward, backward, params=_named_params(forward, params), args=args,
                     kwargs=kwargs, mixes_batch=mixes_batch)
    name = name or _layer_name(getattr(forward, "__name__", None), "function")
    check_options = {"mode": mode, "eps": eps, "rtol": rtol, "atol": atol, "samples": samples,
                     "jobs": jobs}
    return _check_unit(layer, name, x.shape[1:], x.shape[0], seed, dtype, check_options, x=x)


def _layer_name(candidate, fallback: str) -> str:
    """``candidate`` where it can name a layer (an identifier, as YAML requires: a lambda's
    "<lambda>" or an instance's "my dense" cannot), else ``fallback``."""
    return candidate if isinstance(candidate, str) and candidate.isidentifier() else fallback


def _check_unit(unit: Layer, name: str, input_shape: tuple[int, ...], batch: int, seed: int,
                dtype: str, check_options: dict, x: np.ndarray | None = None) -> Report:
    """``unit`` (not yet built) alone under the projection loss, at ``x`` or a standard normal
    input, exactly as a one-layer YAML network under ``loss: projection`` would have them."""
    # The equivalent YAML network (an identity layer stands in for the one checked): validates
    # batch/seed/dtype and gives the settings exactly as a YAML network would have them.
    spec = load_config({"name": f"check_layer:{name}", "seed": seed, "dtype": dtype,
                        "input": {"shape": list(input_shape), "batch": batch},
                        "layers": [{"type": "flatten", "name": name}], "loss": "projection",
                        "target": {"data": "normal"}})
    settings = settings_for(spec, **check_options)
    np_dtype = np.dtype(spec.dtype)
    unit.name = name
    # Seeds as the YAML path draws them (gradcheck.build): layer 0's build, the input, the target.
    seed_rng(unit, np.random.SeedSequence(seed, spawn_key=(8, 0)))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, 0)))
    outputs = build_unit(unit, input_shape, rng, np_dtype)
    if len(outputs) != 1:
        raise LayerError(f"layer {name!r} has {len(outputs)} outputs; check_layer checks a layer "
                         "with one input and one output.",
                         hint="check it in a YAML network whose layers read each output")
    out_shape = outputs[0]
    if x is None:
        x = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,))).normal(
            size=(batch, *input_shape))
    x = x.astype(np_dtype)
    target = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,))).normal(
        size=(batch, *out_shape)).astype(np_dtype)
    network = projected(f"check_layer:{name}", unit, input_shape, out_shape, np_dtype)
    return run_check(network, Batch(x, target), settings)


def _instance(layer, options: dict) -> tuple[Layer, str]:
    """The layer to check and its name in the report: a registered name or class is constructed
    from ``options`` (validated as in YAML); an instance is taken as it is."""
    if isinstance(layer, str):
        cls, name = layer_class(layer), layer
    elif isinstance(layer, type):
        if not issubclass(layer, Layer):
            raise LayerError(f"check_layer expects a gradcheck.Layer subclass, an instance or a "
                             f"registered name, got {layer!r}.")
        registered = getattr(layer, "registered_name", None)
        cls = layer
        name = registered if registered and _registered_as(registered) is layer else layer.__name__
    elif isinstance(layer, Layer):
        if options:
            raise ConfigError(f"options {sorted(options)} cannot be applied to an already "
                              f"constructed {type(layer).__name__}.",
                              hint="pass the class and the options, or construct it with them")
        return layer, _layer_name(getattr(layer, "name", None), type(layer).__name__)
    else:
        raise LayerError(f"check_layer expects a layer name, a gradcheck.Layer subclass or "
                         f"instance, got {type(layer).__name__}.")
    problem = option_error(cls, options, name)
    if problem is not None:
        raise problem[0]
    return construct(cls, options, name, f"layer {name!r}"), name


def _registered_as(name: str):
    try:
        return layer_class(name)
    except ConfigError:
        return None


def _shape(input_shape) -> tuple[int, ...]:
    shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
    if not shape or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape):
        raise ConfigError(f"input_shape must be positive ints (per sample, no batch axis), "
                          f"got {input_shape!r}.")
    return tuple(int(d) for d in shape)


def _named_params(forward, params) -> dict:
    """``params`` as name -> array: a dict as it is, a list named after forward's parameters
    that follow x (``affine_forward(x, w, b)``: w, b), or param0, param1, ... if those are
    unknown."""
    if isinstance(params, dict):
        return params
    if not isinstance(params, (list, tuple)):
        raise ConfigError(f"check_function: params must be a dict (name -> array) or a list of "
                          f"arrays, got {type(params).__name__}.")
    try:
        listed = [p for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:len(params) + 1]
    except (TypeError, ValueError):
        listed = []
    names = [p.name for p in listed] if len(listed) == len(params) else [
        f"param{i}" for i in range(len(params))]
    return dict(zip(names, params))
