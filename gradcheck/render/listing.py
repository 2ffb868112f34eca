"""``gradcheck layers``: the registered layers and losses as text, one line each or one in full
(every option with its default, a YAML line to copy, the whole docstring)."""

from __future__ import annotations

import inspect

from rich.console import Group
from rich.markup import escape
from rich.text import Text

from gradcheck import registry


def entries() -> list[tuple[str, str, type]]:
    """Every registered (kind, name, class): layers, then losses, each sorted by name."""
    found = [("layer", n, registry.layer_class(n)) for n in registry.layer_names()]
    return found + [("loss", n, registry.loss_class(n)) for n in registry.loss_names()]


def layer_list() -> Group:
    """One line per layer and loss (name, kind, origin, options) and its docstring's first."""
    lines = []
    for kind, name, cls in entries():
        lines.append(Text.from_markup(f"[bold]{escape(name)}[/bold] "
                                      f"{escape(f'({kind}{_origin(cls)})  {_options(cls)}')}"))
        doc = inspect.getdoc(cls) or ""
        if doc:
            lines.append(Text(f"    {doc.splitlines()[0]}"))
    return Group(*lines)


def layer_details(kind: str, name: str, cls: type) -> Group:
    """One layer or loss in full: options table, a YAML example, the docstring."""
    parts = [Text.from_markup(f"[bold]{escape(name)}[/bold] " + escape(
        f"({kind}{_origin(cls) or ', built-in'}; {cls.__module__}.{cls.__qualname__})")), Text("")]
    opts = registry.options(cls)
    if opts:
        parts.append(Text("options (YAML keys):"))
        width = max(len(n) for n, _, _ in opts)
        for opt, annotation, default in opts:
            value = "required" if default is None else f"default {default}"
            parts.append(Text(f"  {opt:<{width}}  {annotation or '-':<12}  {value}"))
    else:
        parts.append(Text("options: none"))
    required = ", ".join(f"{n}: ..." for n, _, d in opts if d is None)
    if kind == "loss":
        example = f"loss: {name}" if not opts else f"loss: {{type: {name}}}"
    elif opts:
        example = f"- {{type: {name}{', ' + required if required else ''}}}"
    else:
        example = f"- {name}"
    parts.append(Text(f"\nin YAML:\n  {example}"))
    doc = inspect.getdoc(cls)
    if doc:
        parts += [Text(""), Text(doc)]
    return Group(*parts)


def _origin(cls) -> str:
    return "" if cls.__module__.startswith("gradcheck.layers") else f", plugin {cls.__module__}"


def _options(cls) -> str:
    parts = [name if default is None else f"{name}={default}"
             for name, _, default in registry.options(cls)]
    return ", ".join(parts) if parts else "(no options)"
