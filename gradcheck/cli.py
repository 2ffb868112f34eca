"""The ``gradcheck`` command: a thin layer over the library, alone touching streams and exit codes.

Start-up is kept short: this module imports click and nothing heavy; each command imports what it
needs when it runs (numpy, yaml, rich, the engine, diagnose), so ``gradcheck --version`` and
``--help`` never load them (``bench/startup.py`` measures it).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import sys
import time
import traceback
from pathlib import Path

import click

from gradcheck.cli_options import (DeferredHelp, color_option, configs_argument, debug_option,
                                   example_names, exit_zero_option, format_option,
                                   output_options, plugin_option, settings_options)
from gradcheck.emit import EXIT_USAGE
from gradcheck.errors import GradcheckError

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


def run(**extra) -> None:
    """The ``gradcheck`` program: ``main`` (which ends by raising SystemExit), then the end of
    the process. Every object is frozen on the way out, so the interpreter's final garbage
    collections skip the hundreds of thousands numpy, rich and the engine created: that saved a
    tenth of a whole ``gradcheck check`` of a small network (bench/startup.py). Nothing is lost:
    the process ends and the system takes its memory back. In-process callers (tests) use
    ``main``, which freezes nothing."""
    single_threaded_blas(os.environ)
    try:
        main(**extra)
    finally:
        gc.freeze()


# The variables the common BLAS builds (OpenBLAS, MKL, BLIS, OpenMP ones) read when they load.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                         "OMP_NUM_THREADS")


def single_threaded_blas(environ) -> None:
    """One BLAS thread per process, unless the user set a count: set before numpy loads (the
    commands import it lazily). A check's products are small, and it runs its own worker
    processes (``--jobs``); a BLAS that also spreads each product over every core made a check
    ~10x slower on a busy 2-core machine (the ResNet block of bench/bench.py: 22 s against 3 s)."""
    for name in BLAS_THREAD_VARIABLES:
        environ.setdefault(name, "1")


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


@main.command()
@click.option("--from-example", "example", metavar="NAME", cls=DeferredHelp,
              shell_complete=lambda ctx, param, incomplete: [
                  name for name in example_names() if name.startswith(incomplete)],
              help_text=lambda: "Start from a shipped example network instead of the commented "
              f"starter: {', '.join(example_names())}.")
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
