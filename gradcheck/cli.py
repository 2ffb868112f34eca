"""The ``gradcheck`` command: a thin layer over the library that alone touches streams and exit codes."""

from __future__ import annotations

import functools
import inspect
import sys
import traceback
from pathlib import Path

import click

from gradcheck import registry
from gradcheck.check import run_check, settings_for
from gradcheck.config import CHECK_MODES, load_config
from gradcheck.console import make_console
from gradcheck.errors import GradcheckError
from gradcheck.network import build_network
from gradcheck.plugins import load_plugin
from gradcheck.render.json import render_json
from gradcheck.render.text import render_text
from gradcheck.report import EXIT_USAGE


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


color_option = click.option("--color", type=click.Choice(["auto", "always", "never"]),
                            default="auto", show_default=True,
                            help="Colour the report (auto: only on a terminal, never with NO_COLOR).")
plugin_option = click.option("--plugin", "plugins", multiple=True, metavar="FILE_OR_MODULE",
                             help="Load layer plugins (a .py file or a module name); repeatable.")
debug_option = click.option("--debug", is_flag=True, help="Show the traceback of errors.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gradcheck")
def main():
    """Check hand-written backpropagation against finite differences, layer by layer.

    Exit codes: 0 gradients match, 1 a mismatch was found, 2 bad usage or config.
    """


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mode", type=click.Choice(CHECK_MODES), help="Which elements to check [config or full].")
@click.option("--eps", type=float, help="Finite-difference step [float64: 1e-6].")
@click.option("--rtol", type=float, help="Relative tolerance [float64: 1e-5].")
@click.option("--atol", type=float, help="Absolute tolerance floor [float64: 1e-8].")
@click.option("--samples", type=click.IntRange(min=1), help="Elements per tensor in sample mode [32].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Report format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to FILE instead of stdout.")
@color_option
@plugin_option
@debug_option
@_user_errors
def check(config, mode, eps, rtol, atol, samples, fmt, output, color, plugins, debug):
    """Check every gradient of the network described in CONFIG (a YAML file)."""
    for ref in plugins:
        load_plugin(ref, Path.cwd())
    spec = load_config(config)
    for name, value in (("eps", eps), ("rtol", rtol)):
        if value is not None and not value > 0:
            raise click.BadParameter(f"must be > 0, got {value}", param_hint=f"--{name}")
    if atol is not None and atol < 0:
        raise click.BadParameter(f"must be >= 0, got {atol}", param_hint="--atol")
    network, batch = build_network(spec)
    report = run_check(network, batch, settings_for(spec, mode, eps, rtol, atol, samples))
    _emit(report, fmt, output, color)
    sys.exit(report.exit_code)


def _emit(report, fmt: str, output: Path | None, color: str) -> None:
    if fmt == "json":
        text = render_json(report)
        if output:
            _write(output, text)
        else:
            sys.stdout.write(text)
        return
    if output:
        with _open(output) as stream:
            make_console(stream, "never").print(render_text(report))
    else:
        make_console(sys.stdout, color).print(render_text(report))


def _open(path: Path):
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise GradcheckError(f"cannot write {str(path)!r}: {exc.strerror}.") from None


def _write(path: Path, text: str) -> None:
    with _open(path) as stream:
        stream.write(text)


@main.command()
@click.argument("name", required=False)
@color_option
@plugin_option
@debug_option
@_user_errors
def layers(name, color, plugins, debug):
    """List the registered layers and losses (built-ins and loaded plugins), or show NAME."""
    for ref in plugins:
        load_plugin(ref, Path.cwd())
    console = make_console(sys.stdout, color)
    entries = [("layer", n, registry.layer_class(n)) for n in registry.layer_names()]
    entries += [("loss", n, registry.loss_class(n)) for n in registry.loss_names()]
    if name is not None:
        matches = [e for e in entries if e[1] == name]
        if not matches:
            # Raises a ConfigError with a did-you-mean.
            registry.layer_class(name)
        entries = matches
    for kind, layer_name, cls in entries:
        console.print(f"[bold]{layer_name}[/bold] ({kind}{_origin(cls)})  {_options(cls)}")
        doc = inspect.getdoc(cls) or ""
        if doc:
            lines = doc.splitlines() if name else doc.splitlines()[:1]
            for line in lines:
                console.print(f"    {line}", markup=False)


def _origin(cls) -> str:
    return "" if cls.__module__.startswith("gradcheck.layers") else f", plugin {cls.__module__}"


def _options(cls) -> str:
    params = inspect.signature(cls.__init__).parameters
    parts = []
    for pname, p in params.items():
        if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        parts.append(pname if p.default is p.empty else f"{pname}={p.default!r}")
    return ", ".join(parts) if parts else "(no options)"
