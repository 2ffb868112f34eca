"""CI formats for a Diagnosis: JUnit XML for test reporters and a Markdown table for a job summary.

JUnit: one <testcase> per (finding id, layer). An error-severity finding is a <failure>; warn and
info findings are passing testcases that carry their text in <system-out>, so a CI dashboard fails
exactly when ``gradcheck diagnose`` exits 1. A diagnosis that crashed is one <error> case. Both
formats are pure functions of the diagnosis and byte-stable (no timestamps, fixed order), like the
JUnit and Markdown of ``gradcheck check`` whose XML helpers they reuse.
"""

from __future__ import annotations

import math

from gradcheck.diagnose.findings import Diagnosis, Finding
from gradcheck.render.findings import verdict_word
from gradcheck.render.junit import SUITE, Suite, _attrs, document, error_suite, escape, suite
from gradcheck.render.markdown import _cell, error_section

PREFIX = f"{SUITE}.diagnose"
# The classname of findings about the whole network (layer None).
NETWORK = "network"
ICON = {"error": "❌", "warn": "⚠️", "info": "ℹ️"}
HEADING_ICON = {"FAIL": "❌", "WARN": "⚠️", "OK": "✅"}


def _value(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if math.isfinite(v) else str(v)


def _detail(f: Finding) -> str:
    """Everything a finding says, one fact per line."""
    return "\n".join([f"{f.severity} [{f.id}] stage={f.stage} layer={f.layer or '-'}",
                      f"value={_value(f.value)} threshold={f.threshold or '-'}",
                      f"cause: {f.cause}", f"fix: {f.fix}"])


def _grouped(d: Diagnosis) -> list[tuple[str, str | None, list[Finding]]]:
    """Findings by (id, layer), worst first, in the order the text report shows them."""
    groups: dict[tuple[str, str | None], list[Finding]] = {}
    for f in d.sorted_findings():
        groups.setdefault((f.id, f.layer), []).append(f)
    return [(id_, layer, found) for (id_, layer), found in groups.items()]


def _case(d: Diagnosis, id_: str, layer: str | None, found: list[Finding]):
    classname = f"{PREFIX}.{d.network}.{layer or NETWORK}"
    name = f"{id_} ({layer})" if layer else id_
    detail = escape("\n\n".join(_detail(f) for f in found))
    errors = [f for f in found if f.severity == "error"]
    if errors:
        outcome = ("failure", f"<failure{_attrs([('message', errors[0].cause), ('type', id_)])}>"
                              f"{detail}</failure>")
    else:
        # Not a failure: the exit code ignores warn and info, and so must the dashboard.
        outcome = ("pass", f"<system-out>{detail}</system-out>")
    return classname, name, outcome


def _properties(d: Diagnosis) -> dict:
    props = {"status": d.status, **{f"count_{k}": v for k, v in d.counts().items()}}
    if d.gradcheck is not None:
        props["gradient_check"] = "pass" if d.gradcheck["passed"] else "fail"
    if d.verdict is not None:
        props["probe_verdict"] = d.verdict
    return props


def render_findings_junit(d: Diagnosis) -> str:
    """The diagnosis as a JUnit XML document (testsuite = network, testcase = finding id and
    layer)."""
    return document([findings_suite(d)], PREFIX)


def findings_suite(d: Diagnosis) -> Suite:
    """The diagnosis's <testsuite>. A network without findings gets one passing ``no findings``
    case: reporters treat an empty suite as a missing test run."""
    cases = [_case(d, id_, layer, found) for id_, layer, found in _grouped(d)]
    if not cases:
        cases = [(f"{PREFIX}.{d.network}", "no findings", ("pass", ""))]
    return suite(f"{PREFIX}.{d.network}", _properties(d), cases)


def findings_error_suite(network: str, error) -> Suite:
    """The <testsuite> of a diagnosis that stopped on a user error: one <error> case."""
    return error_suite(PREFIX, network, "diagnose", error)


def render_findings_junit_error(network: str, error) -> str:
    """The JUnit document of a diagnosis that stopped on a user error: one <error> case, so a CI
    dashboard shows the problem instead of a missing test file."""
    return document([findings_error_suite(network, error)], PREFIX)


def render_findings_markdown_error(network: str, error) -> str:
    """The Markdown section of a diagnosis that stopped on a user error (exit 2)."""
    return error_section(f"gradcheck diagnose `{_cell(network)}`", error)


def render_findings_markdown(d: Diagnosis) -> str:
    """The diagnosis as GitHub-flavoured Markdown: a heading with the verdict, the gradient check and
    probe verdict in a sentence each, and one table row per finding, worst first."""
    counts = d.counts()
    word = verdict_word(d)
    lines = [f"### {HEADING_ICON[word]} gradcheck diagnose `{_cell(d.network)}`: {word}", "",
             f"{counts['error']} error, {counts['warn']} warn, {counts['info']} info."]
    if d.gradcheck is not None:
        g = d.gradcheck
        lines[-1] += (f" Gradient check (sample mode, {g['samples']} elements per tensor): "
                      + ("pass." if g["passed"] else "**fail**, root cause "
                         + ", ".join(f"`{_cell(c)}`" for c in g["root_causes"]) + "."))
    if d.verdict is not None:
        lines += ["", f"Training probe: {_cell(d.verdict)}."]
    if not d.findings:
        return "\n".join([*lines, "", "No findings."]) + "\n"
    lines += ["", "| severity | id | layer | value | threshold | cause | fix |",
              "|---|---|---|--:|---|---|---|"]
    for f in d.sorted_findings():
        lines.append("| " + " | ".join([
            f"{ICON[f.severity]} {f.severity}", f"`{_cell(f.id)}`",
            f"`{_cell(f.layer)}`" if f.layer else "-", _value(f.value),
            _cell(f.threshold or "-"), _cell(f.cause), _cell(f.fix)]) + " |")
    return "\n".join(lines) + "\n"
