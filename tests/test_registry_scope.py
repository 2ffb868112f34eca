"""One pytest session, one process-global registry: registry_scope() undoes what is registered in
it, a plugin file runs once however it is reached (by path or by module name), and a plugin
loaded again after its scope ended gets its registrations back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import gradcheck
from conftest import CONFIGS, write_yaml
from gradcheck import registry
from gradcheck.plugins import load_entry_points, load_plugin

# A dense layer without bias whose weight gradient is multiplied by FACTOR (1.0: correct).
SCALED_DENSE = '''
import gradcheck

@gradcheck.register_layer({name!r})
class ScaledDense(gradcheck.Layer):
    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(size=(input_shape[0], 3))
        return (3,)
    def forward(self, x):
        self.x = x
        return x @ self.params["W"]
    def backward(self, grad_out):
        self.grads["W"] = {factor} * (self.x.T @ grad_out)
        return grad_out @ self.params["W"].T
'''


def _network(layer_type: str, plugins: list[str] | None = None) -> dict:
    config = {"input": {"shape": [4], "batch": 3}, "layers": [{"type": layer_type, "name": "d"}],
              "loss": "mse"}
    return {**config, "plugins": plugins} if plugins else config


def _write_layer(folder, file: str, name: str, factor: float):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file).write_text(SCALED_DENSE.format(name=name, factor=factor))
    return folder / file


def test_registrations_inside_a_scope_are_undone_and_builtins_survive():
    class Twice(gradcheck.Layer):
        pass

    with registry.registry_scope():
        gradcheck.register_layer("scoped_twice")(Twice)
        assert registry.layer_class("scoped_twice") is Twice
        with registry.registry_scope():  # scopes nest
            gradcheck.register_layer("scoped_inner")(Twice)
        assert "scoped_inner" not in registry.layer_names()
        assert "scoped_twice" in registry.layer_names()
    assert "scoped_twice" not in registry.layer_names()
    assert registry.layer_class("dense").__name__ == "Dense"
    with pytest.raises(gradcheck.ConfigError):
        registry.layer_class("scoped_twice")


def test_a_correct_and_a_buggy_class_share_a_name_in_turn(tmp_path):
    """The point of a scope: in one process, the correct class passes and the buggy one (same
    type name) is caught and blamed, in either order."""
    good = _write_layer(tmp_path / "good", "layers.py", "my_dense", 1.0)
    bad = _write_layer(tmp_path / "bad", "layers.py", "my_dense", 0.5)
    verdicts = []
    for path in (good, bad, good):
        with registry.registry_scope():
            report = gradcheck.check_network({**_network("my_dense", [str(path)])})
        verdicts.append((report.passed, report.root_causes))
    assert verdicts == [(True, []), (False, ["d"]), (True, [])]


def test_without_a_scope_the_second_class_is_refused(tmp_path):
    """The adversary of the test above: outside scopes the same name stays taken."""
    good = _write_layer(tmp_path / "good", "layers.py", "clash_dense", 1.0)
    bad = _write_layer(tmp_path / "bad", "layers.py", "clash_dense", 0.5)
    with registry.registry_scope():
        load_plugin(str(good), tmp_path)
        with pytest.raises(gradcheck.PluginError, match="already registered"):
            load_plugin(str(bad), tmp_path)


def test_a_plugin_file_loaded_again_after_its_scope_registers_again(tmp_path):
    path = _write_layer(tmp_path, "again.py", "again_dense", 1.0)
    for _ in range(2):
        with registry.registry_scope():
            assert gradcheck.check_network(_network("again_dense", [str(path)])).passed
        assert "again_dense" not in registry.layer_names()


def test_a_plugin_package_whose_submodule_registers_is_reinstated(tmp_path, monkeypatch):
    """Registrations are remembered per plugin load, so a package that registers in a submodule
    it imports gets them back too (the classes live in the submodule, not in the package)."""
    package = tmp_path / "scopepkg_sub"
    _write_layer(package, "layers.py", "pkg_dense", 1.0)
    (package / "__init__.py").write_text("from scopepkg_sub import layers  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for _ in range(2):
        with registry.registry_scope():
            assert gradcheck.check_network(_network("pkg_dense", ["scopepkg_sub"])).passed


def test_a_file_loaded_by_path_then_imported_by_name_is_one_module(tmp_path, monkeypatch):
    path = _write_layer(tmp_path, "scope_order_a.py", "order_a_dense", 1.0)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "scope_order_a", raising=False)
    with registry.registry_scope():
        load_plugin(str(path), tmp_path)
        by_path = registry.layer_class("order_a_dense")
        import scope_order_a  # noqa: E402 - the import after the path load is the test

        assert scope_order_a.ScaledDense is by_path
        assert scope_order_a.__spec__.origin == str(path)  # the module keeps its own spec


def test_a_file_imported_by_name_then_loaded_by_path_is_one_module(tmp_path, monkeypatch):
    path = _write_layer(tmp_path, "scope_order_b.py", "order_b_dense", 1.0)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "scope_order_b", raising=False)
    with registry.registry_scope():
        import scope_order_b  # noqa: E402

        load_plugin("scope_order_b.py", tmp_path)
        assert registry.layer_class("order_b_dense") is scope_order_b.ScaledDense


def test_installed_entry_points_come_back_after_a_scope(tmp_path, monkeypatch):
    module = "scope_entry_mod"
    _write_layer(tmp_path, f"{module}.py", "entry_dense", 1.0)
    info = tmp_path / "scopeentry-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scopeentry\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[gradcheck.layers]\nentry = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with registry.registry_scope():
        load_entry_points(force=True)
        assert "entry_dense" in registry.layer_names()
    assert "entry_dense" not in registry.layer_names()
    with registry.registry_scope():
        load_entry_points()  # already loaded once: its registrations are reinstated
        assert gradcheck.check_network(_network("entry_dense")).passed


PYTEST_SESSION = '''
import pytest

import gradcheck
from gradcheck.testing import assert_gradients
{first}

def test_one(gradcheck_registry):
    assert gradcheck.check_network("plugin.yaml").passed
    {second}
    assert my_layers.Swish is gradcheck.layer_class("swish")


def test_two(assert_gradients):
    # A wrong my_dense in this test's own scope: caught, and forgotten after the test.
    @gradcheck.register_layer("my_dense")
    class Wrong(gradcheck.Layer):
        def forward(self, x):
            return 2.0 * x
        def backward(self, grad_out):
            return grad_out
    with pytest.raises(AssertionError, match="root cause"):
        assert_gradients("my_dense", input_shape=(3,))


def test_three(gradcheck_registry):
    @gradcheck.register_layer("my_dense")
    class Right(gradcheck.Layer):
        def forward(self, x):
            return 2.0 * x
        def backward(self, grad_out):
            return 2.0 * grad_out
    assert assert_gradients("my_dense", input_shape=(3,)).passed
    import my_layers
    assert assert_gradients("plugin.yaml").passed
'''


@pytest.mark.parametrize("first, second", [("import my_layers", ""),
                                           ("", "import my_layers")])
def test_a_pytest_session_imports_a_plugin_and_checks_its_yaml(tmp_path, first, second):
    """The reported failure: a test importing my_layers and checking a YAML naming the same file
    failed with 'already registered'; in either order it must pass, and tests can take turns
    with the type name through the plugin's fixtures."""
    for name in ("my_layers.py", "plugin.yaml"):
        (tmp_path / name).write_text((CONFIGS / name).read_text())
    (tmp_path / "test_session.py").write_text(PYTEST_SESSION.format(first=first, second=second))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "test_session.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_cli_checks_each_file_in_its_own_scope(run_cli, tmp_path):
    """Two networks whose plugin files give one type name to different classes: checked in one
    command, each with its own class (without scopes the second would be refused)."""
    for folder, factor in (("good", 1.0), ("bad", 0.5)):
        _write_layer(tmp_path / folder, "layers.py", "cli_dense", factor)
        write_yaml(tmp_path / folder, textwrap.dedent("""\
            plugins: [layers.py]
            input: {shape: [4], batch: 3}
            layers: [{type: cli_dense, name: d}]
            loss: mse
            """))
    result = run_cli("check", tmp_path / "good" / "net.yaml", tmp_path / "bad" / "net.yaml", "-q")
    lines = result.stdout.splitlines()
    assert result.exit_code == 1, result.stdout + result.stderr
    assert lines[0].endswith("match.") and "PASS" in lines[0]
    assert "FAIL" in lines[1] and "Root cause: d" in lines[1]


def test_a_classs_options_are_read_once_and_the_class_is_still_freed_when_dropped():
    # The constructor's parameters are cached per class (inspect.signature is slow): the cache
    # must not keep a plugin class that nothing else holds alive (super() makes a cycle).
    import gc
    import weakref

    def define():
        class Scaled(gradcheck.Layer):
            def __init__(self, units: int = 3, *, factor: float = 1.0):
                super().__init__()

        assert registry.options(Scaled) == [("units", "int", "3"), ("factor", "float", "1.0")]
        assert registry.unknown_option(Scaled, {"units": 2, "bias": True}) == "bias"
        assert registry.options(Scaled) == [("units", "int", "3"), ("factor", "float", "1.0")]
        return weakref.ref(Scaled)

    dropped = define()
    gc.collect()
    assert dropped() is None
