"""The ``gradcheck`` command: a thin layer over the library that alone touches streams and exit codes."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import io
import sys
import time
import traceback
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.markup import escape

from gradcheck import docgen, registry
from gradcheck import tolerance
from gradcheck.check import run_check
from gradcheck.config import load_config
from gradcheck.console import make_console
from gradcheck.errors import GradcheckError
from gradcheck.build import build_network
from gradcheck.plugins import load_entry_points, load_plugin
from gradcheck.progress import ProgressBar
from gradcheck.render.formats import FORMATS, is_text, renderer
from gradcheck.resources import reuse_freed_memory
from gradcheck.starter import example_names, write_starter
from gradcheck.replay import replay as run_replay
from gradcheck.replay import write_replay
from gradcheck.report import EXIT_MISMATCH, EXIT_PASS, EXIT_USAGE
from gradcheck.settings import (DEFAULT_BUDGET_SECONDS, DEFAULT_DIRECTIONS, DEFAULT_SAMPLES,
                                MODES, settings_for)

EXPORT_WIDTH = 160  # the width of the report in a file: room for every column


def _user_errors(command):
    """Turn user-caused errors into a one-paragraph message on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        try:
            return command(*args, **kwargs)
        except GradcheckError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"gradcheck: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def output_options(command):
    """The output options ``check`` and ``diagnose`` share: -q/-v, --svg/--html exports, -o."""
    for option in reversed((
        click.option("-q", "--quiet", count=True, help="Text report: print only the verdict line."),
        click.option("-v", "--verbose", count=True,
                     help="Say on stderr which plugins were loaded and how long each step took."),
        click.option("--svg", "svg", type=click.Path(dir_okay=False, path_type=Path),
                     help="Also save the coloured text report as an SVG picture."),
        click.option("--html", "html", type=click.Path(dir_okay=False, path_type=Path),
                     help="Also save the coloured text report as an HTML page."),
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the report to FILE instead of stdout."))):
        command = option(command)
    return command


color_option = click.option("--color", type=click.Choice(["auto", "always", "never"]),
                            default="auto", show_default=True,
                            help="Colour the report (auto: only on a terminal, never with NO_COLOR).")
plugin_option = click.option("--plugin", "plugins", multiple=True, metavar="FILE_OR_MODULE",
                             help="Load layer plugins (a .py file or a module name); repeatable.")
debug_option = click.option("--debug", is_flag=True, help="Show the traceback of errors.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gradcheck")
@click.option("--plugin", "plugins", multiple=True, metavar="FILE_OR_MODULE",
              help="Load layer plugins before any command (a .py file or a module); repeatable.")
@_user_errors
def main(plugins):
    """Check hand-written backpropagation against finite differences, layer by layer.

    Exit codes: 0 gradients match, 1 a mismatch was found, 2 bad usage or config, 3 a check
    stopped (--max-seconds) before everything was compared.
    Installed packages' layers (entry-point group gradcheck.layers) load automatically.
    """
    reuse_freed_memory()
    # Given before the command name, --plugin applies to every command, including ones that
    # have no --plugin option of their own.
    for ref in plugins:
        load_plugin(ref, Path.cwd())


def settings_options(command):
    """The options that become ``CheckSettings`` (validated there, which owns the defaults):
    each arrives as a keyword of the same name, None when not given."""
    f64 = tolerance.DEFAULTS[np.dtype(np.float64)]
    for option in reversed((
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
        click.option("--eps", type=float, help="Relative finite-difference step: h = eps * "
                     f"max(|x_i|, tensor RMS) [float64: {f64.eps:g}]."),
        click.option("--rtol", type=float, help=f"Relative tolerance [float64: {f64.rtol:g}]."),
        click.option("--atol", type=float,
                     help=f"Absolute tolerance floor [float64: {f64.atol:g}]."),
        click.option("--samples", type=int,
                     help=f"Elements per tensor in sample mode [{DEFAULT_SAMPLES}]."),
        click.option("--nondet-tol", "nondet_tol", type=float,
                     help="How far two forwards on the same input may differ (a "
                     "nondeterministic kernel) [0: bit for bit]."))):
        command = option(command)
    return command


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@settings_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text",
              show_default=True, help="Report format (junit: JUnit XML for CI test reporters; "
              "markdown: a table for a CI job summary or a PR comment).")
@click.option("--exit-zero", is_flag=True,
              help="Exit 0 even when gradients disagree (config and usage errors still exit 2).")
@click.option("--allow-incomplete", is_flag=True,
              help="Exit 0 instead of 3 when --max-seconds stops the check before everything "
              "was compared and nothing disagreed (a budgeted smoke check).")
@output_options
@click.option("--replay", "replay_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the worst failing element (seed, layer, target, index, step, "
              "analytic, numeric) to FILE; re-run it with 'gradcheck replay FILE'.")
@click.option("--float64", "float64", is_flag=True,
              help="Run a float32 network in float64, to check the formulas tightly.")
@color_option
@plugin_option
@debug_option
@_user_errors
def check(config, fmt, output, color, plugins, debug, exit_zero=False, allow_incomplete=False,
          quiet=0, verbose=0, svg=None, html=None, replay_file=None, float64=False, **options):
    """Check every gradient of the network described in CONFIG (a YAML file).

    Exit codes: 0 every gradient matches, 1 a gradient is wrong (or nothing could be seen),
    2 bad usage or config, 3 incomplete (stopped by --max-seconds before the end).
    """
    started = time.perf_counter()
    _load_plugins(plugins, verbose)
    with _junit_crash_document(fmt, output, config, "report"):
        spec = load_config(config)
        if float64:
            spec = dataclasses.replace(spec, dtype="float64")
        settings = settings_for(spec, **options)
        network, batch = build_network(spec)
        _say(verbose, f"built {spec.name!r}: {len(network.layers)} layers "
                      f"({time.perf_counter() - started:.2f}s)")
        with network:  # stops external layers' child processes, also on error
            with ProgressBar() as progress:
                report = run_check(network, batch, settings, progress=progress)
    for event in report.events:
        _say(verbose, event)
    _say(verbose, f"checked {report.counts()['checked']} elements "
                  f"({time.perf_counter() - started:.2f}s in all)")
    _emit(report, "report", fmt, output, color, quiet)
    _export(report, "report", f"gradcheck {report.network}", svg, html)
    if replay_file is not None:
        written = write_replay(report, config, replay_file)
        click.echo(f"gradcheck: wrote {replay_file}; re-run it with: gradcheck replay {replay_file}"
                   if written else "gradcheck: nothing fails, no replay file written", err=True)
    sys.exit(EXIT_PASS if exit_zero else report.exit_code_for(allow_incomplete))


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-probe", is_flag=True, help="Skip the short training probe (faster).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text",
              show_default=True, help="Report format (junit: one testcase per finding, failing "
              "on error severity; markdown: a table for a CI job summary or a PR comment).")
