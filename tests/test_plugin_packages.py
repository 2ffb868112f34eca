"""Plugins as packages: the ``gradcheck.layers`` entry-point group, and contract errors that name
the plugin and the problem. Each test registers in its own registry scope (the ``site`` fixture
uses ``gradcheck_registry``), so layer names repeat across tests; module names cannot, since
Python imports a module name once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

import gradcheck
from conftest import write_yaml
from gradcheck import registry
from gradcheck.plugins import ENV_NO_AUTOLOAD, load_entry_points, load_plugin

LAYER_SOURCE = '''
import gradcheck

NOT_A_LAYER = 42

class Scale(gradcheck.Layer):
    """Multiplies by 3."""
    def forward(self, x):
        return 3.0 * x
    def backward(self, grad_out):
        return {factor} * grad_out

class NoBackward(gradcheck.Layer):
    def forward(self, x):
        return x

class BadForward(gradcheck.Layer):
    def forward(self):
        return 0
    def backward(self, grad_out):
        return grad_out
'''


def _install(tmp_path, entries: dict[str, str], factor: float = 3.0, dist: str = "gcplug") -> str:
    """Make an importable module and a dist-info declaring ``entries`` in tmp_path; return the
    module name. importlib.metadata finds distributions on sys.path, as pip would leave them."""
    module = f"gcplug_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(LAYER_SOURCE.format(factor=factor))
    info = tmp_path / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = [f"{name} = {value.format(module=module)}" for name, value in entries.items()]
    (info / "entry_points.txt").write_text("[gradcheck.layers]\n" + "\n".join(lines) + "\n")
    return module


@pytest.fixture
def site(tmp_path, monkeypatch, gradcheck_registry):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(ENV_NO_AUTOLOAD, raising=False)
    return tmp_path


def _net(layer_type: str) -> dict:
    return {"input": {"shape": [4], "batch": 2}, "layers": [{"type": layer_type}], "loss": "mse"}


def test_a_class_entry_point_is_registered_under_its_name_and_checked(site):
    name = "scale"
    _install(site, {name: "{module}:Scale"})
    loaded = load_entry_points(force=True)
    assert any(item.startswith(f"{name} = ") for item in loaded)
    assert registry.layer_class(name).__name__ == "Scale"
    assert gradcheck.check_network(_net(name)).passed


def test_a_wrong_layer_from_a_package_is_blamed(site):
    _install(site, {"scale": "{module}:Scale"}, factor=2.0)
    load_entry_points(force=True)
    report = gradcheck.check_network(_net("scale"))
    assert report.root_causes == ["scale_1"]


def test_a_module_entry_point_is_imported(site):
    module = f"gcmod_{uuid.uuid4().hex[:8]}"
    layer = "mod_ident"
    (site / f"{module}.py").write_text(textwrap.dedent(f"""
        import gradcheck

        @gradcheck.register_layer({layer!r})
        class Ident(gradcheck.Layer):
            def forward(self, x):
                return x
            def backward(self, g):
                return g
        """))
    info = site / "gcmod-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gcmod\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[gradcheck.layers]\nanything = {module}\n")
    load_entry_points(force=True)
    assert registry.layer_class(layer).__name__ == "Ident"


@pytest.mark.parametrize("value, needles", [
    ("{module}:NoBackward", ["does not implement backward", "NoBackward"]),
    ("{module}:BadForward", ["forward(self)", "cannot be called with 1 argument"]),
    ("{module}:NOT_A_LAYER", ["names 42, which is neither a module nor"]),
    ("gcplug_not_installed_xyz", ["failed to load", "ModuleNotFoundError"]),
])
def test_broken_entry_points_name_the_entry_point_package_and_problem(site, value, needles):
    name = "broken"
    _install(site, {name: value}, dist="brokenpkg")
    with pytest.raises(gradcheck.PluginError) as info:
        load_entry_points(force=True)
    message = str(info.value)
    assert f"entry point {name!r}" in message and "'brokenpkg'" in message
    assert ENV_NO_AUTOLOAD in message
    for needle in needles:
        assert needle in message


def test_autoload_can_be_disabled(site, monkeypatch):
    _install(site, {"never_loaded": "gcplug_not_installed_xyz"})
    monkeypatch.setenv(ENV_NO_AUTOLOAD, "1")
    assert load_entry_points(force=True) == []


def test_a_plugin_file_whose_class_breaks_the_contract_names_file_and_class(tmp_path,
                                                                             gradcheck_registry):
    name = "badsig"
    (tmp_path / "badsig.py").write_text(textwrap.dedent(f"""
        import gradcheck

        @gradcheck.register_layer({name!r})
        class BadSig(gradcheck.Layer):
            def build(self, input_shape):
                return input_shape
        """))
    with pytest.raises(gradcheck.PluginError) as info:
        load_plugin("badsig.py", tmp_path)
    message = str(info.value)
    assert "badsig.py" in message and "BadSig" in message and "build(self, input_shape)" in message


def test_cli_lists_and_uses_an_installed_plugin_and_reports_a_broken_one(tmp_path):
    name = "scale"
    _install(tmp_path, {name: "{module}:Scale"})
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    listing = subprocess.run([sys.executable, "-m", "gradcheck", "layers", name],
                             capture_output=True, text=True, env=env)
    assert listing.returncode == 0 and name in listing.stdout and "Multiplies by 3" in listing.stdout
    net = write_yaml(tmp_path, f"input: {{shape: [3]}}\nlayers: [{name}]\nloss: mse\n")
    assert subprocess.run([sys.executable, "-m", "gradcheck", "check", str(net)],
                          capture_output=True, env=env).returncode == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    _install(broken, {"oops": "{module}:NoBackward"}, dist="oopspkg")
    env["PYTHONPATH"] += f":{broken}"
    result = subprocess.run([sys.executable, "-m", "gradcheck", "check", str(net)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "'oops'" in result.stderr and "Traceback" not in result.stderr
