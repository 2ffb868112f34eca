"""``check_layer``: check one layer in isolation, from a test, without writing a YAML file.

The layer is put in a one-layer network under the ``projection`` loss (L = sum(G * y) with a
fixed random G), so its backward is compared with finite differences for every parameter and
for its input, against an arbitrary upstream gradient.
"""

from __future__ import annotations

import numpy as np

from gradcheck.check import run_check
from gradcheck.settings import settings_for
from gradcheck.config import load_config
from gradcheck.errors import ConfigError, LayerError
from gradcheck.contract import Layer
from gradcheck.network import Batch, build_unit, construct, option_error, projected
from gradcheck.registry import layer_class
from gradcheck.report import Report

def check_layer(layer: str | type | Layer, input_shape, *, batch: int = 3, seed: int = 0,
                dtype: str = "float64", mode: str | None = None, eps: float | None = None,
                rtol: float | None = None, atol: float | None = None, samples: int | None = None,
                **layer_options) -> Report:
    """Check the gradients of one layer and return the Report.

    ``layer`` is a registered name (``"conv2d"``), a ``gradcheck.Layer`` subclass (registered or
    not) or an instance; ``input_shape`` is per sample (no batch axis). Other keyword arguments
    are the layer's own options (``units=3``), as in YAML; they are not accepted with an instance.
    The input is drawn standard normal and the upstream gradient G = ``target`` normal, both
    from ``seed``, exactly as a one-layer YAML network under ``loss: projection`` would have them.
    ``mode``/``eps``/``rtol``/``atol``/``samples`` override the defaults as on the command
    line. Raises ``GradcheckError`` subclasses for a bad layer or options.
    """
    input_shape = _shape(input_shape)
    check_options = {"mode": mode, "eps": eps, "rtol": rtol, "atol": atol, "samples": samples}
    unit, name = _instance(layer, layer_options)
    # The equivalent YAML network (an identity layer stands in for the one checked): validates
    # batch/seed/dtype and gives the settings exactly as a YAML network would have them.
    spec = load_config({"name": f"check_layer:{name}", "seed": seed, "dtype": dtype,
                        "input": {"shape": list(input_shape), "batch": batch},
                        "layers": [{"type": "flatten", "name": name}], "loss": "projection",
                        "target": {"data": "normal"}})
    np_dtype = np.dtype(spec.dtype)
    unit.name = name
    # Seeds as the YAML path draws them (gradcheck.build): layer 0's build, the input, the target.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, 0)))
    out_shape = build_unit(unit, input_shape, rng, np_dtype)
    x = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,))).normal(
        size=(batch, *input_shape)).astype(np_dtype)
    target = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,))).normal(
        size=(batch, *out_shape)).astype(np_dtype)
    network = projected(f"check_layer:{name}", unit, input_shape, out_shape, np_dtype)
    return run_check(network, Batch(x, target), settings_for(spec, **check_options))


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
        return layer, getattr(layer, "name", None) or type(layer).__name__
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
