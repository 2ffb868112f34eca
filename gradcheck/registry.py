"""Name -> class registries for layers and losses. Built-ins register exactly like plugins.

The tables are process-global; ``registry_scope()`` undoes what is registered inside it, so one
process (a pytest session) can check a correct and a buggy class under the same type name.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import weakref
from typing import Callable, Iterator, TypeVar

from gradcheck.contract import Layer, Loss
from gradcheck.errors import ConfigError, PluginError

_LAYERS: dict[str, type] = {}
_LOSSES: dict[str, type] = {}
# Every registration ever made, (kind, name, class), in order; scopes never undo it. A plugin
# imported once but loaded again after its scope ended gets its registrations back from it.
_HISTORY: list[tuple[str, str, type]] = []
_builtins_loaded = False

T = TypeVar("T", bound=type)


def _ensure_builtins() -> None:
    """Import the built-in layers (which registers them) before the tables are read: ``import
    gradcheck`` stays cheap, so nothing else may have imported them yet."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import gradcheck.layers  # noqa: F401 - importing registers them


def _table(kind: str) -> dict:
    return _LAYERS if kind == "layer" else _LOSSES


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
        if (kind, name, cls) not in _HISTORY:
            _HISTORY.append((kind, name, cls))
        return cls

    return decorator


@contextlib.contextmanager
def registry_scope() -> Iterator[None]:
    """A context in which layers and losses may be registered and are forgotten at its end:
    by decorator, plugin file, module or YAML ``plugins:``. A name free outside the scope is free
    again after it, so tests can give one type name to a correct and a buggy class in turn; a
    name taken outside stays taken inside.

    Built-in layers are registered before the scope starts, so they outlive it. A plugin loaded
    again after its scope ended registers its classes again, although Python imports its module
    only once. Scopes nest.
    """
    _ensure_builtins()
    saved = {kind: dict(_table(kind)) for kind in ("layer", "loss")}
    try:
        yield
    finally:
        for kind, entries in saved.items():
            _table(kind).clear()
            _table(kind).update(entries)


def mark() -> int:
    """A bookmark in the history of registrations, for ``made_since``."""
    return len(_HISTORY)


def made_since(bookmark: int) -> list[tuple[str, str, type]]:
    """The registrations (kind, name, class) first made after ``bookmark``: what loading a plugin
    registered, including classes of modules the plugin imported."""
    return _HISTORY[bookmark:]


def made_by(module_name: str) -> list[tuple[str, str, type]]:
    """The registrations of classes defined in the module ``module_name``."""
    return [entry for entry in _HISTORY if entry[2].__module__ == module_name]


def reinstate(registrations) -> None:
    """Register again (kind, name, class) entries a scope that has ended removed: loading an
    already imported plugin does not run its decorators again. A name another class has taken
    since is a PluginError, as registering it anew would be."""
    for kind, name, cls in registrations:
        _register(_table(kind), kind, name)(cls)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_layer(name: str) -> Callable[[T], T]:
    """Class decorator: make a ``gradcheck.Layer`` subclass available as ``type: name`` in YAML."""
    return _register(_LAYERS, "layer", name)


def register_loss(name: str) -> Callable[[T], T]:
    """Class decorator: make a ``gradcheck.Loss`` subclass available as ``loss: name`` in YAML."""
    return _register(_LOSSES, "loss", name)


def _lookup(table: dict, kind: str, name: str):
    _ensure_builtins()
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
    _ensure_builtins()
    return sorted(_LAYERS)


def loss_names() -> list[str]:
    """Registered loss types, sorted."""
    _ensure_builtins()
    return sorted(_LOSSES)


# The parameters of each class's constructor: ``inspect.signature`` takes about 0.1 ms a class,
# and every layer of every build asks for them several times (a check of bench N3 spent 0.9 ms
# of its 2.7 ms build there).
_CONSTRUCTOR_PARAMETERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _constructor_parameters(cls: type) -> tuple[inspect.Parameter, ...]:
    known = _CONSTRUCTOR_PARAMETERS.get(cls)
    if known is None:
        known = _CONSTRUCTOR_PARAMETERS[cls] = tuple(
            inspect.signature(cls.__init__).parameters.values())
    return known


def options(cls: type) -> list[tuple[str, str, str | None]]:
    """The YAML options of a layer or loss class, read from its constructor: (name, annotation,
    ``repr`` of the default, or None when the option is required)."""
    result = []
    for p in _constructor_parameters(cls):
        name = p.name
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = "" if p.annotation is p.empty else (
            p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__",
                                                                        str(p.annotation)))
        result.append((name, annotation, None if p.default is p.empty else repr(p.default)))
    return result


def unknown_option(cls: type, given: dict) -> str | None:
    """The first key of ``given`` the constructor of ``cls`` does not accept (None if all are)."""
    if any(p.kind == p.VAR_KEYWORD for p in _constructor_parameters(cls)):
        return None
    accepted = {name for name, _, _ in options(cls)}
    return next((key for key in given if key not in accepted), None)


def missing_option(cls: type, given: dict) -> str | None:
    """The first required constructor option of ``cls`` absent from ``given`` (None if none)."""
    return next((name for name, _, default in options(cls)
                 if default is None and name not in given), None)
