"""Robustness: whatever a user feeds it, gradcheck exits 0, 1 or 2 with a message, never a
traceback; the same config gives the same bytes; nothing the user owns is left changed."""

from __future__ import annotations

import copy
import json
import platform

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

import gradcheck
from conftest import CONFIGS, examples, write_yaml
from gradcheck.check import run_check, settings_for
from gradcheck.cli import main
from gradcheck.resources import reuse_freed_memory

BASE = {
    "name": "fuzz", "seed": 1,
    "input": {"shape": [1, 6, 6], "batch": 2},
    "layers": [{"type": "conv2d", "name": "c", "filters": 2, "kernel": 3, "padding": 1},
               "relu", {"type": "maxpool2d", "size": 2}, "flatten",
               {"type": "dense", "name": "d", "units": 3}],
    "loss": "cross_entropy",
    "check": {"mode": "sample", "samples": 4},
}

ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.sampled_from([0, -1, 10**6, 2**40]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["relu", "dense", "mse", "bce", "float32", "full", "1e-6", "nan"]),
    st.lists(st.integers(-2, 8), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _paths(node, prefix=()):
    """Every (container path, key) in a document, to pick one to mutate."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


@st.composite
def mutated_documents(draw):
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "units", "kernel", "stride", "typo"]))] = \
                draw(ODD_VALUES)
        else:
            parent[path[-1]] = draw(ODD_VALUES)
    return doc


def _run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}\n"
                             f"{result.stderr}") from result.exception
    assert result.exit_code in (0, 1, 2, 3), result.exit_code
    assert "Traceback" not in result.stderr
    if result.exit_code == 2:
        assert result.stderr.startswith("gradcheck: error:")
    return result


@settings(max_examples=examples(60), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=mutated_documents())
def test_mutated_configs_never_crash(tmp_path, doc):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    _run(["check", str(path), "--format", "json"])


@settings(max_examples=examples(40), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("{}[]:,- \n\tabc01'\"&*!|>#%@")), max_size=60))
def test_random_text_never_crashes(tmp_path, text):
    path = tmp_path / "random.yaml"
    path.write_text(text)
    _run(["check", str(path)])


def test_same_config_gives_byte_identical_json(tmp_path):
    outputs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        CliRunner().invoke(main, ["check", str(CONFIGS / "all_layers.yaml"), "--format", "json",
                                  "-o", str(out)])
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["passed"] is True


@gradcheck.register_layer("explodes_after")
class ExplodesAfter(gradcheck.Layer):
    """A correct dense layer that raises on its N-th forward call: mid-check."""

    def __init__(self, units: int, calls: int):
        super().__init__()
        self.units, self.calls = units, calls

    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(size=(input_shape[0], self.units))
        return (self.units,)

    def forward(self, x):
        self.calls -= 1
        if self.calls < 0:
            raise RuntimeError("device lost")
        self.x = x
        return x @ self.params["W"]

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        return grad_out @ self.params["W"].T


@pytest.mark.parametrize("calls", [3, 20])
def test_params_and_inputs_restored_when_a_plugin_raises_mid_check(calls):
    spec = gradcheck.load_config({
        "input": {"shape": [4], "batch": 3},
        "layers": [{"type": "dense", "name": "first", "units": 4},
                   {"type": "explodes_after", "name": "boom", "units": 4, "calls": calls},
                   {"type": "dense", "name": "last", "units": 2}],
        "loss": "mse"})
    network, batch = gradcheck.build_network(spec)
    before = {(layer.name, k): v.copy() for layer in network.layers for k, v in layer.params.items()}
    x_before = batch.x.copy()
    with pytest.raises(gradcheck.LayerError, match="boom.*RuntimeError.*forward"):
        run_check(network, batch, settings_for(spec))
    for layer in network.layers:
        for k, v in layer.params.items():
            np.testing.assert_array_equal(v, before[(layer.name, k)])
    np.testing.assert_array_equal(batch.x, x_before)


@pytest.mark.parametrize("text, needle", [
    ("input: {shape: [100000, 100000], batch: 8}\nlayers: [relu]\nloss: mse\n", "fits in memory"),
    ("input: {shape: [10]}\nlayers: [{type: dense, units: 10000000000}]\nloss: mse\n",
     "fits in memory"),
])
def test_networks_that_cannot_fit_are_refused_with_an_estimate(tmp_path, text, needle):
    result = _run(["check", str(write_yaml(tmp_path, text))])
    assert result.exit_code == 2 and needle in result.stderr


@pytest.mark.parametrize("body, phase", [
    ("def build(self, input_shape, rng):\n        raise ValueError('bad shape')", "build"),
    ("def forward(self, x):\n        raise KeyError('k')", "forward"),
    ("def forward(self, x):\n        return x\n    def backward(self, g):\n        return g[:, :1]",
     "backward returned shape"),
    ("def forward(self, x):\n        return x\n    def backward(self, g):\n        return g.astype(int)",
     "dtype"),
    ("def forward(self, x):\n        return x * np.nan\n    def backward(self, g):\n        return g",
     "NaN"),
    ("def build(self, input_shape, rng):\n        self.params['w'] = np.ones(1)\n        return input_shape\n"
     "    def forward(self, x):\n        return x * self.params['w']\n"
     "    def backward(self, g):\n        return g * self.params['w']", "no gradient for parameter"),
])
def test_misbehaving_plugin_layers_are_named_with_the_phase(tmp_path, body, phase):
    # Each case registers its own class as 'bad': the CLI checks a file in its own registry
    # scope, which forgets it afterwards.
    (tmp_path / "bad.py").write_text(
        "import numpy as np\nimport gradcheck\n\n@gradcheck.register_layer('bad')\n"
        f"class Bad(gradcheck.Layer):\n    {body}\n")
    text = ("plugins: [bad.py]\ninput: {shape: [3], batch: 2}\n"
            "layers: [{type: bad, name: culprit}]\nloss: mse\n")
    result = _run(["check", str(write_yaml(tmp_path, text))])
    assert result.exit_code == 2
    assert "culprit" in result.stderr and phase in result.stderr


def test_plugin_raising_on_import_names_file_and_line(tmp_path):
    (tmp_path / "broken.py").write_text("import numpy\n\nraise ImportError('missing libfoo')\n")
    text = "plugins: [broken.py]\ninput: {shape: [3]}\nlayers: [relu]\nloss: mse\n"
    result = _run(["check", str(write_yaml(tmp_path, text))])
    assert result.exit_code == 2
    assert "broken.py" in result.stderr and "missing libfoo" in result.stderr and ":3" in result.stderr


def test_plugin_syntax_error_names_the_file_not_importlib(tmp_path):
    (tmp_path / "typo.py").write_text("import gradcheck\ndef oops(:\n")
    text = "plugins: [typo.py]\ninput: {shape: [3]}\nlayers: [relu]\nloss: mse\n"
    result = _run(["check", str(write_yaml(tmp_path, text))])
    assert result.exit_code == 2
    assert "typo.py, line 2" in result.stderr and "frozen" not in result.stderr


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_bytes(b"not numpy"), "not a readable"),
    (lambda p: np.save(p, np.array([[1.0, np.nan, 2.0]] * 2)), "NaN/Inf"),
    (lambda p: np.save(p, np.ones((2, 5))), "shape"),
])
def test_bad_data_files(tmp_path, make, needle):
    make(tmp_path / "x.npy")
    text = "input: {file: x.npy}\nlayers: [{type: dense, units: 2}]\nloss: mse\n" \
           "target: {file: x.npy}\n"
    result = _run(["check", str(write_yaml(tmp_path, text))])
    assert result.exit_code == 2 and needle in result.stderr


def test_yaml_is_read_with_the_safe_loader(tmp_path):
    text = "input: !!python/object/apply:os.system ['echo pwned']\nlayers: [relu]\nloss: mse\n"
    result = _run(["check", str(write_yaml(tmp_path, text))])
    assert result.exit_code == 2 and "pwned" not in result.stdout


def test_max_seconds_stops_a_long_check_cleanly(tmp_path, gradcheck_registry):
    # A deliberately slow (correct) plugin layer makes the check outlast a tiny deadline.
    (tmp_path / "slow.py").write_text(
        "import time\nimport gradcheck\n\n@gradcheck.register_layer('slow_identity')\n"
        "class Slow(gradcheck.Layer):\n    def forward(self, x):\n        time.sleep(0.1)\n"
        "        return x\n    def backward(self, g):\n        return g\n")
    text = ("plugins: [slow.py]\ninput: {shape: [8], batch: 4}\nlayers:\n"
            "  - {type: dense, name: d, units: 8}\n  - {type: slow_identity, name: s}\n"
            "  - {type: dense, name: out, units: 3}\nloss: mse\n")
    path = write_yaml(tmp_path, text)
    spec = gradcheck.load_config(path)
    network, batch = gradcheck.build_network(spec)
    params = {k: v.copy() for k, v in network.layers[0].params.items()}
    report = run_check(network, batch, settings_for(spec, mode="full", max_seconds=0.5))
    counts = report.counts()
    assert counts["skipped_targets"] >= 1 and counts["checked"] > 0
    assert any("--max-seconds 0.5 deadline" in w for w in report.warnings)
    assert report.verdict == "incomplete" and not report.passed
    for k, v in network.layers[0].params.items():
        np.testing.assert_array_equal(v, params[k])
    result = _run(["check", str(path), "--mode", "full", "--max-seconds", "0.5", "--format", "json"])
    assert result.exit_code == 3
    assert json.loads(result.stdout)["summary"]["skipped_targets"] >= 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_allocator_is_told_to_reuse_freed_blocks_and_checks_still_pass():
    assert reuse_freed_memory() is True
    report = gradcheck.check_network(CONFIGS / "batchnorm_cnn.yaml", mode="full")
    assert report.passed and report.counts()["checked"] > 0
