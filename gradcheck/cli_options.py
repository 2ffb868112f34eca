"""The command line's options, each defined once: the blocks ``gradcheck check`` and
``gradcheck diagnose`` share (output, format, exit code, colour, plugins, debug, the files), and
the check settings, which become ``CheckSettings`` (gradcheck.settings owns their defaults)."""

from __future__ import annotations

from pathlib import Path

import click

from gradcheck.render.formats import FORMATS
from gradcheck.settings import (DEFAULT_BUDGET_SECONDS, DEFAULT_DIRECTIONS, DEFAULT_SAMPLES,
                                JOBS_GAIN_SECONDS, MODES)


def _options(*options):
    """A decorator applying ``options`` in the order listed (as they appear in --help)."""

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# The option blocks check and diagnose share: each is defined once, here.
output_options = _options(
    click.option("-q", "--quiet", count=True, help="Text report: print only the verdict line."),
    click.option("-v", "--verbose", count=True,
                 help="Say on stderr which plugins were loaded and how long each step took; off "
                 "a terminal, also a progress line every few seconds."),
    click.option("--svg", "svg", type=click.Path(dir_okay=False, path_type=Path),
                 help="Also save the coloured text report as an SVG picture."),
    click.option("--html", "html", type=click.Path(dir_okay=False, path_type=Path),
                 help="Also save the coloured text report as an HTML page."),
    click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                 help="Write the report to FILE instead of stdout."))
format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
    help="Report format (junit: JUnit XML for CI test reporters; markdown: a table for a CI job "
    "summary or a PR comment). With one file: that file's document; with several, one document "
    "for all (json: {\"schema_version\": 1, \"files\": [...]}). A config error gives an error "
    "document in json, junit and markdown.")
exit_zero_option = click.option(
    "--exit-zero", is_flag=True,
    help="Exit 0 even when the verdict is a failure (config and usage errors still exit 2).")
color_option = click.option(
    "--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
    help="Colour the report (auto: only on a terminal, never with NO_COLOR).")
plugin_option = click.option(
    "--plugin", "plugins", multiple=True, metavar="FILE_OR_MODULE",
    help="Load layer plugins (a .py file or a module name); repeatable.")
debug_option = click.option("--debug", is_flag=True, help="Show the traceback of errors.")
configs_argument = click.argument("configs", nargs=-1, required=True, metavar="CONFIG...",
                                  type=click.Path(path_type=Path))


class DeferredHelp(click.Option):
    """An option whose help is written when help is shown, from ``help_text()``: it states
    values read from modules that parsing a command line need not load (the tolerance policy
    imports numpy; the list of examples, importlib.resources)."""

    def __init__(self, *args, help_text, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_text = help_text

    def get_help_record(self, ctx):
        if self.help is None:
            self.help = self.help_text()
        return super().get_help_record(ctx)


def _float64_default(field: str) -> str:
    import numpy as np

    from gradcheck import tolerance

    return f"{getattr(tolerance.DEFAULTS[np.dtype(np.float64)], field):g}"


def _jobs_value(ctx, param, value):
    """``--jobs``: a number as an int, anything else as given (``CheckSettings`` validates it:
    'auto' or an integer >= 1)."""
    return int(value) if isinstance(value, str) and value.strip().lstrip("-").isdigit() else value


def settings_options(command):
    """The options that become ``CheckSettings`` (validated there, which owns the defaults):
    each arrives as a keyword of the same name, None when not given."""
    return _options(
        click.option("--mode", type=click.Choice(MODES),
                     help="Which elements to compare one by one, each against its own layer: "
                     "every element of every parameter and layer input (full), N per tensor "
                     "(sample), none but random directions through the network (directional), "
                     "or full when it fits --max-seconds, else sample and directional (auto) "
                     "[config or auto]."),
        click.option("--max-seconds", type=float,
                     help="Time budget in seconds: auto mode falls back from full when a full "
                     f"check would exceed it [{DEFAULT_BUDGET_SECONDS:g}]; when given, any check "
                     "stops at it, reports what it compared and exits 3 (INCOMPLETE)."),
        click.option("--directions", type=int,
                     help=f"Random directions per tensor [{DEFAULT_DIRECTIONS}]."),
        click.option("--eps", type=float, cls=DeferredHelp, help_text=lambda: (
            "Relative finite-difference step: h = eps * max(|x_i|, tensor RMS) "
            f"[float64: {_float64_default('eps')}].")),
        click.option("--rtol", type=float, cls=DeferredHelp, help_text=lambda: (
            f"Relative tolerance [float64: {_float64_default('rtol')}].")),
        click.option("--atol", type=float, cls=DeferredHelp, help_text=lambda: (
            f"Absolute tolerance floor [float64: {_float64_default('atol')}].")),
        click.option("--samples", type=int,
                     help=f"Elements per tensor in sample mode [{DEFAULT_SAMPLES}]."),
        click.option("--jobs", metavar="N|auto", default="auto", show_default=True,
                     envvar="GRADCHECK_JOBS", show_envvar=True, callback=_jobs_value,
                     help="Processes comparing gradients: auto, every available core once the "
                     f"comparison has run {JOBS_GAIN_SECONDS:g} s with about as much left (a "
                     "quicker check stays in one process; -v says which); N, N from the start "
                     "(this one and N-1 workers; fewer if their working copies would not fit in "
                     "memory); 1, this process alone. The report is the same whatever the "
                     "number."),
        click.option("--nondet-tol", "nondet_tol", type=float,
                     help="How far two forwards on the same input may differ (a "
                     "nondeterministic kernel) [0: bit for bit]."))(command)


def example_names() -> list[str]:
    """The shipped examples ``init --from-example`` takes, read when they are asked for."""
    from gradcheck import starter  # importlib.resources: only for init

    return starter.example_names()
