"""JUnit XML for CI test reporters: one <testcase> per layer target.

A failing target is a <failure>, a target the check could not run is an <error>, a target whose
only findings are kinks or inconclusive elements (or that was skipped) is <skipped>: none of those
is a mismatch. The document is byte-stable for a given report (no timestamps, no host names, fixed
attribute order), so two runs can be diffed.
"""

from __future__ import annotations

import dataclasses
import re
from xml.sax.saxutils import escape as _escape
from xml.sax.saxutils import quoteattr as _quoteattr

from gradcheck.render import target_label
from gradcheck.report import Report, TargetReport

SUITE = "gradcheck"
# Statuses the report model knows; anything else a later engine reports is treated as a crash.
PASSING, SKIPPING = ("pass",), ("kink", "inconclusive", "skipped", "zero")


# XML 1.0 cannot hold most control characters, even escaped; a plugin's message may contain them.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def escape(text: str) -> str:
    return _escape(_CONTROL.sub("?", text))


def quoteattr(text: str) -> str:
    return _quoteattr(_CONTROL.sub("?", text))


def _attrs(pairs) -> str:
    return "".join(f" {key}={quoteattr(str(value))}" for key, value in pairs)


def _detail(check: TargetReport) -> str:
    """The numbers a reader needs to reproduce and judge the target, one per line; for a failure
    also what the mismatch looks like and its worst elements, as the text report shows them."""
    lines = [f"checked={check.checked} failed={check.failed} kinks={check.kinks} "
             f"inconclusive={check.inconclusive}",
             f"shape={list(check.shape)} worst_index={check.worst_index}",
             f"max_rel_error={check.max_rel_error:.6e} max_abs_error={check.max_abs_error:.6e}"]
    if check.analytic is not None and check.numeric is not None:
        lines.append(f"analytic={check.analytic:.9e} numeric={check.numeric:.9e}")
    if check.status == "fail" and check.explanation:
        lines.append(f"pattern: {check.explanation}")
    if check.status == "fail" and check.worst_elements:
        lines.append("worst elements (index analytic numeric rel_error):")
        lines.extend(f"  {e['index']} {e['analytic']:.6e} {e['numeric']:.6e} {e['rel_error']:.2e}"
                     for e in check.worst_elements)
    lines.extend(check.notes)
    return "\n".join(lines)


def _failure(message: str, kind: str, detail: str) -> tuple[str, str]:
    return "failure", (f"<failure{_attrs([('message', message), ('type', kind)])}>{detail}"
                       "</failure>")


def _outcome(report: Report, layer, check: TargetReport) -> tuple[str, str]:
    """The kind of outcome (pass, failure, skipped, error) and the testcase's child element."""
    detail = escape(_detail(check))
    stopped = (check.coverage or {}).get("stopped") or (check.status == "skipped" and any(
        "stopped" in n for n in check.notes))
    if stopped and check.status in ("pass", "skipped", "kink", "inconclusive"):
        message = (f"not every element was compared: the check was stopped by --max-seconds "
                   f"after {check.checked:,} element(s), none of which disagrees")
        return "skipped", f"<skipped{_attrs([('message', message)])}>{detail}</skipped>"
    if check.status == "zero" and report.vacuous:
        return _failure("every compared gradient is exactly 0: this check cannot see a bug",
                        "ZeroGradient", detail)
    if check.status in PASSING:
        return "pass", ""
    if check.status == "fail":
        if layer.root_cause:
            blame = "root cause: this layer's own backward is wrong"
        elif layer.inherited_from:
            blame = f"inherited from {layer.inherited_from}"
        else:
            blame = "mismatch"
        message = (f"{check.failed} of {check.checked} elements disagree "
                   f"(max rel err {check.max_rel_error:.2e} > rtol {report.settings['rtol']:g}); "
                   f"{blame}")
        return _failure(message, "GradientMismatch", detail)
    if check.status in SKIPPING:
        if check.status == "kink":
            message = f"{check.kinks} element(s) at a kink (non-differentiable point): not a failure"
        elif check.status == "zero":
            message = "every gradient is exactly 0: this check cannot see a bug here"
        elif check.status == "inconclusive":
            message = (f"{check.inconclusive} element(s) inconclusive "
                       "(finite difference unreliable): not a failure")
        else:
            message = "nothing to check"
        return "skipped", f"<skipped{_attrs([('message', message)])}>{detail}</skipped>"
    message = f"status {check.status!r}: the check of this target did not complete"
    return "error", f"<error{_attrs([('message', message), ('type', check.status)])}>{detail}</error>"


