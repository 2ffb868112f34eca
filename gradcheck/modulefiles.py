"""One module per Python file, however the file is reached.

gradcheck imports a plugin file named by path (``plugins: [my_layers.py]``) under a name of its
own. Test code often imports the same file by module name too (``import my_layers``, the file
being on ``sys.path``). Run twice, the file would define its classes twice and register the same
layer name for two different classes. So a file is executed once per process: a path load finds
a module already imported from the file, and an import by name of a file already loaded by path
gets that module (``SameFileFinder``, installed on ``sys.meta_path`` by the first path load).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

# Modules gradcheck executed from a file, by the file's resolved path.
_BY_FILE: dict[Path, ModuleType] = {}


def module_of_file(path: Path) -> ModuleType | None:
    """The module already executed from the file ``path`` (resolved) under any name, or None."""
    known = _BY_FILE.get(path)
    if known is not None:
        return known
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).name == path.name and Path(file).resolve() == path:
            return module
    return None


def remember(path: Path, module: ModuleType) -> None:
    """Record that ``module`` was executed from ``path`` (resolved), so that importing the file
    by a module name later returns it instead of running the file again."""
    _BY_FILE[path] = module
    if not any(isinstance(finder, SameFileFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, SameFileFinder())


def forget(path: Path) -> None:
    """Forget a file whose execution failed: the next load runs it again."""
    _BY_FILE.pop(path, None)


# The finder and loader keep the import protocol (find_spec; create_module, exec_module) without
# subclassing importlib.abc, whose import costs a check's start-up several milliseconds.
class SameFileFinder:
    """Answers an import by name whose file gradcheck already executed by path with that
    module; every other import goes on to the usual finders."""

    def find_spec(self, fullname, path, target=None):
        if not _BY_FILE:
            return None
        # PathFinder does not consult sys.meta_path, so this cannot recurse.
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.has_location or not spec.origin:
            return None
        module = _BY_FILE.get(Path(spec.origin).resolve())
        if module is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Existing(module), origin=spec.origin)


class _Existing:
    """A loader whose module is one that already ran: it creates nothing and runs nothing."""

    def __init__(self, module: ModuleType):
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        # The import system sets __spec__ to the alias's spec; the module keeps its own.
        module.__spec__ = self.spec
