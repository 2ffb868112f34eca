"""The ``gradcheck`` command: a thin layer over the library that alone touches streams and exit codes.

Start-up is kept short: this module imports click and nothing heavy; each command imports what it
needs when it runs (numpy, yaml, rich, the engine, diagnose), so ``gradcheck --version`` and
``--help`` never load them (``bench/startup.py`` measures it).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
import traceback
from pathlib import Path

import click

from gradcheck.emit import EXIT_USAGE
from gradcheck.errors import GradcheckError
from gradcheck.render.formats import FORMATS
from gradcheck.settings import (DEFAULT_BUDGET_SECONDS, DEFAULT_DIRECTIONS, DEFAULT_SAMPLES,
                                MODES)

CHECK_EXIT_CODES = ("Exit codes: 0 every gradient matches, 1 a gradient is wrong (or nothing "
                    "could be seen), 2 bad usage or config, 3 incomplete (stopped by --max-seconds "
                    "before the end). Several files exit with the worst code, in the order "
                    "2 > 1 > 3 > 0.")
DIAGNOSE_EXIT_CODES = ("Exit codes: 0 no error-severity finding, 1 at least one, 2 bad usage or "
                       "config. Several files exit with the worst code, in the order 2 > 1 > 0.")


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


class _DeferredHelp(click.Option):
    """An option whose help is written when help is shown: its numbers come from the tolerance
    policy, whose module loads numpy, which parsing a command line need not wait for."""

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gradcheck")
@click.option("--plugin", "plugins", multiple=True, metavar="FILE_OR_MODULE",
              help="Load layer plugins before any command (a .py file or a module); repeatable.")
@_user_errors
def main(plugins):
    """Check hand-written backpropagation against finite differences, layer by layer.

    Exit codes: 0 gradients match, 1 a mismatch was found, 2 bad usage or config, 3 a check
    stopped (--max-seconds) before everything was compared; several files exit with the worst,
    in the order 2 > 1 > 3 > 0. Installed packages' layers (entry-point group gradcheck.layers)
    load automatically.
    """
    # Given before the command name, --plugin applies to every command, including ones that
    # have no --plugin option of their own.
    if plugins:
        from gradcheck.plugins import load_plugin

        for ref in plugins:
            load_plugin(ref, Path.cwd())


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
        click.option("--eps", type=float, cls=_DeferredHelp, help_text=lambda: (
            "Relative finite-difference step: h = eps * max(|x_i|, tensor RMS) "
            f"[float64: {_float64_default('eps')}].")),
        click.option("--rtol", type=float, cls=_DeferredHelp, help_text=lambda: (
            f"Relative tolerance [float64: {_float64_default('rtol')}].")),
        click.option("--atol", type=float, cls=_DeferredHelp, help_text=lambda: (
            f"Absolute tolerance floor [float64: {_float64_default('atol')}].")),
        click.option("--samples", type=int,
                     help=f"Elements per tensor in sample mode [{DEFAULT_SAMPLES}]."),
        click.option("--nondet-tol", "nondet_tol", type=float,
                     help="How far two forwards on the same input may differ (a "
                     "nondeterministic kernel) [0: bit for bit]."))(command)


@main.command(epilog=CHECK_EXIT_CODES)
@configs_argument
@settings_options
@format_option
@exit_zero_option
@click.option("--allow-incomplete", is_flag=True,
              help="Exit 0 instead of 3 when --max-seconds stops the check before everything "
              "was compared and nothing disagreed (a budgeted smoke check).")
@output_options
@click.option("--replay", "replay_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the worst failing element (seed, layer, target, index, step, "
              "analytic, numeric) to FILE; re-run it with 'gradcheck replay FILE'. One CONFIG.")
@click.option("--float64", "float64", is_flag=True,
              help="Run a float32 network in float64, to check the formulas tightly.")
@color_option
@plugin_option
@debug_option
@_user_errors
def check(configs, fmt, output, color, plugins, debug, exit_zero=False, allow_incomplete=False,
          quiet=0, verbose=0, svg=None, html=None, replay_file=None, float64=False, **options):
    """Check every gradient of the networks described in CONFIG... (YAML files, or directories
    searched for *.yaml files): one report per file, then a summary table when there are several.
    """
    if replay_file is not None and (len(configs) > 1 or configs[0].is_dir()):
        raise click.UsageError("--replay records one network: give exactly one CONFIG file.")
    from gradcheck import emit
    from gradcheck.build import build_network
    from gradcheck.check import run_check
    from gradcheck.config import load_config
    from gradcheck.progress import progress_for
    from gradcheck.resources import reuse_freed_memory
    from gradcheck.settings import settings_for

    reuse_freed_memory()
    _load_plugins(plugins, verbose)

    def check_one(path: Path):
        started = time.perf_counter()
        spec = load_config(path)
        if float64:
            spec = dataclasses.replace(spec, dtype="float64")
        settings = settings_for(spec, **options)
        network, batch = build_network(spec)
        _say(verbose, f"built {spec.name!r}: {len(network.layers)} layers "
                      f"({time.perf_counter() - started:.2f}s)")
        with network:  # stops external layers' child processes, also on error
            with progress_for(verbose, label=str(path)) as progress:
                report = run_check(network, batch, settings, progress=progress)
        for event in report.events:
            _say(verbose, event)
        _say(verbose, f"checked {report.counts()['checked']} elements "
                      f"({time.perf_counter() - started:.2f}s in all)")
        return report

    outcomes = emit.run_files("report", configs, check_one,
                              lambda report: report.exit_code_for(allow_incomplete), fmt=fmt,
                              output=output, color=color, quiet=quiet, svg=svg, html=html,
                              title="gradcheck", debug=debug)
    if replay_file is not None:
        from gradcheck.replay import write_replay

        written = write_replay(outcomes[0].result, configs[0], replay_file)
        click.echo(f"gradcheck: wrote {replay_file}; re-run it with: gradcheck replay {replay_file}"
                   if written else "gradcheck: nothing fails, no replay file written", err=True)
    sys.exit(emit.exit_code(outcomes, exit_zero))


@main.command(epilog=DIAGNOSE_EXIT_CODES)
@configs_argument
@click.option("--no-probe", is_flag=True, help="Skip the short training probe (faster).")
@format_option
@exit_zero_option
@output_options
@color_option
@plugin_option
@debug_option
@_user_errors
def diagnose(configs, no_probe, fmt, output, color, plugins, debug, exit_zero=False, quiet=0,
             verbose=0, svg=None, html=None):
    """Explain why the networks in CONFIG... (YAML files, or directories searched for *.yaml
    files) do not train, and what to change."""
    from gradcheck import emit
    from gradcheck.build import build_network
    from gradcheck.config import load_config
    from gradcheck.diagnose import run_diagnosis
    from gradcheck.resources import reuse_freed_memory

    reuse_freed_memory()
    _load_plugins(plugins, verbose)

    def diagnose_one(path: Path):
        started = time.perf_counter()
        spec = load_config(path)
        network, batch = build_network(spec)
        _say(verbose, f"built {spec.name!r}: {len(network.layers)} layers "
                      f"({time.perf_counter() - started:.2f}s)")
        with network:  # stops external layers' child processes, also on error
            result = run_diagnosis(spec, network, batch, probe=not no_probe)
        _say(verbose, f"diagnosed: {len(result.findings)} findings "
                      f"({time.perf_counter() - started:.2f}s in all)")
        return result

    outcomes = emit.run_files("diagnosis", configs, diagnose_one, lambda d: d.exit_code,
                              fmt=fmt, output=output, color=color, quiet=quiet, svg=svg,
                              html=html, title="gradcheck diagnose", debug=debug)
    sys.exit(emit.exit_code(outcomes, exit_zero))


def _say(verbose: int, message: str) -> None:
    """-v chatter: stderr only, so it never mixes with a report on stdout."""
    if verbose:
        click.echo(f"gradcheck: {message}", err=True)


def _load_plugins(plugins, verbose: int = 0) -> None:
    from gradcheck.plugins import load_entry_points, load_plugin

    for entry in load_entry_points():
        _say(verbose, f"loaded installed plugin {entry}")
    for ref in plugins:
        load_plugin(ref, Path.cwd())
        _say(verbose, f"loaded plugin {ref}")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@plugin_option
@debug_option
@_user_errors
def replay(file, plugins, debug):
    """Re-run the element recorded in FILE by 'gradcheck check --replay FILE'.

    Exit 0 when it now matches, 1 when it still disagrees.
    """
    from gradcheck.replay import replay as run_replay
    from gradcheck.report import EXIT_MISMATCH, EXIT_PASS
    from gradcheck.resources import reuse_freed_memory

    reuse_freed_memory()
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
    from gradcheck import registry
    from gradcheck.console import make_console
    from gradcheck.render import listing

    _load_plugins(plugins)
    if markdown:
        from gradcheck import docgen

        # The README's YAML reference is this output (python -m gradcheck.docgen writes it there).
        sys.stdout.write(docgen.reference())
        return
    console = make_console(sys.stdout, color)
    if name is None:
        console.print(listing.layer_list())
        return
    matches = [entry for entry in listing.entries() if entry[1] == name]
    if not matches:
        registry.layer_class(name)  # raises a ConfigError with a did-you-mean
    for kind, layer_name, cls in matches:
        console.print(listing.layer_details(kind, layer_name, cls))


def _example_names() -> list[str]:
    from gradcheck.starter import example_names  # importlib.resources: only for init

    return example_names()


@main.command()
@click.option("--from-example", "example", metavar="NAME", cls=_DeferredHelp,
              shell_complete=lambda ctx, param, incomplete: [
                  name for name in _example_names() if name.startswith(incomplete)],
              help_text=lambda: "Start from a shipped example network instead of the commented "
              f"starter: {', '.join(_example_names())}.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              default=Path("gradcheck.yaml"), show_default=True,
              help="Where to write it ('-' for stdout).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@debug_option
@_user_errors
def init(example, output, force, debug):
    """Write a commented starter network file to edit, then run 'gradcheck check' on it."""
    from gradcheck.starter import starter_text, write_starter

    if str(output) == "-":
        sys.stdout.write(starter_text(example))
        return
    write_starter(output, example, force)
    click.echo(f"wrote {output}; now run: gradcheck check {output}", err=True)
