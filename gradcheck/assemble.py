"""Build a network from a spec: instantiate every layer through the registry, build it on the
shapes of the tensors it reads (in the order ``gradcheck.wiring`` gives), name its outputs,
share parameters, and refuse what cannot work with an error located in the YAML."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable

import numpy as np

from gradcheck import registry, wiring
from gradcheck.config import NetworkSpec
from gradcheck.contract import Layer, Loss
from gradcheck.errors import ConfigError, GradcheckError, LayerError
from gradcheck.explain.axes import declaration_problem
from gradcheck.layers.losses import Projection
from gradcheck.network import Network
from gradcheck.resources import ResourceError
from gradcheck.usercode import close_unit, invoke, seed_rng, type_name

# Called after each layer is built with (layer, its output shapes, where), e.g. to account for
# memory before the next layer allocates.
OnBuilt = Callable[[Layer, list, str], None]


def assemble(spec: NetworkSpec, input_shapes: dict[str, tuple[int, ...]],
             on_built: OnBuilt | None = None) -> Network:
    """Instantiate and build every layer and the loss of ``spec`` for the per-sample shapes of
    its inputs. Layer and loss types must already be registered (built-ins are; plugins are
    loaded by ``gradcheck.build``). Every unit instantiated is closed again if the build fails."""
    dtype = np.dtype(spec.dtype)
    wired = wiring.resolve(spec)
    shapes = dict(input_shapes)
    outputs: dict[str, list[str]] = {}  # layer name -> the tensors it makes
    layers, sources, made, paths, built = [], [], [], [], {}
    opened: list = []
    try:
        for i in wired.order:
            layer_spec = spec.layers[i]
            layer = _instantiate(spec, layer_spec, registry.layer_class)
            opened.append(layer)
            refs = [_tensor(spec, ref, outputs, layer_spec) for ref in wired.sources[layer.name]]
            _check_arity(spec, layer_spec, layer, len(refs))
            layer.input_names = list(wired.sources[layer.name])
            in_shapes = [shapes[t] for t in refs]
            rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(0, i)))
            seed_rng(layer, np.random.SeedSequence(spec.seed, spawn_key=(8, i)))
            out_shapes = _build_layer(spec, layer_spec, layer,
                                      in_shapes if len(in_shapes) > 1 else in_shapes[0], rng, dtype)
            names = ([layer.name] if len(out_shapes) == 1 else
                     [f"{layer.name}.{k}" for k in range(len(out_shapes))])
            outputs[layer.name] = names
            shapes.update(zip(names, out_shapes))
            if on_built is not None:
                on_built(layer, out_shapes, f"layer {layer_spec.name!r}, "
                         f"{spec.source.where(layer_spec.path) or layer_spec.path}")
            layers.append(layer)
            sources.append(refs)
            made.append(names)
            paths.append(layer_spec.path)
            built[layer.name] = layer
        shared = {}
        for i in wired.order:
            shared.update(_share(spec, spec.layers[i], built))
        loss = _instantiate(spec, spec.loss, registry.loss_class)
        opened.append(loss)
        pred = _tensor(spec, wired.loss_source, outputs, spec.loss)
        try:
            invoke(loss, "build", loss.build, shapes[pred])
        except GradcheckError as exc:
            raise _locate(spec, exc, spec.loss.path,
                          f"the network output has per-sample shape {shapes[pred]}") from None
        sources.append([pred])
        paths.append(spec.loss.path)
    except BaseException:
        # Layers that hold processes (external layers) must not outlive a failed build.
        for unit in opened:
            close_unit(unit)
        raise
    integer = frozenset(i.name for i in spec.inputs if i.dtype == "int")
    network = Network(spec.name, layers, loss, dtype, sources=sources, outputs=made,
                      tensor_shapes=shapes, input_names=[i.name for i in spec.inputs],
                      integer=integer, paths=paths)
    index = {layer.name: k for k, layer in enumerate(layers)}
    network.shared = {(index[name], pname): (index[owner], owned, transposed)
                      for (name, pname), (owner, owned, transposed) in shared.items()}
    network.warnings = _unused(network)
    return network


def _tensor(spec, ref: str, outputs: dict[str, list[str]], layer_spec) -> str:
    """The tensor ``ref`` names (``layer``, ``layer.k`` or a network input), checked against
    the outputs of the layers built so far."""
    base, k = wiring.split_reference(ref)
    if base not in outputs:
        return ref  # a network input (wiring.resolve checked the name)
    names = outputs[base]
    where = f"{layer_spec.path}.inputs" if layer_spec.inputs else layer_spec.path
    if k is None and len(names) > 1:
        raise spec.error(f"layer {base!r} has {len(names)} outputs: say which is read.", where,
                         f"write one of {', '.join(names)}")
    if k is not None and (len(names) == 1 or k >= len(names)):
        raise spec.error(f"{ref!r}: layer {base!r} has {len(names)} output(s).", where,
                         f"write {names[0] if len(names) == 1 else ', '.join(names)}")
    return names[0] if k is None else names[k]


def arity(layer) -> tuple[int, int | None]:
    """How many inputs ``layer.forward`` takes: (at least, at most; None for any number)."""
    params = [p for p in inspect.signature(layer.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return sum(p.default is p.empty for p in params if p.kind != p.VAR_POSITIONAL), None
    return sum(p.default is p.empty for p in params), len(params)


def _check_arity(spec, layer_spec, layer, given: int) -> None:
    least, most = arity(layer)
    if given < least or (most is not None and given > most):
        takes = (f"{least}" if least == most else f"{least} to {most}" if most is not None
                 else f"at least {least}")
        raise spec.error(f"layer {layer_spec.name!r} ({layer_spec.type}) takes {takes} "
                         f"input(s), but {given} {'is' if given == 1 else 'are'} wired to it.",
                         f"{layer_spec.path}.inputs" if layer_spec.inputs else layer_spec.path,
                         "list its inputs by name: inputs: [a, b]; forward's signature says "
                         "how many it takes")


def _share(spec, layer_spec, built: dict) -> dict[tuple[str, str], tuple[str, str, bool]]:
    """Put the shared parameters in place: the owner's array (or its transpose, a view), so a
    perturbation of one is a perturbation of every use. Returns (layer, parameter) -> (owner,
    its parameter, transposed)."""
    layer = built[layer_spec.name]
    found = {}
    for name, (owner, pname, transposed) in layer_spec.share.items():
        where = f"{layer_spec.path}.share.{name}"
        if name not in layer.params:
            raise spec.error(f"layer {layer.name!r} has no parameter {name!r} to share (it has: "
                             f"{', '.join(layer.params) or 'none'}).", where)
        if pname not in built[owner].params:
            close = difflib.get_close_matches(pname, list(built[owner].params), n=1)
            raise spec.error(f"layer {owner!r} has no parameter {pname!r}.", where,
                             f"did you mean {close[0]!r}?" if close else None)
        source = built[owner].params[pname]
        shared = source.T if transposed else source
        if shared.shape != layer.params[name].shape:
            ref = f"{owner}.{pname}{'.T' if transposed else ''}"
            raise spec.error(f"layer {layer.name!r}: {name} has shape {layer.params[name].shape} "
                             f"but {ref} has {shared.shape}.", where,
                             "share a parameter of the same shape, or its transpose (.T)")
        layer.params[name] = shared
        found[(layer.name, name)] = (owner, pname, transposed)
    return found


def _unused(network: Network) -> list[str]:
    """Warnings for layer outputs nothing reads."""
    read = {t for src in network.sources for t in src}
    return [f"the output {t!r} of layer {layer.name!r} is never read (only its parameters "
            "are checked, against a zero upstream gradient)"
            for layer, outs in zip(network.layers, network.outputs) for t in outs
            if t not in read]


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
    batch's target: the network ``check_layer`` runs."""
    loss = Projection()
    loss.name = f"{layer.name}:projection"
    loss.build(output_shape)
    return Network.chain(name, [layer], loss, [tuple(input_shape), tuple(output_shape)], dtype)


