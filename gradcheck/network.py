"""Build a network from a NetworkSpec, infer shapes, and run forward/backward.

All user code (layers, losses, plugins) is called through here, so a raising or misbehaving layer
becomes a LayerError that names the layer, its YAML path and the phase that failed.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, Callable

import numpy as np

from gradcheck import layers as _builtin_layers  # noqa: F401  (registers the built-ins)
from gradcheck.config import NetworkSpec
from gradcheck.data import generate, load_array
from gradcheck.errors import ConfigError, DataError, GradcheckError, LayerError
from gradcheck.contract import Layer, Loss
from gradcheck.plugins import load_entry_points, load_plugin
from gradcheck.registry import layer_class, loss_class
from gradcheck.resources import MemoryBudget, ResourceError


def invoke(unit: Layer | Loss, phase: str, fn: Callable, *args) -> Any:
    """Call ``fn`` (a method of ``unit``) and turn any exception into a LayerError naming it."""
    try:
        return fn(*args)
    except GradcheckError as exc:
        if not exc.message.startswith("layer "):
            exc.message = f"layer {unit.name!r} ({_type_name(unit)}) in {phase}: {exc.message}"
        exc.path = exc.path or getattr(unit, "yaml_path", None)
        exc.where = exc.where or getattr(unit, "yaml_where", None)
        raise
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - user layer code may raise anything
        raise LayerError(f"layer {unit.name!r} ({_type_name(unit)}) raised {type(exc).__name__} "
                         f"in {phase}: {exc}", path=getattr(unit, "yaml_path", None),
                         where=getattr(unit, "yaml_where", None)) from exc


def close_unit(unit) -> None:
    """Call ``unit.close()`` if it has one; a failing close must not hide the error being raised."""
    close = getattr(unit, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - best effort clean-up of user code
            pass


def _type_name(unit) -> str:
    return getattr(type(unit), "registered_name", type(unit).__name__)


@dataclasses.dataclass
class Batch:
    """The data a check runs on: inputs (batch, *input_shape) and targets for the loss."""

    x: np.ndarray
    target: np.ndarray


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

    def forward(self, x: np.ndarray, start: int = 0, inputs: list | None = None) -> np.ndarray:
        """Run layers ``start..end`` on ``x`` (the input of layer ``start``).

        When ``inputs`` is a list, the input of every layer run is recorded in it.
        """
        for i in range(start, len(self.layers)):
            if inputs is not None:
                inputs.append(x)
            layer = self.layers[i]
            x = invoke(layer, "forward", layer.forward, x)
        return x

    def loss_value(self, pred: np.ndarray, target: np.ndarray) -> float:
        """The scalar loss of ``pred`` against ``target``."""
        return float(invoke(self.loss, "forward", self.loss.forward, pred, target))


def build_network(spec: NetworkSpec) -> tuple[Network, Batch]:
    """Load plugins, instantiate and build every layer, infer shapes, and make the check's data."""
    load_entry_points()  # installed packages' layers (once per process)
    for i, ref in enumerate(spec.plugins):
        load_plugin(ref, spec.base_dir, where=spec.source.where(f"plugins[{i}]"))
    dtype = np.dtype(spec.dtype)
    if spec.input.shape is not None:
        # Refuse an impossible input before drawing it.
        MemoryBudget(spec.input.batch, dtype.itemsize).add_activation(spec.input.shape, "input")
    x = _make_input(spec)
    input_shape = tuple(x.shape[1:])
    budget = MemoryBudget(x.shape[0], dtype.itemsize)
    budget.add_activation(input_shape, "input")
    layers, shapes, paths = [], [input_shape], []
    opened: list = []  # every unit instantiated so far, closed again if the build fails
    try:
        for i, layer_spec in enumerate(spec.layers):
            layer = _instantiate(spec, layer_spec, layer_class)
            opened.append(layer)
            rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(0, i)))
            out_shape = _build_layer(spec, layer_spec, layer, shapes[-1], rng, dtype)
            where = f"layer {layer_spec.name!r}, {spec.source.where(layer_spec.path) or layer_spec.path}"
            budget.add_params(layer.params, where)
            budget.add_activation(out_shape, where)
            layers.append(layer)
            shapes.append(out_shape)
            paths.append(layer_spec.path)
        loss = _instantiate(spec, spec.loss, loss_class)
        opened.append(loss)
        try:
            invoke(loss, "build", loss.build, shapes[-1])
        except GradcheckError as exc:
            raise _locate(spec, exc, spec.loss.path,
                          f"the network output has per-sample shape {shapes[-1]}") from None
        paths.append(spec.loss.path)
        network = Network(spec.name, layers, loss, shapes, dtype, paths)
        target = _make_target(spec, network, x.shape[0])
    except BaseException:
        # Layers that hold processes (external layers) must not outlive a failed build.
        for unit in opened:
            close_unit(unit)
        raise
    return network, Batch(x.astype(dtype), target)


def _locate(spec: NetworkSpec, exc: GradcheckError, path: str, context: str | None = None):
    if exc.path and exc.path.startswith(f"{path}."):
        # The unit named the option at fault (layers[2].forward): point at its line.
        exc.where = spec.source.where(exc.path)
    exc.path = exc.path or path
    exc.where = exc.where or spec.source.where(path)
    if context and exc.hint is None:
        exc.hint = context
    return exc