@click.option("--exit-zero", is_flag=True,
              help="Exit 0 even when an error-severity finding exists (config and usage errors "
              "still exit 2).")
@output_options
@color_option
@plugin_option
@debug_option
@_user_errors
def diagnose(config, no_probe, fmt, output, color, plugins, debug, exit_zero=False, quiet=0,
             verbose=0, svg=None, html=None):
    """Explain why the network in CONFIG does not train, and what to change.

    Exit codes: 0 no error-severity finding, 1 at least one, 2 bad usage or config.
    """
    from gradcheck.diagnose import run_diagnosis

    started = time.perf_counter()
    _load_plugins(plugins, verbose)
    with _junit_crash_document(fmt, output, config, "diagnosis"):
        spec = load_config(config)
        network, batch = build_network(spec)
        _say(verbose, f"built {spec.name!r}: {len(network.layers)} layers "
                      f"({time.perf_counter() - started:.2f}s)")
        with network:  # stops external layers' child processes, also on error
            result = run_diagnosis(spec, network, batch, probe=not no_probe)
    _say(verbose, f"diagnosed: {len(result.findings)} findings "
                  f"({time.perf_counter() - started:.2f}s in all)")
    _emit(result, "diagnosis", fmt, output, color, quiet)
    _export(result, "diagnosis", f"gradcheck diagnose {result.network}", svg, html)
    sys.exit(EXIT_PASS if exit_zero else result.exit_code)


