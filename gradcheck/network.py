"""The network: layers built from a spec, shape inference, and forward and backward passes.

Every call into a layer goes through ``gradcheck.usercode.invoke``, so a raising or misbehaving
layer becomes a LayerError naming it. ``run`` is the one validating forward/backward pass: the
checker's (which refuses NaN/Inf) and the diagnosis's (which records where they start).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from typing import Callable

import numpy as np

from gradcheck import layers as _builtin_layers  # noqa: F401  (registers the built-ins)
from gradcheck import registry
from gradcheck.config import NetworkSpec
from gradcheck.contract import Layer, Loss
from gradcheck.errors import ConfigError, GradcheckError, LayerError
from gradcheck.explain.axes import declaration_problem
from gradcheck.layers.losses import Projection
from gradcheck.resources import ResourceError
from gradcheck.usercode import close_unit, invoke, seed_rng, type_name


@dataclasses.dataclass
class Batch:
    """The data a check runs on: inputs (batch, *input_shape) and targets for the loss."""

    x: np.ndarray
    target: np.ndarray


@dataclasses.dataclass
class Pass:
    """One forward and backward: ``inputs[k]`` is what unit k received (the loss is unit
    ``len(layers)``), ``grad_in[k]`` dL/d(that input), ``grads[(k, name)]`` dL/dparam.

    A pass that allowed non-finite values stops where they start: ``inputs`` is then shorter
    (its last entry the first non-finite output), ``loss`` NaN, and ``loss_error`` holds the
    loss's own complaint when it refused the predictions.
    """

    inputs: list[np.ndarray]
    loss: float
    grad_in: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    grads: dict[tuple[int, str], np.ndarray] = dataclasses.field(default_factory=dict)
    loss_error: str | None = None

    @property
    def pred(self) -> np.ndarray:
        return self.inputs[-1]


class Network:
    """A built chain of layers followed by a loss.

    ``shapes[i]`` is the per-sample input shape of layer ``i``; ``shapes[-1]`` is the output shape
    the loss sees. The loss is addressed as unit index ``len(layers)`` where a uniform index helps.
    """

    def __init__(self, name: str, layers: list[Layer], loss: Loss, shapes: list[tuple[int, ...]],
                 dtype: np.dtype, paths: list[str] | None = None):
        self.name = name
        self.layers = layers
        self.loss = loss
        self.shapes = shapes
        self.dtype = np.dtype(dtype)
        self.paths = paths or [""] * (len(layers) + 1)

    @property
    def units(self) -> list[Layer | Loss]:
        """Layers followed by the loss."""
        return [*self.layers, self.loss]

    def close(self) -> None:
        """Release what any unit holds outside Python (external layers' child processes)."""
        for unit in self.units:
            close_unit(unit)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def set_training(self, training: bool) -> None:
        """Put every layer in training (default) or evaluation mode."""
        for unit in self.units:
            unit.training = training

    def forward(self, x: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Run layers ``start`` up to ``stop`` (exclusive; default: all) on ``x``, the input of
        layer ``start``."""
        for layer in self.layers[start:stop]:
            x = invoke(layer, "forward", layer.forward, x)
        return x

    def loss_value(self, pred: np.ndarray, target: np.ndarray) -> float:
        """The scalar loss of ``pred`` against ``target``."""
        return float(invoke(self.loss, "forward", self.loss.forward, pred, target))

    def run(self, batch: Batch, allow_nonfinite: bool = False) -> Pass:
        """Forward and backward through every unit, validating what each returns (shapes, float
        dtypes, a gradient for every parameter).

        Non-finite values are a LayerError naming the first unit that produced them, unless
        ``allow_nonfinite``: then the pass stops there (see ``Pass``), so a diagnosis can say
        where they start.
        """
        inputs, x = [], batch.x
        # A diagnosis expects overflow and reports it; the checker refuses it below.
        with np.errstate(all="ignore") if allow_nonfinite else contextlib.nullcontext():
            for layer, shape in zip(self.layers, self.shapes[1:]):
                inputs.append(x)
                x = invoke(layer, "forward", layer.forward, x)
                _expect_array(layer, "forward", x, (batch.x.shape[0], *shape), allow_nonfinite)
                if not np.all(np.isfinite(x)):
                    return Pass([*inputs, x], float("nan"))
            inputs.append(x)
            try:
                loss = self.loss_value(x, batch.target)
            except GradcheckError as exc:
                if not allow_nonfinite:
                    raise
                return Pass(inputs, float("nan"), loss_error=exc.message)
            result = Pass(inputs, loss)
            if not np.isfinite(loss):
                if allow_nonfinite:
                    return result
                raise LayerError(f"the loss {self.loss.name!r} is {loss} on the check's data.",
                                 hint="run 'gradcheck diagnose' to find the first layer producing "
                                      "NaN/Inf")
            grad = invoke(self.loss, "backward", self.loss.backward)
            _expect_array(self.loss, "backward", grad, x.shape, allow_nonfinite)
            self._record(len(self.layers), self.loss, grad, result, allow_nonfinite)
            for k in range(len(self.layers) - 1, -1, -1):
                layer = self.layers[k]
                grad = invoke(layer, "backward", layer.backward, grad)
                _expect_array(layer, "backward", grad, inputs[k].shape, allow_nonfinite)
                self._record(k, layer, grad, result, allow_nonfinite)
        return result

    @staticmethod
    def _record(k: int, unit, grad: np.ndarray, result: Pass, allow_nonfinite: bool) -> None:
        result.grad_in[k] = np.array(grad, dtype=np.float64)
        missing = [name for name in unit.params if name not in unit.grads]
        if missing:
            raise _unit_error(unit, f"layer {unit.name!r}: backward set no gradient for "
                              f"parameter(s) {', '.join(map(repr, missing))}.",
                              hint="store dL/dparam in self.grads[name]")
        for name, param in unit.params.items():
            value = unit.grads[name]
            if not isinstance(value, np.ndarray) or value.shape != param.shape:
                raise _unit_error(unit, f"layer {unit.name!r}: grads[{name!r}] has shape "
                                  f"{np.shape(value)}, expected the parameter's shape "
                                  f"{param.shape}.")
            if not allow_nonfinite and not np.all(np.isfinite(value)):
                raise _unit_error(unit, f"layer {unit.name!r}: grads[{name!r}] holds NaN/Inf "
                                  "values.")
            result.grads[(k, name)] = np.array(value, dtype=np.float64)


def _unit_error(unit, message: str, hint: str | None = None) -> LayerError:
    """A LayerError located at the unit's YAML entry (when it was built from a config)."""
    return LayerError(message, hint=hint, path=getattr(unit, "yaml_path", None),
                      where=getattr(unit, "yaml_where", None))


def _expect_array(unit, phase: str, value, shape, allow_nonfinite: bool) -> None:
    where = f"layer {unit.name!r} ({type_name(unit)})"
    if not isinstance(value, np.ndarray):
        raise _unit_error(unit, f"{where}: {phase} returned {type(value).__name__}, expected a "
                          "numpy array.")
    if value.shape != tuple(shape):
        hint = ("backward must return dL/dx with the shape of the forward input"
                if phase == "backward" else "build must return the shape forward produces")
        raise _unit_error(unit, f"{where}: {phase} returned shape {value.shape}, expected "
                          f"{tuple(shape)}.", hint=hint)
    if not np.issubdtype(value.dtype, np.floating):
        raise _unit_error(unit, f"{where}: {phase} returned dtype {value.dtype}, expected a "
                          "float array.")
    if not allow_nonfinite and not np.all(np.isfinite(value)):
        raise _unit_error(unit, f"{where}: {phase} produced NaN/Inf values.",
                          hint="run 'gradcheck diagnose' for the first layer that goes "
                               "non-finite")


# Called after each layer is built with (layer, its output shape, where), e.g. to account for
# memory before the next layer allocates.
OnBuilt = Callable[[Layer, tuple[int, ...], str], None]


def assemble(spec: NetworkSpec, input_shape: tuple[int, ...],
             on_built: OnBuilt | None = None) -> Network:
    """Instantiate and build every layer and the loss of ``spec`` for per-sample ``input_shape``.

    Layer and loss types must already be registered (built-ins are; plugins are loaded by
    ``gradcheck.build``). Every unit instantiated is closed again if the build fails.
    """
    dtype = np.dtype(spec.dtype)
    layers, shapes, paths = [], [tuple(input_shape)], []
    opened: list = []
    try:
        for i, layer_spec in enumerate(spec.layers):
            layer = _instantiate(spec, layer_spec, registry.layer_class)
            opened.append(layer)
            rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(0, i)))
            seed_rng(layer, np.random.SeedSequence(spec.seed, spawn_key=(8, i)))
            out_shape = _build_layer(spec, layer_spec, layer, shapes[-1], rng, dtype)
            if on_built is not None:
                on_built(layer, out_shape, f"layer {layer_spec.name!r}, "
                         f"{spec.source.where(layer_spec.path) or layer_spec.path}")
            layers.append(layer)
            shapes.append(out_shape)
            paths.append(layer_spec.path)
        loss = _instantiate(spec, spec.loss, registry.loss_class)
        opened.append(loss)
        try:
            invoke(loss, "build", loss.build, shapes[-1])
        except GradcheckError as exc:
            raise _locate(spec, exc, spec.loss.path,
                          f"the network output has per-sample shape {shapes[-1]}") from None
        paths.append(spec.loss.path)
    except BaseException:
        # Layers that hold processes (external layers) must not outlive a failed build.
        for unit in opened:
            close_unit(unit)
        raise
    return Network(spec.name, layers, loss, shapes, dtype, paths)


