"""gradcheck.plugins.load_reference: ``file.py:name`` and ``module:name`` references to user code,
one module per file however it is reached."""

from __future__ import annotations

import sys

import pytest

from gradcheck.errors import ConfigError, PluginError
from gradcheck.plugins import load_plugin, load_reference

SOURCE = '''
CALLS = []
VALUE = 3

def fn(x):
    CALLS.append(x)
    return x

class Pair:
    def forward(self, x):
        return x
'''


@pytest.fixture
def user_dir(tmp_path):
    folder = tmp_path / "code"
    (folder / "sub").mkdir(parents=True)
    (folder / "layers_ref_a.py").write_text(SOURCE)
    return folder


def test_a_file_named_two_ways_is_one_module(user_dir):
    first = load_reference("layers_ref_a.py:fn", user_dir, "forward")
    second = load_reference("sub/../layers_ref_a.py:fn", user_dir, "backward")
    assert first is second
    first(1)
    assert load_reference(f"{user_dir / 'layers_ref_a.py'}:CALLS.append", None, "f").__self__ == [1]


def test_a_file_and_its_module_name_are_one_module(user_dir, monkeypatch):
    (user_dir / "layers_ref_b.py").write_text(SOURCE)
    (user_dir / "layers_ref_c.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(user_dir))
    for name in ("layers_ref_b", "layers_ref_c"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    # By module name first, then by path ...
    assert load_reference("layers_ref_b:fn", user_dir, "f") is load_reference(
        "layers_ref_b.py:fn", user_dir, "f")
    # ... and by path first, then by module name.
    by_path = load_reference("layers_ref_c.py:fn", user_dir, "f")
    assert load_reference("layers_ref_c:fn", user_dir, "f") is by_path
    import layers_ref_c  # noqa: E402 - a plain import reaches the same module too
    assert layers_ref_c.fn is by_path


def test_a_plugin_file_and_a_reference_into_it_share_the_module(user_dir):
    (user_dir / "layers_ref_d.py").write_text(SOURCE)
    load_plugin("layers_ref_d.py", user_dir)
    fn = load_reference("layers_ref_d.py:fn", user_dir, "f")
    assert sys.modules[fn.__module__].fn is fn


def test_dotted_attributes_and_modules_resolve(user_dir):
    assert load_reference("layers_ref_a.py:Pair.forward", user_dir, "f").__name__ == "forward"
    assert load_reference("json:dumps", user_dir, "f")({"a": 1}) == '{"a": 1}'
    assert load_reference("os.path:join", user_dir, "f")("a", "b") == "a/b"


@pytest.mark.parametrize("ref, message, hint", [
    ("missing.py:fn", r"forward 'missing.py:fn': file '.*missing.py' does not exist",
     "relative to the YAML file's folder"),
    ("layers_ref_a.py:fun", r"layers_ref_a.py has no attribute 'fun'", "did you mean 'fn'?"),
    ("layers_ref_a.py:gn2", r"layers_ref_a.py has no attribute 'gn2'", "defines Pair, fn"),
    ("layers_ref_a.py:Pair.backward", r"Pair has no attribute 'backward'", "defines forward"),
    ("layers_ref_a.py:VALUE", r"is int 3, not a function or class", "file.py:name"),
    ("layers_ref_a.py", "must name a file or module and an attribute", "file.py:name"),
    ("layers_ref_a.py:", "must name a file or module and an attribute", "file.py:name"),
    ("layers_ref_a.py:1fn", "must name a file or module and an attribute", "file.py:name"),
    ("no_such_module_xyz:fn", "no module named 'no_such_module_xyz' is importable", "install"),
    (3, "must name a file or module and an attribute", "file.py:name"),
])
def test_bad_references_are_located_config_errors(user_dir, ref, message, hint):
    with pytest.raises(ConfigError, match=message) as info:
        load_reference(ref, user_dir, "forward", where="net.yaml:4:5", path="layers[0].forward")
    assert info.value.where == "net.yaml:4:5" and info.value.path == "layers[0].forward"
    assert hint in (info.value.hint or "")


def test_a_file_that_raises_on_import_is_a_plugin_error(user_dir):
    (user_dir / "broken_ref.py").write_text("import numpy\nraise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match=r"raised RuntimeError on import: boom \(at .*broken_ref"):
        load_reference("broken_ref.py:fn", user_dir, "forward", where="net.yaml:4:5")
