"""Name -> class registries for layers and losses. Built-ins register exactly like plugins."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable, TypeVar

from gradcheck.contract import Layer, Loss
from gradcheck.errors import ConfigError, PluginError

_LAYERS: dict[str, type] = {}
_LOSSES: dict[str, type] = {}

T = TypeVar("T", bound=type)


def _register(table: dict, kind: str, name: str) -> Callable[[T], T]:
    base = Layer if kind == "layer" else Loss
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginError(f"{kind} name {name!r} must be an identifier such as 'my_dense'.")

    def decorator(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(
                f"@register_{kind}({name!r}) was applied to {cls!r}, which is not a subclass of "
                f"gradcheck.{base.__name__}.")
        existing = table.get(name)
        if existing is not None and existing is not cls and _qualname(existing) != _qualname(cls):
            raise PluginError(
                f"{kind} type {name!r} is already registered by {_qualname(existing)}; "
                f"{_qualname(cls)} cannot take the same name.", hint="choose another name")
        table[name] = cls
        cls.registered_name = name
        return cls

    return decorator


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_layer(name: str) -> Callable[[T], T]:
    """Class decorator: make a ``gradcheck.Layer`` subclass available as ``type: name`` in YAML."""
    return _register(_LAYERS, "layer", name)


def register_loss(name: str) -> Callable[[T], T]:
    """Class decorator: make a ``gradcheck.Loss`` subclass available as ``loss: name`` in YAML."""
    return _register(_LOSSES, "loss", name)


def _lookup(table: dict, kind: str, name: str):
    try:
        return table[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), table, n=1)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"known {kind} types: {', '.join(sorted(table))}; a plugin can add more")
        raise ConfigError(f"unknown {kind} type {name!r}.", hint=hint) from None


def layer_class(name: str) -> type:
    """Return the layer class registered as ``name``."""
    return _lookup(_LAYERS, "layer", name)


def loss_class(name: str) -> type:
    """Return the loss class registered as ``name``."""
    return _lookup(_LOSSES, "loss", name)


def layer_names() -> list[str]:
    """Registered layer types, sorted."""
    return sorted(_LAYERS)


def loss_names() -> list[str]:
    """Registered loss types, sorted."""
    return sorted(_LOSSES)


def options(cls: type) -> list[tuple[str, str, str | None]]:
    """The YAML options of a layer or loss class, read from its constructor: (name, annotation,
    ``repr`` of the default, or None when the option is required)."""
    result = []
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = "" if p.annotation is p.empty else (
            p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__",
                                                                        str(p.annotation)))
        result.append((name, annotation, None if p.default is p.empty else repr(p.default)))
    return result


def unknown_option(cls: type, given: dict) -> str | None:
    """The first key of ``given`` the constructor of ``cls`` does not accept (None if all are)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    accepted = {name for name, _, _ in options(cls)}
    return next((key for key in given if key not in accepted), None)


def missing_option(cls: type, given: dict) -> str | None:
    """The first required constructor option of ``cls`` absent from ``given`` (None if none)."""
    return next((name for name, _, default in options(cls)
                 if default is None and name not in given), None)
