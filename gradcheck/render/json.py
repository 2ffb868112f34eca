"""Versioned, byte-stable JSON for machines (CI, scripts). Keys are a public promise: extend only."""

from __future__ import annotations

import json
import math

from gradcheck.report import Report, TargetReport

SCHEMA_VERSION = 1


def _number(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _check(check: TargetReport) -> dict:
    return {
        "target": check.target, "status": check.status, "shape": list(check.shape),
        "checked": check.checked, "failed": check.failed, "kinks": check.kinks,
        "inconclusive": check.inconclusive, "max_abs_error": _number(check.max_abs_error),
        "max_rel_error": _number(check.max_rel_error), "worst_index": check.worst_index,
        "analytic": _number(check.analytic), "numeric": _number(check.numeric),
        "notes": list(check.notes), "term": check.term, "pattern": check.pattern,
        "explanation": check.explanation, "coverage": check.coverage,
        "worst_elements": [{"index": e["index"], "analytic": _number(e["analytic"]),
                            "numeric": _number(e["numeric"]), "rel_error": _number(e["rel_error"]),
                            "status": e["status"]} for e in check.worst_elements],
        "rtol": _number(check.rtol), "compared": check.compared,
    }


def report_to_dict(report: Report) -> dict:
    """The JSON document as plain data."""
    return {
        "schema_version": SCHEMA_VERSION,
        "network": report.network,
        "passed": report.passed,
        "verdict": report.verdict,
        "complete": report.complete,
        "status": report.status,
        "notes": list(report.notes),
        "unlocalised": report.unlocalised,
        "span": report.span,
        "end_to_end": report.end_to_end,
        "not_differentiable": list(report.not_differentiable),
        "root_causes": report.root_causes,
        "settings": report.settings,
        "summary": report.counts(),
        "warnings": list(report.warnings),
        "layers": [{"name": layer.name, "type": layer.type, "status": layer.status,
                    "is_loss": layer.is_loss, "root_cause": layer.root_cause,
                    "inherited_from": layer.inherited_from,
                    "isolated": layer.isolated,
                    "problems": [dict(p) for p in layer.problems],
                    "inputs": list(layer.inputs),
                    "isolated_checks": [_check(c) for c in layer.isolated_checks],
                    "checks": [_check(c) for c in layer.checks]} for layer in report.layers],
    }


def render_json(report: Report) -> str:
    """Sorted keys, no timestamps: the same report always gives the same bytes."""
    return json.dumps(report_to_dict(report), indent=2, sort_keys=True) + "\n"


def error_fields(error) -> dict:
    """A user error (a ``GradcheckError``) as data: its message, where in which file
    (``net.yaml:12:5``), the YAML path (``layers[3].kernel``), the hint and its type; absent
    parts are null."""
    return {"message": error.message, "where": error.where, "path": error.path,
            "hint": error.hint, "type": type(error).__name__}


def render_json_error(network: str, error) -> str:
    """The document a run that stopped on a user error prints instead of a report (exit 2), for
    ``gradcheck check`` and ``gradcheck diagnose`` alike; ``network`` is the file's stem."""
    return json.dumps({"schema_version": SCHEMA_VERSION, "network": network,
                       "error": error_fields(error)}, indent=2, sort_keys=True) + "\n"
