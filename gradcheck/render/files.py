"""Several network files in one document: each file's own report (or the error that stopped it),
then a summary of them all. Pure functions of ``FileOutcome``s (gradcheck.filerun), built from
each format's single-file renderers, for ``gradcheck check`` and ``gradcheck diagnose`` alike.

JSON: ``{"schema_version": 1, "files": [{"file", "report"} or {"file", "error"}]}``, where a
``report`` is the command's single-file document and an ``error`` the fields of its error
document. JUnit: one <testsuite> per file in one <testsuites>. Markdown and text: one section per
file, then a table: file, verdict, elements compared (findings, for diagnose), root causes.
"""

from __future__ import annotations

import json

from gradcheck.render.formats import renderer
from gradcheck.render.json import SCHEMA_VERSION, error_fields

# Per subject: the heading of the third summary column, and the JUnit name of several suites.
_COLUMN = {"report": "elements", "diagnosis": "findings"}
_SUITES = {"report": "gradcheck", "diagnosis": "gradcheck.diagnose"}


def summary_row(subject: str, outcome) -> tuple[str, str, str]:
    """(verdict, elements or findings, root causes) of one file, as the summary shows them."""
    if outcome.error is not None:
        return "ERROR", "-", "-"
    result = outcome.result
    if subject == "report":
        causes = ", ".join(result.root_causes) or ("unlocalised" if result.unlocalised else "-")
        return result.verdict.upper(), f"{result.counts()['checked']:,}", causes
    from gradcheck.render.findings import verdict_word

    counts = result.counts()
    causes = ", ".join((result.gradcheck or {}).get("root_causes") or []) or "-"
    return (verdict_word(result),
            f"{counts['error']} error, {counts['warn']} warn, {counts['info']} info", causes)


def _tally(subject: str, outcomes) -> str:
    verdicts = [summary_row(subject, o)[0] for o in outcomes]
    counted = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
    return f"{len(outcomes)} files: {counted}"


def json_files(subject: str, outcomes) -> str:
    """Sorted keys, no timestamps: byte-stable like the single-file document."""
    data = renderer("json", subject, "data")
    files = [{"file": o.file, "error": error_fields(o.error)} if o.error is not None
             else {"file": o.file, "report": data(o.result)} for o in outcomes]
    return json.dumps({"schema_version": SCHEMA_VERSION, "files": files}, indent=2,
                      sort_keys=True) + "\n"


def junit_files(subject: str, outcomes) -> str:
    from gradcheck.render.junit import document

    suites = [renderer("junit", subject, "error_suite")(o.network, o.error) if o.error is not None
              else renderer("junit", subject, "suite")(o.result) for o in outcomes]
    return document(suites, _SUITES[subject])


def markdown_files(subject: str, outcomes) -> str:
    from gradcheck.render.markdown import _cell

    sections = [renderer("markdown", subject, "error")(o.network, o.error) if o.error is not None
                else renderer("markdown", subject, "full")(o.result) for o in outcomes]
    lines = [f"### gradcheck: {_tally(subject, outcomes)}", "",
             f"| file | verdict | {_COLUMN[subject]} | root causes |", "|---|---|--:|---|"]
    for o in outcomes:
        verdict, column, causes = summary_row(subject, o)
        lines.append(f"| `{_cell(o.file)}` | {verdict} | {column} | {_cell(causes)} |")
    return "\n".join([*sections, "\n".join(lines)]) + "\n"


def text_files(subject: str, outcomes):
    """Each file's text report under its name, then the summary table (a rich renderable)."""
    from rich.console import Group
    from rich.text import Text

    parts = []
    for o in outcomes:
        parts.append(Text(f"━━ {o.file}", style="bold"))
        parts.append(_error_text(o.error) if o.error is not None
                     else renderer("text", subject, "full")(o.result))
        parts.append(Text(""))
    return Group(*parts, _summary_table(subject, outcomes))


def text_files_verdict(subject: str, outcomes):
    """One line per file (``-q``): its name and its verdict line, never wrapped (a long path
    would otherwise break it in two, and a line per file is what a log reader greps)."""
    from rich.console import Group
    from rich.text import Text

    lines = []
    for o in outcomes:
        line = Text(f"{o.file}: ", no_wrap=True, overflow="ignore")
        line.append_text(_error_text(o.error) if o.error is not None
                         else renderer("text", subject, "verdict")(o.result))
        lines.append(line)
    return Group(*lines)


def _error_text(error):
    from rich.text import Text

    text = Text("ERROR", style="bold red")
    text.append(f"  {error}")
    return text


_STYLE = {"PASS": "green", "OK": "green", "FAIL": "bold red", "ERROR": "bold red",
          "INCOMPLETE": "yellow", "WARN": "yellow"}


def _summary_table(subject: str, outcomes):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=_tally(subject, outcomes), title_justify="left", box=box.SIMPLE_HEAD)
    for heading, justify in (("file", "left"), ("verdict", "left"), (_COLUMN[subject], "right"),
                             ("root causes", "left")):
        table.add_column(heading, justify=justify)
    for o in outcomes:
        verdict, column, causes = summary_row(subject, o)
        table.add_row(Text(o.file), Text(verdict, style=_STYLE.get(verdict, "")), column,
                      Text(causes))
    return table
