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

# (format, subject, role) -> "module:function". What each role's function takes and gives:
#   full (result)                      the whole result
#   verdict (result)                   the one line -q prints (text only)
#   error (network, error)             the document of a run a GradcheckError stopped (not text:
#                                      the message goes to stderr)
#   files (subject, outcomes)          one document for several network files (render/files.py)
#   files_verdict (subject, outcomes)  its -q lines (text only)
#   data (result)                      the JSON document as plain data (json only)
#   suite (result), error_suite (network, error)  one JUnit <testsuite> (junit only)
#   plain_full, plain_verdict (result, width)  full and verdict as the characters rich prints
#                                      for them without colour ``width`` columns wide, without
#                                      importing rich; None where rich must draw them (text only)
_RENDERERS = {
    ("text", "report", "full"): "gradcheck.render.text:render_text",
    ("text", "report", "verdict"): "gradcheck.render.text:summary",
    ("text", "report", "plain_full"): "gradcheck.render.plain:plain_report",
    ("text", "report", "plain_verdict"): "gradcheck.render.plain:plain_verdict",
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
    ("json", "report", "error"): "gradcheck.render.json:render_json_error",
    ("json", "diagnosis", "error"): "gradcheck.render.json:render_json_error",
    ("markdown", "report", "error"): "gradcheck.render.markdown:render_markdown_error",
    ("markdown", "diagnosis", "error"):
        "gradcheck.render.findings_ci:render_findings_markdown_error",
    ("json", "report", "data"): "gradcheck.render.json:report_to_dict",
    ("json", "diagnosis", "data"): "gradcheck.render.findings:diagnosis_to_dict",
    ("junit", "report", "suite"): "gradcheck.render.junit:report_suite",
    ("junit", "diagnosis", "suite"): "gradcheck.render.findings_ci:findings_suite",
    ("junit", "report", "error_suite"): "gradcheck.render.junit:report_error_suite",
    ("junit", "diagnosis", "error_suite"): "gradcheck.render.findings_ci:findings_error_suite",
    **{(fmt, subject, "files"): f"gradcheck.render.files:{fmt}_files"
       for fmt in FORMATS for subject in SUBJECTS},
    **{("text", subject, "files_verdict"): "gradcheck.render.files:text_files_verdict"
       for subject in SUBJECTS},
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