def _instantiate(spec: NetworkSpec, layer_spec, lookup) -> Layer | Loss:
    try:
        cls = lookup(layer_spec.type)
    except ConfigError as exc:
        raise _locate(spec, exc, f"{layer_spec.path}.type" if layer_spec.options or
                      layer_spec.name != layer_spec.type else layer_spec.path) from None
    unknown = _unknown_options(cls, layer_spec.options)
    if unknown:
        accepted = _accepted_options(cls)
        close = difflib.get_close_matches(unknown, accepted, n=1)
        hint = (f"did you mean {close[0]!r}?" if close else
                f"{layer_spec.type} accepts: {', '.join(accepted) or 'no options'}")
        raise spec.error(f"unknown option {unknown!r} for {layer_spec.type}.",
                         f"{layer_spec.path}.{unknown}", hint)
    missing = _missing_options(cls, layer_spec.options)
    if missing:
        raise spec.error(f"{layer_spec.type} needs option {missing!r}.", layer_spec.path,
                         f"write e.g. {{type: {layer_spec.type}, {missing}: ...}}; "
                         f"'gradcheck layers {layer_spec.type}' shows every option")
    try:
        unit = cls(**layer_spec.options)
    except TypeError as exc:
        if "required" in str(exc) or "argument" in str(exc):
            raise spec.error(f"{layer_spec.type} options are wrong: {exc}.", layer_spec.path,
                             f"{layer_spec.type} accepts: {', '.join(_accepted_options(cls))}") from None
        raise _wrap_user(spec, layer_spec, "__init__", exc) from exc
    except GradcheckError as exc:
        raise _locate(spec, exc, layer_spec.path) from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - user layer code may raise anything
        raise _wrap_user(spec, layer_spec, "__init__", exc) from exc
    if not hasattr(unit, "params") or not hasattr(unit, "grads"):
        raise spec.error(f"layer {layer_spec.name!r} ({layer_spec.type}) has no params/grads: its "
                         "__init__ must call super().__init__().", layer_spec.path, cls=LayerError)
    unit.name = layer_spec.name
    unit.yaml_path = layer_spec.path
    unit.yaml_where = spec.source.where(layer_spec.path)
    unit.base_dir = spec.base_dir
    return unit


def _wrap_user(spec, layer_spec, phase: str, exc: Exception) -> LayerError:
    return spec.error(f"layer {layer_spec.name!r} ({layer_spec.type}) raised {type(exc).__name__} "
                      f"in {phase}: {exc}", layer_spec.path, cls=LayerError)


def _accepted_options(cls) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL,
                                                                           p.VAR_KEYWORD)]


def _missing_options(cls, options: dict) -> str | None:
    params = inspect.signature(cls.__init__).parameters
    return next((n for n, p in params.items() if n != "self" and p.default is p.empty and
                 p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in options), None)


def _unknown_options(cls, options: dict) -> str | None:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    accepted = set(_accepted_options(cls))
    return next((key for key in options if key not in accepted), None)


def _build_layer(spec, layer_spec, layer: Layer, input_shape, rng, dtype) -> tuple[int, ...]:
    try:
        out_shape = invoke(layer, "build", layer.build, tuple(input_shape), rng)
    except MemoryError:
        raise spec.error(f"layer {layer_spec.name!r} ({layer_spec.type}) ran out of memory "
                         "creating its parameters.", layer_spec.path,
                         "make the layer smaller (units, filters, kernel)", cls=ResourceError) from None
    except GradcheckError as exc:
        raise _locate(spec, exc, layer_spec.path, f"its input has per-sample shape "
                      f"{tuple(input_shape)}") from None
    if (not isinstance(out_shape, (tuple, list)) or
            not all(isinstance(d, (int, np.integer)) and d >= 1 for d in out_shape)):
        raise spec.error(f"layer {layer_spec.name!r} ({layer_spec.type}): build must return the "
                         f"per-sample output shape as a tuple of positive ints, returned {out_shape!r}.",
                         layer_spec.path, cls=LayerError)
    for pname, value in list(layer.params.items()):
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
            raise spec.error(f"layer {layer_spec.name!r} ({layer_spec.type}): params[{pname!r}] must "
                             f"be a float numpy array, found {type(value).__name__}.", layer_spec.path,
                             cls=LayerError)
        layer.params[pname] = np.ascontiguousarray(value, dtype=dtype)
    return tuple(int(d) for d in out_shape)


def _make_input(spec: NetworkSpec) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(1,)))
    if spec.input.source.file is not None:
        return load_array(spec.input.source, "input").astype(np.float64)
    return generate(spec.input.source, (spec.input.batch, *spec.input.shape), rng, "normal")


def _make_target(spec: NetworkSpec, network: Network, batch: int) -> np.ndarray:
    out_shape = network.shapes[-1]
    labels = network.loss.target_kind == "labels"
    if spec.target is not None and spec.target.file is not None:
        target = load_array(spec.target, "target")
        if labels:
            if not np.all(target == np.round(target)):
                raise DataError("target labels must be integers.", path="target",
                                where=spec.source.where("target"))
            target = target.astype(np.int64)
        expected = (batch,) if labels else (batch, *out_shape)
        if target.shape != expected:
            raise DataError(f"target data has shape {target.shape}; the network needs {expected}.",
                            path="target", where=spec.source.where("target"),
                            hint="targets need one row per input sample")
        return target if labels else target.astype(network.dtype)
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(2,)))
    if labels:
        if spec.target is not None:
            raise spec.error(f"{spec.loss.type} takes integer class labels; they are drawn uniformly "
                             "unless loaded with 'file:'.", "target")
        classes = int(np.prod(out_shape))
        return rng.integers(0, classes, batch)
    return generate(spec.target, (batch, *out_shape), rng, "uniform").astype(network.dtype)
