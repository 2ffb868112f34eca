"""Load user plugin layers from files or importable modules named by the user."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

from gradcheck.errors import PluginError


def load_plugin(ref: str, base_dir: Path, where: str | None = None) -> None:
    """Import the plugin ``ref``: a ``.py`` file (relative to ``base_dir``) or a module name.

    Importing runs its ``@register_layer`` decorators. Only code the user named is ever run.
    """
    if ref.endswith(".py") or "/" in ref or "\\" in ref:
        _load_file((base_dir / ref).resolve(), where)
    else:
        _load_module(ref, where)


def _origin(exc: BaseException) -> str:
    """The innermost frame of a plugin exception, as 'file:line'."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {last.filename}:{last.lineno})"


def _load_file(path: Path, where: str | None) -> None:
    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} does not exist.", where=where,
                          hint="plugin paths are relative to the YAML file's folder")
    # A stable module name per file makes loading the same plugin twice a no-op, not a clash.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"gradcheck_plugin_{path.stem}_{digest}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {str(path)!r} cannot be imported as Python.", where=where)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except PluginError:
        del sys.modules[module_name]
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of user code is a user error
        del sys.modules[module_name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginError(f"plugin file {str(path)!r} raised {type(exc).__name__} on import: "
                          f"{exc}{_origin(exc)}.", where=where) from exc


def _load_module(name: str, where: str | None) -> None:
    try:
        importlib.import_module(name)
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