def _locate(spec: NetworkSpec, exc: GradcheckError, path: str, context: str | None = None):
    if exc.path and exc.path.startswith(f"{path}."):
        # The unit named the option at fault (layers[2].forward): point at its line.
        exc.where = spec.source.where(exc.path)
    exc.path = exc.path or path
    exc.where = exc.where or spec.source.where(path)
    if context and exc.hint is None:
        exc.hint = context
    return exc


def option_error(cls: type, options: dict, type_label: str) -> tuple[ConfigError, str] | None:
    """The first problem of ``options`` for the constructor of ``cls`` (registered as
    ``type_label``): the error and the option it concerns ("" for the entry as a whole)."""
    accepted = [name for name, _, _ in registry.options(cls)]
    unknown = registry.unknown_option(cls, options)
    if unknown:
        close = difflib.get_close_matches(unknown, accepted, n=1)
        return ConfigError(f"unknown option {unknown!r} for {type_label}.",
                           hint=f"did you mean {close[0]!r}?" if close else
                           f"{type_label} accepts: {', '.join(accepted) or 'no options'}"), unknown
    missing = registry.missing_option(cls, options)
    if missing:
        return ConfigError(f"{type_label} needs option {missing!r}.",
                           hint=f"write e.g. {{type: {type_label}, {missing}: ...}}; "
                                f"'gradcheck layers {type_label}' shows every option"), ""
    return None


