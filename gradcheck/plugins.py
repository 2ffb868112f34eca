"""Load user plugin layers from files or importable modules named by the user."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path

from gradcheck.contract import Layer, Loss
from gradcheck.errors import ConfigError, PluginError

ENTRY_POINT_GROUP = "gradcheck.layers"
# Like PYTEST_DISABLE_PLUGIN_AUTOLOAD: a way out when an installed package's plugin is broken.
ENV_NO_AUTOLOAD = "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD"
_entry_points_loaded = False


def load_plugin(ref: str, base_dir: Path, where: str | None = None) -> None:
    """Import the plugin ``ref``: a ``.py`` file (relative to ``base_dir``) or a module name.

    Importing runs its ``@register_layer`` decorators. Only code the user named is ever run.
    """
    if ref.endswith(".py") or "/" in ref or "\\" in ref:
        _load_file((base_dir / ref).resolve(), where)
    else:
        _load_module(ref, where)


def load_spec_plugins(spec) -> None:
    """Load installed packages' layers (once per process) and the spec's ``plugins:``."""
    load_entry_points()
    for i, ref in enumerate(spec.plugins):
        load_plugin(ref, spec.base_dir, where=spec.source.where(f"plugins[{i}]"))


def _origin(exc: BaseException) -> str:
    """The innermost frame of a plugin exception, as 'file:line'."""
    if isinstance(exc, SyntaxError):
        return ""  # its message already names the file and line; the frames are importlib's
    # importlib's own frames (<frozen ...>) would point the user at Python's internals.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {last.filename}:{last.lineno})"


def _load_file(path: Path, where: str | None):
    """Import the file at ``path`` (resolved) once per process and return its module."""
    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} does not exist.", where=where,
                          hint="plugin paths are relative to the YAML file's folder")
    # A stable module name per file makes loading the same plugin twice a no-op, not a clash.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"gradcheck_plugin_{path.stem}_{digest}"
    existing = sys.modules.get(module_name) or _module_of_file(path)
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {str(path)!r} cannot be imported as Python.", where=where)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    before = _registered()
    try:
        spec.loader.exec_module(module)
        _check_new_classes(before, f"plugin file {str(path)!r}", where)
    except PluginError:
        del sys.modules[module_name]
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of user code is a user error
        del sys.modules[module_name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginError(f"plugin file {str(path)!r} raised {type(exc).__name__} on import: "
                          f"{exc}{_origin(exc)}.", where=where) from exc
    return module


def _module_of_file(path: Path):
    """The module already imported from the file ``path`` (resolved) under any name, or None:
    a file imported by module name and again by path must not run twice."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).name == path.name and Path(file).resolve() == path:
            return module
    return None


def _load_module(name: str, where: str | None) -> None:
    before = _registered()
    try:
        importlib.import_module(name)
        _check_new_classes(before, f"plugin module {name!r}", where)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise PluginError(f"plugin module {name!r} is not installed or not importable.",
                              where=where, hint="name a .py file, or install the package") from exc
        raise PluginError(f"plugin module {name!r} failed to import: {exc}{_origin(exc)}.",
                          where=where) from exc
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of user code is a user error
        raise PluginError(f"plugin module {name!r} raised {type(exc).__name__} on import: "
                          f"{exc}{_origin(exc)}.", where=where) from exc


