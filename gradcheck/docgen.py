"""Generate the README's YAML reference of layers and losses from the registry, so it cannot drift.

``python -m gradcheck.docgen`` rewrites the section of README.md between the markers below;
``--check`` exits 1 if it is out of date (the test suite runs the same comparison).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from gradcheck import layers as _builtins  # noqa: F401  (registers the built-ins)
from gradcheck import registry

BEGIN = "<!-- BEGIN GENERATED: yaml-reference (python -m gradcheck.docgen) -->"
END = "<!-- END GENERATED: yaml-reference -->"


def option_text(cls) -> str:
    """Options as ``units (required), bias=True`` (``-`` when there are none)."""
    parts = [f"`{n}` (required)" if d is None else f"`{n}={d}`"
             for n, _, d in registry.options(cls)]
    return ", ".join(parts) if parts else "-"


def summary(cls) -> str:
    """The first paragraph of the class docstring, on one line."""
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _builtin(names, lookup) -> list[tuple[str, type]]:
    # Only built-ins: installed plugins differ between machines and must not change the README.
    return [(n, lookup(n)) for n in names if lookup(n).__module__.startswith("gradcheck.layers")]


def reference() -> str:
    """The Markdown reference: a table of layers and a table of losses."""
    lines = ["| layer `type:` | options (YAML keys) | what it computes |", "|---|---|---|"]
    for name, cls in _builtin(registry.layer_names(), registry.layer_class):
        lines.append(f"| `{name}` | {option_text(cls)} | {_cell(summary(cls))} |")
    lines += ["", "| `loss:` | options | what it computes |", "|---|---|---|"]
    for name, cls in _builtin(registry.loss_names(), registry.loss_class):
        lines.append(f"| `{name}` | {option_text(cls)} | {_cell(summary(cls))} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def update(text: str) -> str:
    """``text`` (a README) with the generated section replaced by the current reference."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no generated section: add the lines\n{BEGIN}\n{END}")
    return text[:start] + BEGIN + "\n" + reference() + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, verify) the generated section of README.md."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    path = Path(paths[0]) if paths else Path(__file__).resolve().parent.parent / "README.md"
    text = path.read_text(encoding="utf-8")
    new = update(text)
    if check:
        if new != text:
            sys.stderr.write(f"{path}: the YAML reference is out of date; run python -m "
                             "gradcheck.docgen\n")
            return 1
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