def construct(cls: type, options: dict, type_label: str, unit_label: str) -> Layer | Loss:
    """Construct ``cls(**options)`` (the options already passed ``option_error``); a constructor
    that raises, or forgets ``super().__init__()``, is a GradcheckError naming ``unit_label``."""
    try:
        unit = cls(**options)
    except TypeError as exc:
        if "required" in str(exc) or "argument" in str(exc):
            accepted = ", ".join(name for name, _, _ in registry.options(cls))
            raise ConfigError(f"{type_label} options are wrong: {exc}.",
                              hint=f"{type_label} accepts: {accepted}") from None
        raise _user_failure(unit_label, exc) from exc
    except GradcheckError:
        raise
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - user layer code may raise anything
        raise _user_failure(unit_label, exc) from exc
    if not hasattr(unit, "params") or not hasattr(unit, "grads"):
        raise LayerError(f"{unit_label} has no params/grads: its __init__ must call "
                         "super().__init__().")
    return unit


def _user_failure(unit_label: str, exc: Exception) -> LayerError:
    return LayerError(f"{unit_label} raised {type(exc).__name__} in __init__: {exc}")


def _instantiate(spec: NetworkSpec, layer_spec, lookup) -> Layer | Loss:
    try:
        cls = lookup(layer_spec.type)
    except ConfigError as exc:
        raise _locate(spec, exc, f"{layer_spec.path}.type" if layer_spec.options or
                      layer_spec.name != layer_spec.type else layer_spec.path) from None
    problem = option_error(cls, layer_spec.options, layer_spec.type)
    if problem is not None:
        error, option = problem
        raise _locate(spec, error, f"{layer_spec.path}.{option}" if option else layer_spec.path)
    unit_label = f"layer {layer_spec.name!r} ({layer_spec.type})"
    try:
        unit = construct(cls, layer_spec.options, layer_spec.type, unit_label)
    except GradcheckError as exc:
        raise _locate(spec, exc, layer_spec.path)
    unit.name = layer_spec.name
    unit.yaml_path = layer_spec.path
    unit.yaml_where = spec.source.where(layer_spec.path)
    unit.base_dir = spec.base_dir
    return unit