def _say(verbose: int, message: str) -> None:
    """-v chatter: stderr only, so it never mixes with a report on stdout."""
    if verbose:
        click.echo(f"gradcheck: {message}", err=True)


def _load_plugins(plugins, verbose: int = 0) -> None:
    for entry in load_entry_points():
        _say(verbose, f"loaded installed plugin {entry}")
    for ref in plugins:
        load_plugin(ref, Path.cwd())
        _say(verbose, f"loaded plugin {ref}")


def _export(result, subject: str, title: str, svg: Path | None, html: Path | None) -> None:
    """Save the coloured text report of ``result`` as pictures (rich records what it prints)."""
    if not (svg or html):
        return
    console = Console(file=io.StringIO(), record=True, force_terminal=True, width=EXPORT_WIDTH,
                      color_system="truecolor", highlight=False)
    console.print(renderer("text", subject)(result))
    if svg:
        _write(svg, console.export_svg(title=title, clear=False))
    if html:
        _write(html, console.export_html(clear=False))


def _emit(result, subject: str, fmt: str, output: Path | None, color: str, quiet: int = 0) -> None:
    """Print ``result`` (a check Report or a Diagnosis: ``subject``) as ``fmt``."""
    if not is_text(fmt):
        _emit_text(renderer(fmt, subject)(result), output)
        return
    renderable = renderer(fmt, subject, "verdict" if quiet else "full")(result)
    if output:
        with _open(output) as stream:
            make_console(stream, "never").print(renderable)
    else:
        make_console(sys.stdout, color).print(renderable)


@contextlib.contextmanager
def _junit_crash_document(fmt: str, output: Path | None, config: Path, subject: str):
    """With a format that has an error document (JUnit), a user error still writes it (one
    <error> case) before it propagates: a CI test reporter should show the crash, not a missing
    file."""
    try:
        yield
    except GradcheckError as exc:
        render_error = renderer(fmt, subject, "error")
        if render_error is not None:
            _emit_text(render_error(Path(config).stem, str(exc)), output)
        raise


def _emit_text(text: str, output: Path | None) -> None:
    if output:
        _write(output, text)
    else:
        sys.stdout.write(text)


def _open(path: Path):
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise GradcheckError(f"cannot write {str(path)!r}: {exc.strerror}.") from None


def _write(path: Path, text: str) -> None:
    with _open(path) as stream:
        stream.write(text)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@plugin_option
@debug_option
@_user_errors
def replay(file, plugins, debug):
    """Re-run the element recorded in FILE by 'gradcheck check --replay FILE'.

    Exit 0 when it now matches, 1 when it still disagrees.
    """
    _load_plugins(plugins)
    result = run_replay(file)
    r = result.record
    what = "change" if r["compared"] == "layer" else "loss"
    lines = [f"replay {r['network']}: layer {r['layer']!r} target {r['target']!r} index "
             f"{r.get('index')} step {r['h']:g} seed {r['seed']} dtype {r['dtype']} (compared "
             f"against its {'own layer' if r['compared'] == 'layer' else 'network'})",
             f"  analytic  {result.analytic: .10e}   (recorded {r['analytic']: .10e})",
             f"  numeric   {result.numeric: .10e}   (recorded {r['numeric']: .10e})",
             f"  {what} +h   {result.loss_plus: .16e}", f"  {what} -h   {result.loss_minus: .16e}",
             f"  relative error {result.rel_error:.3e} (rtol {r['rtol']:g})"
             + ("" if result.reproduced else f"  [{what}s differ from the recording: the network "
                "or its data changed]"),
             "PASS  the element now matches" if result.passed else "FAIL  the element still disagrees"]
    click.echo("\n".join(lines))
    sys.exit(EXIT_PASS if result.passed else EXIT_MISMATCH)


