"""Load user plugin layers from files or importable modules named by the user."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path

from gradcheck import modulefiles, registry
from gradcheck.contract import Layer, Loss
from gradcheck.entrypoints import ENTRY_POINT_GROUP, ENV_NO_AUTOLOAD, load_entry_points
from gradcheck.errors import ConfigError, PluginError

__all__ = ["ENTRY_POINT_GROUP", "ENV_NO_AUTOLOAD", "contract_problems", "exception_origin",
           "load_entry_points", "load_plugin", "load_reference", "load_spec_plugins"]

# What loading each plugin registered (by resolved file or module name): a plugin loaded again
# gets it back after a registry scope ended.
_MADE: dict[str, list] = {}


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
    import hashlib  # only a plugin file needs it

    # A stable module name per file makes loading the same plugin twice a no-op, not a clash.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"gradcheck_plugin_{path.stem}_{digest}"
    existing = sys.modules.get(module_name) or modulefiles.module_of_file(path)
    if existing is not None:
        _reinstate(str(path), existing.__name__)
        return existing
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {str(path)!r} cannot be imported as Python.", where=where)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    modulefiles.remember(path, module)
    before = _registered()
    bookmark = registry.mark()
    try:
        spec.loader.exec_module(module)
        _check_new_classes(before, f"plugin file {str(path)!r}", where)
    except PluginError:
        _unload(module_name, path)
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of user code is a user error
        _unload(module_name, path)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginError(f"plugin file {str(path)!r} raised {type(exc).__name__} on import: "
                          f"{exc}{_origin(exc)}.", where=where) from exc
    _MADE[str(path)] = registry.made_since(bookmark)
    return module


def _unload(module_name: str, path: Path) -> None:
    del sys.modules[module_name]
    modulefiles.forget(path)


def _reinstate(key: str, module_name: str) -> None:
    """An already imported plugin's registrations, back where a registry scope removed them."""
    registry.reinstate([*_MADE.get(key, ()), *registry.made_by(module_name)])


def _load_module(name: str, where: str | None) -> None:
    if name in sys.modules:
        _reinstate(name, name)
        return
    before = _registered()
    bookmark = registry.mark()
    try:
        importlib.import_module(name)
        _check_new_classes(before, f"plugin module {name!r}", where)
        _MADE[name] = registry.made_since(bookmark)
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
            existing = modulefiles.module_of_file(Path(origin).resolve())
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
