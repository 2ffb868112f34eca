"""Installed packages' layers: the ``gradcheck.layers`` entry-point group, loaded by every check.

Few installations declare anything in the group, and importing importlib.metadata costs 13 ms
of CPU, a twentieth of a small network's whole ``gradcheck check`` outside the check itself. So
the group is first looked for in the metadata folders on ``sys.path`` (``*.dist-info`` and
``*.egg-info``, their ``entry_points.txt``), and importlib.metadata is imported only when one of
them names the group, or when ``sys.path`` holds what this look cannot read (a zip file, an
egg, an import hook that finds distributions).
"""

from __future__ import annotations

import importlib.machinery
import inspect
import os
import sys
from pathlib import Path

from gradcheck import registry
from gradcheck.contract import Layer, Loss
from gradcheck.errors import PluginError

ENTRY_POINT_GROUP = "gradcheck.layers"
# Like PYTEST_DISABLE_PLUGIN_AUTOLOAD: a way out when an installed package's plugin is broken.
ENV_NO_AUTOLOAD = "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD"
# What loading the entry points registered (None: not loaded yet): loaded again after a
# registry scope ended, they get it back.
_entry_points_made: list | None = None


def load_entry_points(force: bool = False) -> list[str]:
    """Load every layer and loss that installed packages declare in the ``gradcheck.layers``
    entry-point group, once per process; returns the entry points loaded, as ``name = value``.

    An entry point names a module (importing it runs its ``@register_layer`` decorators) or a
    ``Layer``/``Loss`` subclass (``pkg.mod:MyDense``), registered under the entry point's name
    unless it registered itself. Set GRADCHECK_DISABLE_PLUGIN_AUTOLOAD=1 to skip them all.
    """
    global _entry_points_made
    if os.environ.get(ENV_NO_AUTOLOAD):
        return []
    if _entry_points_made is not None and not force:
        registry.reinstate(_entry_points_made)
        return []
    _entry_points_made = []
    if not may_declare(ENTRY_POINT_GROUP):
        return []
    import importlib.metadata

    bookmark = registry.mark()
    loaded = []
    for entry in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                        key=lambda e: (e.name, e.value)):
        _load_entry_point(entry)
        loaded.append(f"{entry.name} = {entry.value}")
    _entry_points_made = registry.made_since(bookmark)
    return loaded


def may_declare(group: str) -> bool:
    """False only when no distribution importlib.metadata would find declares ``group``: no
    ``[group]`` section in the ``entry_points.txt`` of any metadata folder on ``sys.path``, and
    nothing there it could not read (True then: let importlib.metadata look)."""
    if any(hasattr(finder, "find_distributions") for finder in sys.meta_path
           if finder is not importlib.machinery.PathFinder):
        return True
    section = f"[{group}]"
    for entry in sys.path:
        folder = Path(entry or ".")
        if folder.name.lower().endswith(".egg"):
            return True  # an egg's metadata folder is EGG-INFO
        try:
            names = os.listdir(folder)
        except NotADirectoryError:
            return True  # a zip file on sys.path can hold distributions
        except OSError:
            continue  # a path that does not exist holds nothing
        for name in names:
            lower = name.lower()
            if lower.endswith((".egg", ".egg-link")):
                return True
            if lower.endswith((".dist-info", ".egg-info")):
                try:
                    text = (folder / name / "entry_points.txt").read_text(errors="replace")
                except OSError:
                    continue  # no entry points (or an .egg-info file, which has none)
                if section in text:
                    return True
    return False


def _describe_entry(entry) -> str:
    dist = getattr(entry, "dist", None)
    source = f" of package {dist.name!r}" if dist is not None and getattr(dist, "name", None) else ""
    return f"entry point {entry.name!r} = {entry.value!r}{source} (group {ENTRY_POINT_GROUP!r})"


def _load_entry_point(entry) -> None:
    from gradcheck.plugins import contract_problems, exception_origin

    hint = (f"fix or uninstall the package, or set {ENV_NO_AUTOLOAD}=1 to skip installed plugins")
    try:
        obj = entry.load()
    except PluginError as exc:
        exc.message = f"{_describe_entry(entry)}: {exc.message}"
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party package is reported
        raise PluginError(f"{_describe_entry(entry)} failed to load: {type(exc).__name__}: "
                          f"{exc}{exception_origin(exc)}.", hint=hint) from exc
    if inspect.ismodule(obj):
        registry.reinstate(registry.made_by(obj.__name__))  # imported before a scope ended
        return
    if not (isinstance(obj, type) and issubclass(obj, (Layer, Loss))):
        raise PluginError(f"{_describe_entry(entry)} names {obj!r}, which is neither a module nor "
                          "a gradcheck.Layer or gradcheck.Loss subclass.", hint=hint)
    problems = contract_problems(obj, require_methods=True)
    if problems:
        raise PluginError(f"{_describe_entry(entry)}: class {obj.__qualname__} breaks the layer "
                          f"contract: {'; '.join(problems)}.", hint=hint)
    if "registered_name" in vars(obj):  # registered already, by its decorator or earlier
        registry.reinstate(registry.made_by(obj.__module__))
    else:
        register = registry.register_layer if issubclass(obj, Layer) else registry.register_loss
        register(entry.name)(obj)
