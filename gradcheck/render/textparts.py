"""What the human report says: its header, the rows of its layers x targets table, the details
of what fails and the one-line verdict, as ``Styled`` text. Drawn by rich in colour
(``gradcheck.render.text``) or as plain text (``gradcheck.render.plain``); nothing here imports
rich."""

from __future__ import annotations

from gradcheck.render import (checked_cell, compared_phrase, target_label, type_cell,
                              worst_rel_error)
from gradcheck.render.bars import BAR_HEADER, error_bar
from gradcheck.render.heatmap import heatmap
from gradcheck.render.styled import Styled
from gradcheck.report import LayerReport, Report, TargetReport

STATUS_STYLE = {"pass": "green", "fail": "bold red", "kink": "yellow", "inconclusive": "magenta",
                "zero": "bold yellow", "skipped": "dim"}


def _fmt(value: float | None, spec: str = ".3e") -> str:
    return "-" if value is None else format(value, spec)


def _status(status: str) -> Styled:
    return Styled(status.upper(), style=STATUS_STYLE[status])


def header(report: Report) -> Styled:
    """Network, mode, step, tolerances and seed: everything needed to reproduce the run."""
    s = report.settings
    text = Styled()
    text.append("gradcheck ", style="bold")
    text.append(report.network, style="bold cyan")
    text.append(f"  mode={s['mode']} eps={s['eps']:g} rtol={s['rtol']:g} atol={s['atol']:g} "
                f"seed={s['seed']} dtype={s['dtype']}")
    if s.get("samples"):
        text.append(f" samples={s['samples']}/tensor")
    return text


def _blame(layer: LayerReport) -> Styled:
    if layer.root_cause:
        alone = " (fails alone)" if layer.isolated == "fail" and not layer.is_loss else ""
        return Styled(f"root cause{alone}", style="bold red")
    if layer.inherited_from:
        return Styled(f"inherited from {layer.inherited_from}", style="dim")
    return Styled("")


# Columns in order, each with the order it is dropped in when the terminal is too narrow for the
# whole table (0: always shown). An 80-column terminal keeps what a verdict needs.
COLUMNS = (("layer", "left", 0), ("type", "left", 4), ("target", "left", 0), ("shape", "left", 6),
           ("checked", "right", 2), ("failed", "right", 0), ("max rel err", "right", 0),
           (BAR_HEADER, "left", 7), ("worst index", "left", 3), ("analytic", "right", 5),
           ("numeric", "right", 5), ("status", "left", 0), ("blame", "left", 1))


def table_rows(report: Report) -> list[tuple[list[Styled], bool]]:
    """One row of cells (one per column of COLUMNS) per target, and whether it ends its layer's
    section (a rule follows it); the first row of each layer names it and says where blame
    lies."""
    rows = []
    for k, layer in enumerate(report.layers):
        for i, check in enumerate(layer.checks):
            first = i == 0
            cells = (
                layer.name if first else "", type_cell(report, k) if first else "",
                target_label(check, layer), "x".join(map(str, check.shape)) or "scalar",
                checked_cell(check), _failed(check), _fmt(worst_rel_error(check), ".1e"),
                error_bar(worst_rel_error(check), report.settings["rtol"]),
                "-" if check.worst_index is None else str(check.worst_index),
                _fmt(check.analytic), _fmt(check.numeric), _status(check.status),
                _blame(layer) if first else Styled(""))
            # Names are text, never markup: a layer called "[red]x" prints as it is.
            rows.append(([c if isinstance(c, Styled) else Styled(c) for c in cells],
                         i == len(layer.checks) - 1))
    return rows


def shown_columns(dropped: int) -> list[bool]:
    """Which of COLUMNS a table that leaves out ``dropped`` of them shows: those whose drop rank
    is 0 or below ``8 - dropped``."""
    return [rank == 0 or rank < 8 - dropped for _, _, rank in COLUMNS]


def details(report: Report) -> list[Styled]:
    """For each layer that breaks the contract: what and how to fix it. For each failing target
    of a layer to blame: the pattern in words, the worst elements and a heat map of the relative
    error. Inherited failures get one line: fix the cause first. Vacuous targets say why."""
    parts = []
    rtol = report.settings["rtol"]
    for layer in report.layers:
        for problem in layer.problems:
            text = Styled()
            text.append(f"{layer.name} ({layer.type}) ", style="bold")
            text.append(problem["message"] + "\n", style="bold red")
            text.append(f"  fix: {problem['fix']}")
            parts.append(text)
        for check in layer.checks:
            if check.status == "zero":
                parts.append(Styled("; ".join(n for n in check.notes if "exactly 0" in n),
                                    style="yellow"))
        if layer.status != "fail" or layer.problems:
            continue
        if layer.inherited_from:
            alone = " and passes when checked alone" if layer.isolated == "pass" else ""
            parts.append(Styled(f"{layer.name}: fails only through the wrong gradient it "
                                f"receives from {layer.inherited_from}{alone}.", style="dim"))
            continue
        wrong = [c for c in layer.checks if c.status == "fail"]
        right = [c for c in layer.checks if c.status == "pass"]
        if wrong and right:
            names = [", ".join(target_label(c, layer) for c in group) for group in (wrong, right)]
            parts.append(Styled(f"{layer.name}: wrong in {names[0]}; right in {names[1]}.",
                                style="bold"))
        for check in wrong:
            parts.append(_detail(layer, check, rtol))
    return parts


