"""Renderers for a Diagnosis: the human report (findings grouped by severity, worst first, and the
probe's loss curves plotted in the terminal) and versioned, byte-stable JSON."""

from __future__ import annotations

import json
import math

from rich.console import Group
from rich.text import Text

from gradcheck.diagnose.findings import SEVERITIES, Diagnosis, Finding, ProbeRun

SCHEMA_VERSION = 1
SEVERITY_STYLE = {"error": "bold red", "warn": "yellow", "info": "cyan"}
CURVE_MARK = {"configured": ("*", "bold magenta"), "reference": ("o", "green"),
              "zeroed-input": ("-", "dim")}
PLOT_WIDTH, PLOT_HEIGHT = 60, 10


def _number(value) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def finding_to_dict(f: Finding) -> dict:
    return {"id": f.id, "severity": f.severity, "stage": f.stage, "layer": f.layer,
            "value": _number(f.value), "threshold": f.threshold, "cause": f.cause, "fix": f.fix,
            "spread": f.spread.as_dict() if f.spread is not None else None}


def diagnosis_to_dict(d: Diagnosis) -> dict:
    """The JSON document as plain data. Keys are a promise: later versions add, never rename."""
    return {"schema_version": SCHEMA_VERSION, "network": d.network, "status": d.status,
            "counts": d.counts(), "findings": [finding_to_dict(f) for f in d.sorted_findings()],
            "gradcheck": d.gradcheck, "probe": {"verdict": d.verdict, "seeds": d.seeds,
                                                 "spread": d.spread,
                                                 "runs": [r.as_dict() for r in d.runs]}}


def render_findings_json(d: Diagnosis) -> str:
    """Sorted keys, no timestamps: the same diagnosis always gives the same bytes."""
    return json.dumps(diagnosis_to_dict(d), indent=2, sort_keys=True) + "\n"


def _value(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if math.isfinite(v) else str(v)


def _finding(f: Finding) -> Text:
    text = Text("  ")
    text.append(f"[{f.id}]", style=SEVERITY_STYLE[f.severity])
    if f.layer:
        text.append(f" {f.layer}", style="bold")
    text.append(f": {f.cause}")
    if f.value is not None or f.threshold:
        text.append(f"  (value {_value(f.value)}{_spread(f)}, threshold {f.threshold or '-'})",
                    style="dim")
    text.append("\n    fix: ", style="bold")
    text.append(f.fix)
    return text


def _spread(f: Finding) -> str:
    """``", 0.2-0.7 over 3 seeds"`` for a finding measured at every probe seed."""
    if f.spread is None:
        return ""
    spread = f.spread.as_dict()
    if spread["min"] is None or spread["min"] == spread["max"]:
        return f", at {f.spread.count} of {len(f.spread.seeds)} seeds"
    return (f", {_value(spread['min'])} to {_value(spread['max'])} at {f.spread.count} of "
            f"{len(f.spread.seeds)} seeds")


def loss_plot(runs: list[ProbeRun], width: int = PLOT_WIDTH, height: int = PLOT_HEIGHT) -> Text:
    """log10(loss) against step for every run, one character per cell; NaN steps are not drawn."""
    points = [(r, k, math.log10(v)) for r in runs for k, v in enumerate(r.losses)
              if v is not None and math.isfinite(v) and v > 0]
    if not points:
        return Text("  (no finite loss to plot)")
    steps = max(len(r.losses) for r in runs) - 1 or 1
    lo, hi = min(p[2] for p in points), max(p[2] for p in points)
    span = hi - lo or 1.0
    grid = [[(" ", "")] * width for _ in range(height)]
    for run, k, y in points:
        col = min(width - 1, round(k / steps * (width - 1)))
        row = height - 1 - min(height - 1, round((y - lo) / span * (height - 1)))
        grid[row][col] = CURVE_MARK.get(run.label, ("+", ""))
    text = Text()
    for i, row in enumerate(grid):
        label = f"1e{hi:+.1f}" if i == 0 else f"1e{lo:+.1f}" if i == height - 1 else ""
        text.append(f"  {label:>7} |")
        for char, style in row:
            text.append(char, style=style)
        text.append("\n")
    axis = f"{'step':^{width - 2 - len(str(steps))}}"
    text.append(f"  {'':>7} +{'-' * width}\n  {'':>7}  0{axis}{steps}\n")
    for run in runs:
        char, style = CURVE_MARK.get(run.label, ("+", ""))
        text.append(f"  {char}", style=style)
        text.append(f" {run.label}: {run.optimizer} lr {run.lr:g}"
                    + (f" momentum {run.momentum:g}" if run.momentum else "")
                    + (f" weight_decay {run.weight_decay:g}" if run.weight_decay else "")
                    + f", {run.steps_run} steps, {run.fit_metric} {_value(run.fit)}, "
                    + _ending(run) + "\n")
    return text


def _ending(run: ProbeRun) -> str:
    if run.stopped == "nonfinite":
        return f"NaN/Inf at step {run.nonfinite_step}"
    return {"fit": "fitted", "slow": "not fitted, still improving", "stalled": "stalled",
            "diverging": "diverging"}.get(run.outcome, "fitted" if run.passed else "not fitted")


def render_findings_text(d: Diagnosis) -> Group:
    """The whole diagnosis as one rich renderable."""
    parts = [Text.assemble(("gradcheck diagnose ", "bold"), (d.network, "bold cyan"))]
    if d.gradcheck is not None:
        g = d.gradcheck
        outcome = "pass" if g["passed"] else f"FAIL, root cause {', '.join(g['root_causes'])}"
        parts.append(Text(f"gradient check (sample mode, {g['samples']} elements per tensor): "
                          + outcome, style="" if g["passed"] else "bold red"))
    ordered = d.sorted_findings()
    for severity in SEVERITIES:
        group = [f for f in ordered if f.severity == severity]
        if group:
            parts.append(Text(f"\n{severity.upper()} ({len(group)})",
                              style=SEVERITY_STYLE[severity]))
            parts.extend(_finding(f) for f in group)
    if d.runs:
        # The plot shows the config's own seed; every seed's runs are in the JSON.
        shown = d.seeds[0] if any(r.seed == d.seeds[0] for r in d.runs) else d.runs[0].seed
        own = [r for r in d.runs if r.seed == shown]
        parts.append(Text(f"\ntraining probe: loss per step (log scale), seed {shown}",
                          style="bold"))
        parts.append(loss_plot(own))
        parts.append(Text(f"verdict: {d.verdict}"))
    parts.append(Text("\n").append_text(findings_summary(d)))
    return Group(*parts)


VERDICT_STYLE = {"FAIL": "bold red", "WARN": "yellow", "OK": "bold green"}


def verdict_word(d: Diagnosis) -> str:
    """FAIL when an error-severity finding exists (exit 1), WARN for warnings only, else OK."""
    counts = d.counts()
    return "FAIL" if counts["error"] else "WARN" if counts["warn"] else "OK"


def findings_summary(d: Diagnosis) -> Text:
    """The one-line verdict (all that ``-q`` prints)."""
    counts = d.counts()
    word = verdict_word(d)
    text = Text(word, style=VERDICT_STYLE[word])
    text.append(f"  {counts['error']} error, {counts['warn']} warn, {counts['info']} info")
    return text