def projected(name: str, layer: Layer, input_shape: tuple[int, ...],
              output_shape: tuple[int, ...], dtype) -> Network:
    """``layer`` (already built) alone under the projection loss L = sum(G * y), G being the
    batch's target: the network ``check_layer`` and the isolated checks of blame run."""
    loss = Projection()
    loss.name = f"{layer.name}:projection"
    loss.build(output_shape)
    return Network(name, [layer], loss, [tuple(input_shape), tuple(output_shape)], dtype)


def build_unit(layer: Layer, input_shape: tuple[int, ...], rng, dtype) -> tuple[int, ...]:
    """``layer.build`` validated: it must return a per-sample shape of positive ints and create
    float parameters, which are then cast to the network's ``dtype``."""
    label = f"layer {layer.name!r} ({type_name(layer)})"
    try:
        out_shape = invoke(layer, "build", layer.build, tuple(input_shape), rng)
    except MemoryError:
        raise ResourceError(f"{label} ran out of memory creating its parameters.",
                            hint="make the layer smaller (units, filters, kernel)") from None
    if (not isinstance(out_shape, (tuple, list)) or
            not all(isinstance(d, (int, np.integer)) and d >= 1 for d in out_shape)):
        raise LayerError(f"{label}: build must return the per-sample output shape as a tuple of "
                         f"positive ints, returned {out_shape!r}.")
    for pname, value in list(layer.params.items()):
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
            raise LayerError(f"{label}: params[{pname!r}] must be a float numpy array, found "
                             f"{type(value).__name__}.")
        layer.params[pname] = np.ascontiguousarray(value, dtype=dtype)
    problem = declaration_problem(layer, input_shape)
    if problem:
        raise LayerError(f"{label}: {problem}.", hint="declare one name per axis of the input "
                         "(without the batch axis) and of each parameter, or none at all")
    return tuple(int(d) for d in out_shape)


def _build_layer(spec, layer_spec, layer: Layer, input_shape, rng, dtype) -> tuple[int, ...]:
    try:
        return build_unit(layer, input_shape, rng, dtype)
    except GradcheckError as exc:
        context = None if isinstance(exc, ResourceError) else (
            f"its input has per-sample shape {tuple(input_shape)}")
        raise _locate(spec, exc, layer_spec.path, context) from None
