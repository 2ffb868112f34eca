"""Start-up: `import gradcheck` and the CLI load only what a command needs (rich, yaml, numpy,
diagnose, the renderers, the external protocol, the plugin machinery), read from `sys.modules`
of a fresh process once it is done; the public API still resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gradcheck
from conftest import CONFIGS, ROOT

HEAVY = ("numpy", "rich", "yaml", "gradcheck.diagnose", "gradcheck.external_protocol",
         "gradcheck.plugins", "gradcheck.render.text", "importlib.metadata")


# Runs the code or the command line given, then writes the names in sys.modules to a file.
# (`python -X importtime` would not do: it misses modules loaded by importlib.import_module.)
PROBE = """
import sys
out, kind, *rest = sys.argv[1:]
try:
    if kind == "-c":
        exec(rest[0])
    else:
        from gradcheck.cli import main
        main(rest, prog_name="gradcheck")
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
with open(out, "w") as stream:
    stream.write("\\n".join(sys.modules))
"""


def imported(kind: str, *args: str, tmp: Path) -> set[str]:
    """The modules a fresh interpreter has imported after running ``-c CODE`` (kind "-c") or
    the command line ``gradcheck ARGS`` (kind "cli")."""
    out = tmp / "modules.txt"
    result = subprocess.run([sys.executable, "-c", PROBE, str(out), kind, *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(out.read_text().split())


def loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(f"{name}.") for m in modules)


def test_import_gradcheck_loads_nothing_heavy(tmp_path):
    modules = imported("-c", "import gradcheck", tmp=tmp_path)
    assert "gradcheck" in modules
    for name in HEAVY:
        assert not loaded(modules, name), name


def test_the_probe_sees_what_a_check_loads(tmp_path):
    """The probe can fail: it shows numpy, yaml and rich once a check in colour runs."""
    modules = imported("cli", "check", str(CONFIGS / "mlp.yaml"), "--color", "always",
                       tmp=tmp_path)
    for name in ("numpy", "yaml", "rich", "gradcheck.plugins", "gradcheck.render.text"):
        assert loaded(modules, name), name


def test_a_passing_check_without_colour_loads_neither_rich_nor_what_only_failures_need(
        tmp_path):
    """A report piped or written to a file is drawn without rich (gradcheck.render.plain); a
    check whose gradients match never classifies a mismatch; only some layers need the object
    adapter, an external program or a data file."""
    for output in ((), ("-o", str(tmp_path / "report.txt"))):
        modules = imported("cli", "check", str(CONFIGS / "mlp.yaml"), *output, tmp=tmp_path)
        for name in ("rich", "gradcheck.render.text", "gradcheck.explain.patterns",
                     "gradcheck.layers.adapter", "shutil", "zipfile"):
            assert not loaded(modules, name), name


@pytest.mark.parametrize("args, allowed", [
    (["--version"], ("importlib.metadata",)),  # where the installed version is read
    (["--help"], ()),
    (["init", "--help"], ()),
    (["check", "--help"], ("numpy",)),  # the help shows the tolerance policy's defaults
])
def test_version_and_help_load_nothing_heavy(tmp_path, args, allowed):
    modules = imported("cli", *args, tmp=tmp_path)
    for name in HEAVY:
        if name not in allowed:
            assert not loaded(modules, name), name


def test_a_json_check_loads_neither_rich_nor_diagnose_nor_the_external_protocol(tmp_path):
    modules = imported("cli", "check", str(CONFIGS / "mlp.yaml"), "--format", "json",
                       tmp=tmp_path)
    for name in ("rich", "gradcheck.diagnose", "gradcheck.external_protocol", "gradcheck.starter",
                 "gradcheck.render.junit", "gradcheck.render.markdown"):
        assert not loaded(modules, name), name


def test_a_check_reads_installed_metadata_only_when_a_package_declares_layers(tmp_path):
    """Nothing installed here declares gradcheck.layers, so importlib.metadata stays unloaded
    (tests/test_entrypoints.py shows the quick look never misses a declaration)."""
    import importlib.metadata

    assert not importlib.metadata.entry_points(group="gradcheck.layers")
    modules = imported("cli", "check", str(CONFIGS / "mlp.yaml"), tmp=tmp_path)
    assert not loaded(modules, "importlib.metadata")


def test_an_external_layer_loads_the_protocol_when_it_is_configured(tmp_path):
    modules = imported("-c", "from gradcheck.layers.external import External\n"
                       "External(['true'], options={'k': 1})", tmp=tmp_path)
    assert loaded(modules, "gradcheck.external_protocol")


def test_every_public_name_resolves_and_is_listed():
    for name in gradcheck.__all__:
        assert getattr(gradcheck, name) is not None, name
    assert set(gradcheck.__all__) <= set(dir(gradcheck))
    assert gradcheck.check_network.__module__ == "gradcheck.check"
    assert issubclass(gradcheck.ConfigError, gradcheck.GradcheckError)
    with pytest.raises(AttributeError, match="no attribute 'check_netwrok'"):
        gradcheck.check_netwrok  # noqa: B018 - the attribute access is the test


def test_star_import_and_registry_lookups_without_the_layers_imported_first():
    """Lazy packages must not lose the built-ins: a registry lookup imports them itself."""
    code = ("import sys\nfrom gradcheck.registry import layer_class, registry_scope\n"
            "assert 'gradcheck.layers' not in sys.modules\n"
            "with registry_scope():\n    pass\n"
            "assert layer_class('dense').__name__ == 'Dense'\n"
            "from gradcheck import *\nassert check_layer('tanh', (3,)).passed\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_program_freezes_its_objects_on_exit_and_main_does_not():
    """`gradcheck` (cli.run) spares the interpreter's final collections; `main`, which tests
    call in-process, must not freeze the caller's objects."""
    code = ("import gc, sys\nfrom gradcheck.cli import main, run\nsys.argv = ['gradcheck', "
            "'--version']\nfor name, entry in (('main', main), ('run', run)):\n    try:\n"
            "        entry()\n    except SystemExit:\n"
            "        print(name, gc.get_freeze_count() > 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    verdicts = [line for line in result.stdout.splitlines() if line.startswith(("main", "run"))]
    assert verdicts == ["main False", "run True"], result.stdout + result.stderr


def test_a_check_that_starts_no_worker_loads_no_multiprocessing(tmp_path, monkeypatch):
    """--jobs auto (the default) on a small network stays in one process, and pays nothing for
    the machinery of several; a check that starts workers does load it (the probe can fail)."""
    monkeypatch.setenv("GRADCHECK_JOBS", "auto")
    tiny = tmp_path / "tiny.yaml"  # a comparison of a few milliseconds, even on a busy machine
    tiny.write_text("input: {shape: [3], batch: 2}\nlayers: [{type: dense, units: 2}]\n"
                    "loss: mse\n")
    small = imported("cli", "check", str(tiny), "--format", "json", tmp=tmp_path)
    assert not loaded(small, "multiprocessing")
    forked = imported("cli", "check", str(tiny), "--format", "json", "--jobs", "2",
                      tmp=tmp_path)
    assert loaded(forked, "multiprocessing")