def build_unit(layer: Layer, input_shape, rng, dtype) -> list[tuple[int, ...]]:
    """``layer.build`` validated: it must return a per-sample shape of positive ints (a list of
    them for several outputs) and create float parameters, which are then cast to the network's
    ``dtype`` (as are float buffers). Returns the output shapes as a list."""
    label = f"layer {layer.name!r} ({type_name(layer)})"
    try:
        out = invoke(layer, "build", layer.build, input_shape, rng)
    except MemoryError:
        raise ResourceError(f"{label} ran out of memory creating its parameters.",
                            hint="make the layer smaller (units, filters, kernel)") from None
    outs = out if isinstance(out, list) and out and all(
        isinstance(o, (tuple, list)) for o in out) else [out]
    for shape in outs:
        if (not isinstance(shape, (tuple, list)) or
                not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape)):
            raise LayerError(f"{label}: build must return the per-sample output shape as a tuple "
                             f"of positive ints (a list of them for several outputs), returned "
                             f"{out!r}.")
    for pname, value in list(layer.params.items()):
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
            raise LayerError(f"{label}: params[{pname!r}] must be a float numpy array, found "
                             f"{type(value).__name__}.")
        layer.params[pname] = np.ascontiguousarray(value, dtype=dtype)
    for bname, value in list(layer.buffers.items()):
        if not isinstance(value, np.ndarray):
            raise LayerError(f"{label}: buffers[{bname!r}] must be a numpy array, found "
                             f"{type(value).__name__}.",
                             hint="buffers hold array state such as running statistics; keep "
                                  "other settings as plain attributes")
        if np.issubdtype(value.dtype, np.floating):
            layer.buffers[bname] = np.ascontiguousarray(value, dtype=dtype)
    problem = declaration_problem(layer, input_shape[0] if isinstance(input_shape, list)
                                  else input_shape)
    if problem:
        raise LayerError(f"{label}: {problem}.", hint="declare one name per axis of the input "
                         "(without the batch axis) and of each parameter, or none at all")
    return [tuple(int(d) for d in shape) for shape in outs]


def _build_layer(spec, layer_spec, layer: Layer, input_shape, rng, dtype) -> list:
    try:
        return build_unit(layer, input_shape, rng, dtype)
    except GradcheckError as exc:
        shown = input_shape if isinstance(input_shape, list) else tuple(input_shape)
        context = None if isinstance(exc, ResourceError) else (
            f"its input has per-sample shape {shown}")
        raise _locate(spec, exc, layer_spec.path, context) from None