def load_reference(ref, base_dir: Path | None, what: str, where: str | None = None,
                   path: str | None = None):
    """The callable that ``ref`` names: ``file.py:name`` (a file, relative to ``base_dir``) or
    ``package.module:name`` (an importable module); ``name`` may be dotted (``Class.method``).

    A file is imported as a plugin file is, once per file however it is named (``a.py`` and
    ``./sub/../a.py``, or by path and by module name), so references into one file share its
    module. ``what`` names the reference in messages (``"forward"``). A malformed reference, a
    missing file or module, a missing attribute or one that is not callable is a ConfigError at
    ``where``/``path``; a module that raises on import is a PluginError, as for ``plugins:``.
    """
    hint = ("write file.py:name (relative to the YAML file's folder) or package.module:name")
    source, _, attribute = ref.rpartition(":") if isinstance(ref, str) else ("", "", "")
    parts = attribute.split(".")
    if not source or not all(part.isidentifier() for part in parts):
        raise ConfigError(f"{what} must name a file or module and an attribute in it, as "
                          f"file.py:name or module:name; got {ref!r}.", path=path, where=where,
                          hint=hint)
    if source.endswith(".py") or "/" in source or "\\" in source:
        file = (Path(base_dir or Path.cwd()) / source).resolve()
        if not file.is_file():
            raise ConfigError(f"{what} {ref!r}: file {str(file)!r} does not exist.", path=path,
                              where=where, hint="paths are relative to the YAML file's folder")
        module = _load_file(file, where)
    else:
        module = _module_named(source, f"{what} {ref!r}", path, where)
    found = module
    for depth, part in enumerate(parts):
        if not hasattr(found, part):
            owner = source if depth == 0 else ".".join(parts[:depth])
            names = [n for n in dir(found) if not n.startswith("_")
                     and callable(getattr(found, n, None))]
            close = difflib.get_close_matches(part, names, n=1)
            listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ConfigError(f"{what} {ref!r}: {owner} has no attribute {part!r}.", path=path,
                              where=where, hint=f"did you mean {close[0]!r}?" if close else
                              f"{owner} defines {listed or 'no functions or classes'}")
        found = getattr(found, part)
    if not callable(found):
        raise ConfigError(f"{what} {ref!r} is {type(found).__name__} {found!r}, not a function "
                          "or class.", path=path, where=where, hint=hint)
    return found


def _module_named(name: str, what: str, path: str | None, where: str | None):
    """The module importable as ``name``: the one already loaded from its file if there is one."""
    if name not in sys.modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = True  # a parent package fails to import: _load_module reports how
        if spec is None:
            raise ConfigError(f"{what}: no module named {name!r} is importable.", path=path,
                              where=where, hint="name a .py file (file.py:name), or install the "
                              "package that provides the module")
        origin = getattr(spec, "origin", None)
        if origin and getattr(spec, "has_location", False):
            existing = _module_of_file(Path(origin).resolve())
            if existing is not None:
                sys.modules[name] = existing
                return existing
    _load_module(name, where)
    return sys.modules[name]


def exception_origin(exc: BaseException) -> str:
    """`` (at file:line)`` of the innermost user frame of ``exc`` (``""`` if none), for messages
    about user code that raised."""
    return _origin(exc)


def _registered() -> set[type]:
    from gradcheck import registry

    return ({registry.layer_class(n) for n in registry.layer_names()} |
            {registry.loss_class(n) for n in registry.loss_names()})


def _check_new_classes(before: set[type], what: str, where: str | None) -> None:
    """Refuse, at import, a class the plugin registered whose methods cannot be called the way
    the engine calls them, naming the plugin and the class (rather than failing mid-check)."""
    for cls in sorted(_registered() - before, key=lambda c: c.__qualname__):
        problems = contract_problems(cls)
        if problems:
            raise PluginError(f"{what}: class {cls.__qualname__} (registered as "
                              f"{cls.registered_name!r}) breaks the layer contract: "
                              f"{'; '.join(problems)}.", where=where,
                              hint="see 'Your own layers' in the README for the signatures")