@dataclasses.dataclass(frozen=True)
class Suite:
    """One <testsuite> element (its lines, indented for a place in <testsuites>) and its counts
    (tests, failures, errors, skipped), which the enclosing <testsuites> adds up."""

    name: str
    counts: tuple[tuple[str, int], ...]
    lines: tuple[str, ...]


def suite(name: str, properties: dict, cases: list[tuple[str, str, tuple[str, str]]]) -> Suite:
    """A <testsuite> of ``cases`` (classname, name, (kind, child element)) with ``properties``."""
    kinds = [kind for _, _, (kind, _) in cases]
    counts = (("tests", len(cases)), ("failures", kinds.count("failure")),
              ("errors", kinds.count("error")), ("skipped", kinds.count("skipped")))
    lines = [f"  <testsuite{_attrs([('name', name), *counts])}>"]
    if properties:
        lines.append("    <properties>")
        lines.extend(f"      <property{_attrs([('name', key), ('value', properties[key])])}/>"
                     for key in sorted(properties))
        lines.append("    </properties>")
    for classname, case, (_, outcome) in cases:
        attrs = _attrs([("classname", classname), ("name", case)])
        lines.append(f"    <testcase{attrs}>{outcome}</testcase>" if outcome
                     else f"    <testcase{attrs}/>")
    lines.append("  </testsuite>")
    return Suite(name, counts, tuple(lines))


def document(suites: list[Suite], name: str = SUITE) -> str:
    """The XML document: <testsuites> holding ``suites``, with their counts added up. It takes
    the name of its only suite when it has one (a single network), else ``name``."""
    totals = [(key, sum(dict(s.counts)[key] for s in suites)) for key, _ in suites[0].counts]
    head = _attrs([("name", suites[0].name if len(suites) == 1 else name), *totals])
    lines = [f"<testsuites{head}>", *(line for s in suites for line in s.lines), "</testsuites>"]
    return '<?xml version="1.0" encoding="utf-8"?>\n' + "\n".join(lines) + "\n"


def render_junit(report: Report) -> str:
    """The report as a JUnit XML document (testsuite = network, testcase = layer target)."""
    return document([report_suite(report)])


def report_suite(report: Report) -> Suite:
    """The report's <testsuite>: one testcase per layer target, one per broken contract, and one
    for a failure no layer explains."""
    cases = []
    for layer in report.layers:
        for problem in layer.problems:
            message = f"{problem['message']}; fix: {problem['fix']}"
            cases.append((f"{SUITE}.{report.network}.{layer.name}",
                          f"{layer.name} ({layer.type}) contract: {problem['id']}",
                          _failure(message, "BrokenContract", escape(message))))
        for check in layer.checks:
            cases.append((f"{SUITE}.{report.network}.{layer.name}",
                          f"{layer.name} ({layer.type}) {target_label(check, layer)}",
                          _outcome(report, layer, check)))
    if report.unlocalised:
        span = " -> ".join(report.span or [])
        message = ("the network's gradient fails end to end although every layer passes on its "
                   "own" + (f"; the smallest failing span is {span}" if span else ""))
        cases.append((f"{SUITE}.{report.network}", "end-to-end",
                      _failure(message, "Unlocalised", escape(message))))
    settings = {k: v for k, v in report.settings.items() if v is not None}
    return suite(f"{SUITE}.{report.network}", settings, cases)


def error_suite(prefix: str, network: str, case: str, error) -> Suite:
    """A <testsuite> for a run that stopped on a user error (a ``GradcheckError``) before it
    had a result: one <error> case whose message is the error's full text and whose type is its
    class, so a CI dashboard shows the problem instead of a missing test file."""
    message = str(error)
    outcome = ("error", f"<error{_attrs([('message', message), ('type', type(error).__name__)])}>"
                        f"{escape(message)}</error>")
    return suite(f"{prefix}.{network}", {}, [(f"{prefix}.{network}", case, outcome)])


def report_error_suite(network: str, error) -> Suite:
    """The <testsuite> of a check that stopped on ``error`` (see ``error_suite``)."""
    return error_suite(SUITE, network, "check", error)


def render_junit_error(network: str, error) -> str:
    """The JUnit document of a check that stopped on ``error`` (see ``error_suite``)."""
    return document([report_error_suite(network, error)])
