"""How ``gradcheck check`` and ``gradcheck diagnose`` run over their files and write what they
found: the report (or one document for several files) on stdout or ``-o``, a machine-readable
error document where a user error stopped a run, pictures with ``--svg``/``--html``, user errors
on stderr. Only the CLI calls this; the library never prints."""

from __future__ import annotations

import io
import sys
import traceback
from pathlib import Path

import click

from gradcheck.errors import GradcheckError
from gradcheck.filerun import FileOutcome, network_files, worst_exit
from gradcheck.render.formats import is_text, renderer

EXPORT_WIDTH = 160  # the width of the report in a picture: room for every column
EXIT_USAGE = 2  # as gradcheck.report.EXIT_USAGE, which this module must not import (numpy)


def run_files(subject: str, arguments: list[Path], run_one, exit_code_of, *, fmt: str,
              output: Path | None, color: str, quiet: int, svg: Path | None, html: Path | None,
              title: str, debug: bool) -> list[FileOutcome]:
    """Run ``run_one(path) -> result`` on every network file ``arguments`` name, each in its own
    registry scope (one file's plugins cannot clash with another's), and write the outcome.

    One file argument keeps the single-file documents: the result, or on a user error the
    format's error document, then the error propagates (exit 2). Several arguments or a
    directory give one document for them all, with a summary; a file's user error is reported
    there and on stderr, and the other files are still checked. ``title`` heads the pictures
    (with the network's name when there is one file).
    """
    from gradcheck.registry import registry_scope

    single = len(arguments) == 1 and not arguments[0].is_dir()
    outcomes = []
    for path in network_files(arguments):
        try:
            with registry_scope():
                result = run_one(path)
        except GradcheckError as exc:
            if single:
                _emit_error(subject, fmt, output, path.stem, exc)
                raise
            if debug:
                traceback.print_exc()
            click.echo(f"gradcheck: error: {exc}", err=True)
            outcomes.append(FileOutcome(str(path), path.stem, None, exc, EXIT_USAGE))
            continue
        outcomes.append(FileOutcome(str(path), result.network, result, None, exit_code_of(result)))
    quiet_text = quiet and is_text(fmt)  # -q shortens the text report only
    if single:
        _emit(subject, "verdict" if quiet_text else "full", (outcomes[0].result,), fmt, output,
              color)
        if svg or html:
            result = outcomes[0].result
            _export(renderer("text", subject)(result), f"{title} {result.network}", svg, html)
    else:
        _emit(subject, "files_verdict" if quiet_text else "files", (subject, outcomes), fmt,
              output, color)
        if svg or html:
            _export(renderer("text", subject, "files")(subject, outcomes), title, svg, html)
    return outcomes


def exit_code(outcomes: list[FileOutcome], exit_zero: bool) -> int:
    """The worst exit code of the files; ``--exit-zero`` makes all but a user error's 0."""
    code = worst_exit(o.exit_code for o in outcomes)
    return 0 if exit_zero and code != EXIT_USAGE else code


def _emit(subject: str, role: str, args: tuple, fmt: str, output: Path | None,
          color: str) -> None:
    """Print what ``fmt``'s renderer for ``subject`` in ``role`` makes of ``args``: a string,
    or for text a rich renderable (or its plain characters, where they are the same)."""
    if not is_text(fmt):
        _write_or_print(renderer(fmt, subject, role)(*args), output)
        return
    if output:
        with _open(output) as stream:
            _print_text(stream, "never", subject, role, args)
    else:
        _print_text(sys.stdout, color, subject, role, args)


def _print_text(stream, color: str, subject: str, role: str, args: tuple) -> None:
    """The text renderer's output on ``stream``: the plain characters rich would print, where
    they can be written without it (no colour, not a terminal; about 25 ms of start-up saved),
    else drawn by rich."""
    from gradcheck.console import make_console, plain_width

    plain = renderer("text", subject, f"plain_{role}")
    width = plain_width(stream, color) if plain is not None else None
    text = plain(*args, width) if width is not None else None
    if text is None:
        make_console(stream, color).print(renderer("text", subject, role)(*args))
        return
    stream.write(text)
    stream.flush()  # as rich does after printing


def _emit_error(subject: str, fmt: str, output: Path | None, network: str, error) -> None:
    """A format with an error document (not text) writes it before the error reaches stderr:
    CI should show the problem, not a missing or unparsable file."""
    render = renderer(fmt, subject, "error")
    if render is not None:
        _write_or_print(render(network, error), output)


def _export(renderable, title: str, svg: Path | None, html: Path | None) -> None:
    """Save the coloured text report as pictures (rich records what it prints)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), record=True, force_terminal=True, width=EXPORT_WIDTH,
                      color_system="truecolor", highlight=False)
    console.print(renderable)
    if svg:
        write(svg, console.export_svg(title=title, clear=False))
    if html:
        write(html, console.export_html(clear=False))


def _write_or_print(text: str, output: Path | None) -> None:
    if output:
        write(output, text)
    else:
        sys.stdout.write(text)


def _open(path: Path):
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise GradcheckError(f"cannot write {str(path)!r}: {exc.strerror}.") from None


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path``; a place that cannot be written is a user error."""
    with _open(path) as stream:
        stream.write(text)
