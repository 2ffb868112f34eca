"""Read YAML safely and remember where every value came from, for located error messages."""

from __future__ import annotations

from pathlib import Path

import yaml

from gradcheck.errors import ConfigError


class Source:
    """A parsed YAML document plus the line/column of every node, keyed by YAML path.

    Paths look like ``layers[3].kernel``; the root is ``""``.
    """

    def __init__(self, data, marks: dict[str, tuple[int, int]], filename: str | None):
        self.data = data
        self.marks = marks
        self.filename = filename

    def where(self, path: str | None) -> str | None:
        """``file:line:col`` of the closest located ancestor of ``path`` (or just the file)."""
        name = self.filename or "<config>"
        probe = path or ""
        while True:
            if probe in self.marks:
                line, col = self.marks[probe]
                return f"{name}:{line}:{col}"
            if not probe:
                return name if self.filename else None
            probe = _parent(probe)


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def _child(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _index_marks(node: yaml.Node, path: str, marks: dict, mark=None) -> None:
    mark = mark or node.start_mark
    marks[path] = (mark.line + 1, mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                # Point at the key: that is where a typo or a wrong value is read.
                _index_marks(value_node, _child(path, key_node.value), marks, key_node.start_mark)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_marks(item, _child(path, i), marks)


def parse_yaml(text: str, filename: str | None = None) -> Source:
    """Parse ``text`` with the safe loader; syntax errors become located ConfigErrors."""
    label = filename or "<config>"
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"not valid YAML: {problem}.", where=where,
                          hint="check indentation and that every '{', '[' and quote is closed") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}.", where=label) from None
    marks: dict[str, tuple[int, int]] = {}
    if node is not None:
        _index_marks(node, "", marks)
    return Source(data, marks, filename)


def read_yaml_file(path: Path) -> Source:
    """Read and parse a YAML file, turning I/O and decoding problems into ConfigErrors."""
    if Path(path).suffix == ".py":
        raise ConfigError("is a Python file, not a network description (YAML).", where=str(path),
                          hint="a plugin file is named under 'plugins:' in a network YAML; "
                               "'gradcheck init' writes a starter network")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found.", where=str(path),
                          hint="pass the path of a network YAML file, e.g. configs/mlp.yaml") from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a YAML file.", where=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("is not a UTF-8 text file.", where=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror}.", where=str(path)) from None
    return parse_yaml(text, str(path))