def load_entry_points(force: bool = False) -> list[str]:
    """Load every layer and loss that installed packages declare in the ``gradcheck.layers``
    entry-point group, once per process; returns the entry points loaded, as ``name = value``.

    An entry point names a module (importing it runs its ``@register_layer`` decorators) or a
    ``Layer``/``Loss`` subclass (``pkg.mod:MyDense``), registered under the entry point's name
    unless it registered itself. Set GRADCHECK_DISABLE_PLUGIN_AUTOLOAD=1 to skip them all.
    """
    global _entry_points_loaded
    if (_entry_points_loaded and not force) or os.environ.get(ENV_NO_AUTOLOAD):
        return []
    _entry_points_loaded = True
    loaded = []
    for entry in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                        key=lambda e: (e.name, e.value)):
        _load_entry_point(entry)
        loaded.append(f"{entry.name} = {entry.value}")
    return loaded


def _describe_entry(entry) -> str:
    dist = getattr(entry, "dist", None)
    source = f" of package {dist.name!r}" if dist is not None and getattr(dist, "name", None) else ""
    return f"entry point {entry.name!r} = {entry.value!r}{source} (group {ENTRY_POINT_GROUP!r})"


def _load_entry_point(entry) -> None:
    from gradcheck.registry import register_layer, register_loss

    hint = (f"fix or uninstall the package, or set {ENV_NO_AUTOLOAD}=1 to skip installed plugins")
    try:
        obj = entry.load()
    except PluginError as exc:
        exc.message = f"{_describe_entry(entry)}: {exc.message}"
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party package is reported
        raise PluginError(f"{_describe_entry(entry)} failed to load: {type(exc).__name__}: "
                          f"{exc}{_origin(exc)}.", hint=hint) from exc
    if inspect.ismodule(obj):
        return
    if not (isinstance(obj, type) and issubclass(obj, (Layer, Loss))):
        raise PluginError(f"{_describe_entry(entry)} names {obj!r}, which is neither a module nor "
                          "a gradcheck.Layer or gradcheck.Loss subclass.", hint=hint)
    problems = contract_problems(obj, require_methods=True)
    if problems:
        raise PluginError(f"{_describe_entry(entry)}: class {obj.__qualname__} breaks the layer "
                          f"contract: {'; '.join(problems)}.", hint=hint)
    if "registered_name" not in vars(obj):  # not registered by its own decorator
        register = register_layer if issubclass(obj, Layer) else register_loss
        register(entry.name)(obj)


# Methods of the contract and how many arguments each takes besides self.
_LAYER_METHODS = {"build": 2, "forward": 1, "backward": 1, "branch_state": 0,
                  "attention_weights": 0}
# A layer's forward takes one argument per input and its backward one per output: at least one,
# as many as its signature asks for.
_ONE_OR_MORE = ("forward", "backward")
_LOSS_METHODS = {"build": 1, "forward": 2, "backward": 0, "branch_state": 0}


def _required_positional(fn) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except ValueError:
        return 1
    return sum(p.default is p.empty for p in params
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def contract_problems(cls: type, require_methods: bool = False) -> list[str]:
    """Ways the class ``cls`` breaks the Layer/Loss contract that can be seen without running it:
    a contract method that cannot take the arguments the engine passes, or (``require_methods``)
    forward/backward not implemented. Returns [] for a class that keeps it."""
    expected = _LAYER_METHODS if issubclass(cls, Layer) else _LOSS_METHODS
    problems = []
    for method, n_args in expected.items():
        fn = getattr(cls, method, None)
        if not callable(fn):
            problems.append(f"{method} is not a method")
            continue
        if expected is _LAYER_METHODS and method in _ONE_OR_MORE:
            n_args = max(1, _required_positional(fn) - 1)  # less self
        try:
            inspect.signature(fn).bind(None, *range(n_args))
        except TypeError:
            problems.append(f"{method}{inspect.signature(fn)} cannot be called with "
                            f"{n_args} argument(s) after self")
        except ValueError:
            continue  # a builtin without a signature: nothing to check
    if require_methods:
        for method in ("forward", "backward"):
            if all(method not in vars(klass) for klass in cls.__mro__
                   if klass.__module__ != "gradcheck.contract"):
                problems.append(f"it does not implement {method}")
    return problems
