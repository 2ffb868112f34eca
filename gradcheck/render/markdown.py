"""A compact Markdown summary for a CI job summary ($GITHUB_STEP_SUMMARY) or a pull-request comment.

One table row per layer target, worst status first in the heading; pure function of the report and
byte-stable like the JSON.
"""

from __future__ import annotations

from gradcheck.render import (checked_cell, compared_phrase, target_label, type_cell,
                              worst_rel_error)
from gradcheck.report import Report, TargetReport

ICON = {"pass": "✅", "fail": "❌", "kink": "⚠️", "inconclusive": "❔", "zero": "⭕", "skipped": "➖"}


def _cell(text: str) -> str:
    # A pipe would end the cell and a newline the row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def _failed(check: TargetReport) -> str:
    text = str(check.failed)
    if check.kinks:
        text += f" (+{check.kinks} kink)"
    if check.inconclusive:
        text += f" (+{check.inconclusive} inconclusive)"
    return text


def _failure(layer, check: TargetReport) -> list[str]:
    """What a failing target's mismatch looks like: its pattern sentence and, for a layer to blame
    (not one that only inherits a wrong gradient), its worst elements, as the text report shows."""
    title = f"`{_cell(layer.name)}` ({_cell(layer.type)}) {target_label(check, layer)}"
    lines = ["", f"**{title}**: {check.failed} of {check.checked} elements fail"
             + (f", inherited from `{_cell(layer.inherited_from)}`" if layer.inherited_from
                else "") + "." + (f" Pattern: {_cell(check.explanation)}" if check.explanation
                                  else "")]
    if check.worst_elements and not layer.inherited_from:
        lines += ["", "| index | analytic | numeric | rel err |", "|---|--:|--:|--:|"]
        lines.extend(f"| {e['index']} | {e['analytic']:.4e} | {e['numeric']:.4e} | "
                     f"{e['rel_error']:.1e} |" for e in check.worst_elements)
    return lines


def error_section(title: str, error) -> str:
    """A run that stopped on a user error (a ``GradcheckError``, exit 2) as a Markdown section:
    the heading says ERROR, then the message, where it is and what to do."""
    facts = [f"- where: `{_cell(error.where)}`" if error.where else "",
             f"- YAML path: `{_cell(error.path)}`" if error.path else "",
             f"- hint: {_cell(error.hint)}" if error.hint else ""]
    facts = [fact for fact in facts if fact]
    lines = [f"### ⛔ {title}: ERROR", "", f"{type(error).__name__}: {_cell(error.message)}"]
    return "\n".join(lines + (["", *facts] if facts else [])) + "\n"


def render_markdown_error(network: str, error) -> str:
    """The Markdown section of a check that stopped on a user error (exit 2)."""
    return error_section(f"gradcheck `{_cell(network)}`", error)


def render_markdown(report: Report) -> str:
    """The report as GitHub-flavoured Markdown: a heading with the verdict, settings, a table."""
    s = report.settings
    counts = report.counts()
    verdict = report.verdict.upper()
    icon = "⏱️" if report.verdict == "incomplete" else ICON.get(report.status, "")
    lines = [f"### {icon} gradcheck `{_cell(report.network)}`: {verdict}", ""]
    if report.verdict == "incomplete":
        lines.append(f"{counts['checked']:,} elements compared and none disagrees, but the check "
                     "was stopped by --max-seconds before every selected element was compared.")
    elif report.vacuous:
        lines.append("Every compared gradient is exactly 0: this check cannot see a bug.")
    elif report.passed:
        reached = counts["targets"] - counts["skipped_targets"]
        targets = f"{reached} of {counts['targets']}" if reached < counts["targets"] else reached
        lines.append(f"{compared_phrase(report)} in {targets} targets match.")
    else:
        lines.append(f"{counts['failed']} of {counts['checked']} elements in "
                     f"{counts['failed_targets']} of {counts['targets']} targets disagree.")
        if report.root_causes:
            causes = ", ".join(f"`{_cell(c)}`" for c in report.root_causes)
            lines[-1] += f" **Root cause: {causes}** (its own backward is wrong)."
        elif report.unlocalised:
            lines[-1] += " No layer fails on its own: the failure comes from how they interact."
    extra = [f"{counts['kinks']} at kinks" if counts["kinks"] else "",
             f"{counts['inconclusive']} inconclusive" if counts["inconclusive"] else "",
             f"{counts['skipped_targets']} targets skipped" if counts["skipped_targets"] else ""]
    if any(extra):
        lines[-1] += " Not failures: " + ", ".join(e for e in extra if e) + "."
    lines += ["", f"mode={s['mode']} eps={s['eps']:g} rtol={s['rtol']:g} atol={s['atol']:g} "
              f"seed={s['seed']} dtype={s['dtype']}", "",
              "| layer | type | target | shape | checked | failed | max rel err | worst index | status |",
              "|---|---|---|---|--:|--:|--:|---|---|"]
    for k, layer in enumerate(report.layers):
        blame = " (root cause)" if layer.root_cause else (
            f" (inherited from `{_cell(layer.inherited_from)}`)" if layer.inherited_from else "")
        for i, check in enumerate(layer.checks):
            first = i == 0
            lines.append("| " + " | ".join([
                f"`{_cell(layer.name)}`{blame}" if first else "",
                _cell(type_cell(report, k)) if first else "",
                target_label(check, layer), "x".join(map(str, check.shape)) or "scalar",
                checked_cell(check), _failed(check), f"{worst_rel_error(check):.1e}",
                "-" if check.worst_index is None else str(check.worst_index),
                f"{ICON.get(check.status, '')} {check.status}".strip(),
            ]) + " |")
    for layer in report.layers:
        lines.extend(f"\n> ❌ `{_cell(layer.name)}`: {_cell(p['message'])}; fix: {_cell(p['fix'])}"
                     for p in layer.problems)
    for layer in report.layers:
        lines.extend(line for check in layer.checks if check.status == "fail"
                     for line in _failure(layer, check))
    lines.extend(f"\n> note: {_cell(n)}" for n in report.notes)
    lines.extend(f"\n> warning: {_cell(w)}" for w in report.warnings)
    return "\n".join(lines) + "\n"