def _detail(layer: LayerReport, check: TargetReport, rtol: float) -> Styled:
    text = Styled()
    text.append(f"{layer.name} ({layer.type}) {target_label(check, layer)}", style="bold")
    alone = {"fail": "fails alone too", "pass": "passes alone"}.get(layer.isolated or "", "")
    text.append(f"  {check.failed} of {check.checked} elements fail"
                + (f"; {alone}" if alone else ""))
    text.append("\n")
    if check.explanation:
        text.append("  pattern: ", style="bold")
        text.append(check.explanation + "\n")
    if check.worst_elements:
        text.append(f"  {'index':<16} {'analytic':>12} {'numeric':>12} {'rel err':>9}\n",
                    style="dim")
        for e in check.worst_elements:
            text.append(f"  {str(e['index']):<16} {e['analytic']:>12.4e} {e['numeric']:>12.4e} "
                        f"{e['rel_error']:>9.1e}\n")
    for note in check.notes:
        text.append(f"  note: {note}\n", style="dim")
    if check.rel_error is not None and check.rel_error.size > 1:
        text.append("  relative error:\n")
        text.append_text(heatmap(check.rel_error, rtol, check.axis_names))
    return text


def _failed(check: TargetReport) -> Styled:
    text = Styled(str(check.failed), style="bold red" if check.failed else "")
    if check.kinks:
        text.append(f" +{check.kinks}k", style="yellow")
    if check.inconclusive:
        text.append(f" +{check.inconclusive}?", style="magenta")
    return text


def summary(report: Report) -> Styled:
    """The one-line verdict."""
    counts = report.counts()
    if report.verdict == "incomplete":
        text = Styled()
        text.append("INCOMPLETE", style="bold yellow")
        text.append(f"  {counts['checked']:,} elements compared and none disagrees, but the check "
                    "was stopped before every selected element was compared; a green check "
                    "needs them all (exit 3; --allow-incomplete accepts it).")
        return text
    extra = []
    if counts["kinks"]:
        extra.append(f"{counts['kinks']} at kinks (not failures)")
    if counts["inconclusive"]:
        extra.append(f"{counts['inconclusive']} inconclusive (finite difference unreliable)")
    if counts["skipped_targets"]:
        # A deadline-stopped check must not read as a full pass of every target.
        extra.append(f"{counts['skipped_targets']} targets skipped (not checked)")
    tail = f"; {', '.join(extra)}" if extra else ""
    reached = counts["targets"] - counts["skipped_targets"]
    targets = f"{reached} of {counts['targets']}" if reached < counts["targets"] else reached
    text = Styled()
    if report.passed:
        text.append("PASS", style="bold green")
        text.append(f"  {compared_phrase(report)} in {targets} targets match{tail}.")
        return text
    text.append("FAIL", style="bold red")
    if report.vacuous:
        text.append(f"  every one of the {counts['checked']:,} compared gradients is exactly 0: "
                    "this check cannot see a bug (see the notes above for why).")
        return text
    broken = [layer.name for layer in report.layers if layer.problems]
    text.append(f"  {counts['failed']} of {counts['checked']} elements in "
                f"{counts['failed_targets']} of {counts['targets']} targets disagree{tail}. ")
    if broken:
        text.append("Broken contract: ")
        text.append(", ".join(broken), style="bold red")
        text.append(" (see above; nothing it computes can be checked until it is fixed). ")
    causes = [c for c in report.root_causes if c not in broken]
    if causes:
        text.append("Root cause: ")
        text.append(", ".join(causes), style="bold red")
        text.append(" (its own backward is wrong; failures above it are inherited).")
    elif report.unlocalised:
        span = f" in {' -> '.join(report.span)}" if report.span else ""
        text.append(f"No layer fails on its own: the failure comes from how they interact{span}, "
                    "or from a numerical problem of the whole chain.")
    return text


def around_table(report: Report) -> tuple[list[Styled], list[Styled]]:
    """The report's parts above its table (header, a blank line) and below it (a blank line,
    the details and a blank line when there are any, notes, warnings, the verdict)."""
    below = [Styled("")]
    found = details(report)
    if found:
        below.extend([*found, Styled("")])
    below.extend(Styled(f"note: {n}", style="yellow") for n in report.notes)
    below.extend(Styled(f"warning: {w}", style="yellow") for w in report.warnings)
    below.append(summary(report))
    return [header(report), Styled("")], below