@main.command()
@click.argument("name", required=False)
@click.option("--markdown", is_flag=True,
              help="Print the built-in layers and losses as the README's Markdown reference.")
@color_option
@plugin_option
@debug_option
@_user_errors
def layers(name, color, plugins, debug, markdown=False):
    """List the registered layers and losses (built-ins and loaded plugins), or show NAME in full:
    every option with its default, a YAML line to copy, and the whole docstring."""
    _load_plugins(plugins)
    if markdown:
        # The README's YAML reference is this output (python -m gradcheck.docgen writes it there).
        sys.stdout.write(docgen.reference())
        return
    console = make_console(sys.stdout, color)
    entries = [("layer", n, registry.layer_class(n)) for n in registry.layer_names()]
    entries += [("loss", n, registry.loss_class(n)) for n in registry.loss_names()]
    if name is not None:
        matches = [e for e in entries if e[1] == name]
        if not matches:
            # Raises a ConfigError with a did-you-mean.
            registry.layer_class(name)
        entries = matches
    if name is not None:
        for kind, layer_name, cls in entries:
            _show_one(console, kind, layer_name, cls)
        return
    for kind, layer_name, cls in entries:
        console.print(f"[bold]{escape(layer_name)}[/bold] "
                      f"{escape(f'({kind}{_origin(cls)})  {_options(cls)}')}")
        doc = inspect.getdoc(cls) or ""
        if doc:
            lines = doc.splitlines() if name else doc.splitlines()[:1]
            for line in lines:
                console.print(f"    {line}", markup=False)


def _show_one(console, kind: str, name: str, cls) -> None:
    """One layer or loss in full: options table, a YAML example, the docstring."""
    console.print(f"[bold]{escape(name)}[/bold] "
                  + escape(f"({kind}{_origin(cls) or ', built-in'}; "
                           f"{cls.__module__}.{cls.__qualname__})"), highlight=False)
    opts = registry.options(cls)
    console.print("")
    if opts:
        console.print("options (YAML keys):")
        width = max(len(n) for n, _, _ in opts)
        for opt, annotation, default in opts:
            value = "required" if default is None else f"default {default}"
            console.print(f"  {opt:<{width}}  {annotation or '-':<12}  {value}", markup=False)
    else:
        console.print("options: none")
    required = ", ".join(f"{n}: ..." for n, _, d in opts if d is None)
    if kind == "loss":
        example = f"loss: {name}" if not opts else f"loss: {{type: {name}}}"
    else:
        example = f"  - {{type: {name}{', ' + required if required else ''}}}" if opts else f"  - {name}"
    console.print(f"\nin YAML:\n  {example.strip()}", markup=False)
    doc = inspect.getdoc(cls)
    if doc:
        console.print("")
        console.print(doc, markup=False)


def _origin(cls) -> str:
    return "" if cls.__module__.startswith("gradcheck.layers") else f", plugin {cls.__module__}"


def _options(cls) -> str:
    parts = [name if default is None else f"{name}={default}"
             for name, _, default in registry.options(cls)]
    return ", ".join(parts) if parts else "(no options)"


@main.command()
@click.option("--from-example", "example", type=click.Choice(example_names()),
              help="Start from a shipped example network instead of the commented starter.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              default=Path("gradcheck.yaml"), show_default=True,
              help="Where to write it ('-' for stdout).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@debug_option
@_user_errors
def init(example, output, force, debug):
    """Write a commented starter network file to edit, then run 'gradcheck check' on it."""
    if str(output) == "-":
        from gradcheck.starter import starter_text

        sys.stdout.write(starter_text(example))
        return
    write_starter(output, example, force)
    click.echo(f"wrote {output}; now run: gradcheck check {output}", err=True)
