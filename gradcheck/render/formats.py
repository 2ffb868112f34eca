"""The one registry of output formats, shared by ``gradcheck check`` and ``gradcheck diagnose``.

Every format renders both kinds of result: a check ``Report`` and a diagnose ``Diagnosis``. A
format added here is offered by both commands; a format missing a renderer for either fails the
test that renders every format for both. Renderers are imported only when a command needs them.
"""

from __future__ import annotations

import importlib
from typing import Callable

FORMATS = ("text", "json", "junit", "markdown")
SUBJECTS = ("report", "diagnosis")

# (format, subject, role) -> "module:function". role "full" renders the whole result, "verdict"
# the one line -q prints (text only), "error" a user error (message) as the format's document.
_RENDERERS = {
    ("text", "report", "full"): "gradcheck.render.text:render_text",
    ("text", "report", "verdict"): "gradcheck.render.text:summary",
    ("text", "diagnosis", "full"): "gradcheck.render.findings:render_findings_text",
    ("text", "diagnosis", "verdict"): "gradcheck.render.findings:findings_summary",
    ("json", "report", "full"): "gradcheck.render.json:render_json",
    ("json", "diagnosis", "full"): "gradcheck.render.findings:render_findings_json",
    ("junit", "report", "full"): "gradcheck.render.junit:render_junit",
    ("junit", "diagnosis", "full"): "gradcheck.render.findings_ci:render_findings_junit",
    ("junit", "report", "error"): "gradcheck.render.junit:render_junit_error",
    ("junit", "diagnosis", "error"): "gradcheck.render.findings_ci:render_findings_junit_error",
    ("markdown", "report", "full"): "gradcheck.render.markdown:render_markdown",
    ("markdown", "diagnosis", "full"): "gradcheck.render.findings_ci:render_findings_markdown",
}


def renderer(fmt: str, subject: str, role: str = "full") -> Callable | None:
    """The function rendering ``subject`` as ``fmt`` in ``role`` (None where the format has no
    such role). Text renderers return rich renderables, the others strings."""
    ref = _RENDERERS.get((fmt, subject, role))
    if ref is None:
        return None
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def is_text(fmt: str) -> bool:
    """Whether ``fmt`` is the coloured terminal report (printed through rich)."""
    return fmt == "text"
