"""The external layer: reference clients in C and plain Python pass, their buggy twins are blamed,
every way a child can misbehave is a located user error (exit 2), and no child outlives a check."""

from __future__ import annotations

import ast
import gc
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gradcheck
from conftest import ROOT, gone, logged_pids, require_tool, write_yaml
from gradcheck import external_protocol
from gradcheck.external_protocol import encode_message, format_value
from gradcheck.layers.external import External

EXAMPLES = ROOT / "examples" / "external"
MISBEHAVING = Path(__file__).resolve().parent / "external" / "misbehaving_client.py"


@pytest.fixture(scope="module")
def c_clients(tmp_path_factory) -> Path:
    """The C reference client and its buggy twin, compiled with the system compiler."""
    cc = require_tool("cc", "gcc", install="apt-get install gcc, or .ci/install-external-tools")
    out = tmp_path_factory.mktemp("cbuild")
    for binary, flags in (("conv2d", []), ("conv2d_buggy", ["-DBUGGY"])):
        subprocess.run([cc, "-O2", "-std=c99", "-Wall", "-Werror", *flags, "-o", str(out / binary),
                        str(EXAMPLES / "conv2d.c"), "-lm"], check=True, capture_output=True)
    return out


def _check_json(run_cli, path: Path):
    result = run_cli("check", path, "--format", "json")
    return result, (json.loads(result.stdout) if result.exit_code in (0, 1) else None)


# -- reference clients: the correct layer passes, its buggy twin is blamed ----------------------

@pytest.mark.parametrize("yaml_name", ["conv_c.yaml", "conv_c_buggy.yaml"])
def test_c_conv_client(c_clients, tmp_path, run_cli, yaml_name):
    # The YAML is run from a copy next to the binaries: the command './conv2d' is relative to it.
    for binary in ("conv2d", "conv2d_buggy"):
        shutil.copy2(c_clients / binary, tmp_path / binary)
    path = tmp_path / yaml_name
    shutil.copy(EXAMPLES / yaml_name, path)
    result, report = _check_json(run_cli, path)
    if yaml_name == "conv_c.yaml":
        assert result.exit_code == 0, result.stdout + result.stderr
        assert report["passed"]
        # Every element of the C layer's parameters and of the network input was compared.
        (cconv,) = [layer for layer in report["layers"] if layer["name"] == "cconv"]
        assert [c["checked"] for c in cconv["checks"]] == [math.prod(c["shape"])
                                                           for c in cconv["checks"]]
    else:
        assert result.exit_code == 1, result.stdout + result.stderr
        assert report["root_causes"] == ["cconv"]
        (cconv,) = [layer for layer in report["layers"] if layer["name"] == "cconv"]
        status = {c["target"]: c["status"] for c in cconv["checks"]}
        # The flipped kernel only corrupts dL/dinput: the blame is that precise.
        assert status == {"W": "pass", "b": "pass", "input": "fail"}


@pytest.mark.parametrize("yaml_name", ["dense_python.yaml", "dense_python_buggy.yaml"])
def test_python_foreign_client(run_cli, yaml_name):
    if shutil.which("python3") is None:
        pytest.skip("the shipped YAML runs 'python3' from PATH")
    result, report = _check_json(run_cli, EXAMPLES / yaml_name)
    if yaml_name == "dense_python.yaml":
        assert result.exit_code == 0, result.stdout + result.stderr
    else:
        assert result.exit_code == 1, result.stdout + result.stderr
        assert report["root_causes"] == ["ext"]
        (ext,) = [layer for layer in report["layers"] if layer["name"] == "ext"]
        assert {c["target"]: c["status"] for c in ext["checks"]} == {
            "W": "pass", "b": "fail", "input": "pass"}


def test_the_python_client_is_foreign_it_imports_only_the_standard_library():
    tree = ast.parse((EXAMPLES / "dense_client.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])}
    assert imported and imported <= sys.stdlib_module_names, imported


def _conv_layer(c_clients, binary="conv2d", **options) -> External:
    layer = External([str(c_clients / binary)], {"filters": 2, "kernel": 3, "padding": 1, **options})
    layer.build((2, 5, 4), np.random.default_rng(0))
    return layer


def test_any_batch_size_equals_sample_by_sample(c_clients):
    """The engine may stack perturbed copies along the batch axis: one request of N samples must
    give what N requests of one sample give, for forward and backward alike."""
    layer = _conv_layer(c_clients)
    rng = np.random.default_rng(1)
    try:
        for batch in (1, 7, 3):
            x = rng.normal(size=(batch, 2, 5, 4))
            g = rng.normal(size=(batch, 2, 5, 4))
            y = layer.forward(x)
            grad_x = layer.backward(g)
            grad_w = layer.grads["W"].copy()
            singles = [(layer.forward(x[i:i + 1]), layer.backward(g[i:i + 1]), layer.grads["W"].copy())
                       for i in range(batch)]
            np.testing.assert_allclose(y, np.concatenate([s[0] for s in singles]), rtol=1e-13)
            np.testing.assert_allclose(grad_x, np.concatenate([s[1] for s in singles]), rtol=1e-13)
            np.testing.assert_allclose(grad_w, sum(s[2] for s in singles), rtol=1e-12, atol=1e-14)
    finally:
        layer.close()


def test_c_conv_matches_the_builtin_conv2d(c_clients):
    """The C client is a real convolution: same output as the built-in layer with its weights."""
    layer = _conv_layer(c_clients)
    builtin = gradcheck.layer_class("conv2d")(filters=2, kernel=3, padding=1)
    builtin.build((2, 5, 4), np.random.default_rng(0))
    builtin.params["W"][...] = layer.params["W"]
    builtin.params["b"][...] = layer.params["b"]
    x = np.random.default_rng(2).normal(size=(3, 2, 5, 4))
    try:
        np.testing.assert_allclose(layer.forward(x), builtin.forward(x), rtol=1e-12, atol=1e-13)
    finally:
        layer.close()


def test_same_seed_same_weights_and_float32_kept(c_clients):
    a, b = _conv_layer(c_clients), _conv_layer(c_clients)
    try:
        np.testing.assert_array_equal(a.params["W"], b.params["W"])
        x = np.ones((2, 2, 5, 4), dtype=np.float32)
        assert a.forward(x).dtype == np.float32
        assert a.backward(np.ones((2, 2, 5, 4), dtype=np.float32)).dtype == np.float32
    finally:
        a.close()
        b.close()


# -- one process per layer for the whole check, and it never survives ---------------------------

def test_one_process_per_layer_for_the_whole_check(c_clients, tmp_path, run_cli):
    shutil.copy2(c_clients / "conv2d", tmp_path / "conv2d")
    # sh replaces itself with the client (exec), so each logged pid is one client process.
    wrapper = "echo $$ >> child.pid; exec ./conv2d"
    path = write_yaml(tmp_path, f"""
input: {{shape: [1, 4, 4], batch: 2}}
layers:
  - {{type: external, name: c1, command: [sh, -c, '{wrapper}'], options: {{filters: 2, padding: 1}}}}
  - {{type: external, name: c2, command: [sh, -c, '{wrapper}'], options: {{filters: 1}}}}
  - flatten
loss: mse
""")
    result, report = _check_json(run_cli, path)
    assert result.exit_code == 0, result.stdout + result.stderr
    pids = logged_pids(tmp_path)
    assert len(pids) == 2, "one child per external layer, not one per evaluation"
    assert all(gone(pid) for pid in pids)


def test_network_close_and_garbage_collection_stop_the_child(tmp_path):
    spec_text = f"""
input: {{shape: [3], batch: 2}}
layers:
  - {{type: external, command: ['{sys.executable}', '{MISBEHAVING}', ok]}}
loss: mse
"""
    network, _ = gradcheck.build_network(gradcheck.load_config(write_yaml(tmp_path, spec_text)))
    (pid,) = logged_pids(tmp_path)
    assert not gone(pid, wait=0.0)
    with network:
        pass
    assert gone(pid)

    network, _ = gradcheck.build_network(gradcheck.load_config(tmp_path / "net.yaml"))
    pid = logged_pids(tmp_path)[-1]
    del network
    gc.collect()
    assert gone(pid), "an unclosed layer's child is stopped when the layer is collected"


def test_a_failed_build_stops_children_already_started(tmp_path, run_cli):
    path = write_yaml(tmp_path, f"""
input: {{shape: [3], batch: 2}}
layers:
  - {{type: external, command: ['{sys.executable}', '{MISBEHAVING}', ok]}}
  - {{type: conv2d, filters: 2}}
loss: mse
""")
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert all(gone(pid) for pid in logged_pids(tmp_path))


# -- every misbehaviour is a user error (exit 2) with a clear message ---------------------------

MISBEHAVIOURS = {
    "garbage": "answered the handshake with 'Loading my layer",
    "garbage_reply": "answered the build request with 'DEBUG: building'",
    "version2": "speaks protocol version '2'; this gradcheck speaks version 1",
    "exit_early": "exited with status 3 during the build request",
    "hang_forward": "did not finish the forward request within 0.5 s",
    "hang_with_grandchild": "did not finish the forward request within 0.5 s",
    "wrong_shape": "has shape (1, 3), expected (2, 3)",
    "error_build": "the child reported an error: option 'filters' is required",
    "flood": "bytes without a newline",
}


@pytest.mark.parametrize("mode", sorted(MISBEHAVIOURS))
def test_misbehaving_child_is_a_user_error_and_is_stopped(tmp_path, run_cli, mode):
    path = write_yaml(tmp_path, f"""
input: {{shape: [3], batch: 2}}
layers:
  - {{type: external, name: ext, command: ['{sys.executable}', '{MISBEHAVING}', {mode}],
     timeout: 0.5}}
loss: mse
""")
    started = time.monotonic()
    result = run_cli("check", path)
    assert result.exit_code == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert MISBEHAVIOURS[mode] in message
    assert "layer 'ext' (external)" in message and "net.yaml" in message
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 10
    assert all(gone(pid) for pid in logged_pids(tmp_path))
    if mode == "exit_early":
        assert "segmentation fault (pretend)" in message, "the child's stderr is quoted"
    if mode == "hang_with_grandchild":
        assert gone(logged_pids(tmp_path, "grandchild.pid")[0]), \
            "the child's own children are stopped"


def test_a_child_that_ended_before_a_request_is_reported_as_one_that_ended_during_it(
        tmp_path, run_cli, monkeypatch):
    # Which of the two happens is timing (make test-deep met it under load): the message must
    # not depend on it, nor lose the exit status and stderr.
    real = external_protocol.Child.request

    def after_the_child_ended(self, *args, **kwargs):
        self._proc.wait(timeout=5)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(external_protocol.Child, "request", after_the_child_ended)
    path = write_yaml(tmp_path, f"""
input: {{shape: [3], batch: 2}}
layers:
  - {{type: external, name: ext, command: ['{sys.executable}', '{MISBEHAVING}', exit_early]}}
loss: mse
""")
    result = run_cli("check", path)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and MISBEHAVIOURS["exit_early"] in message, message
    assert "segmentation fault (pretend)" in message


@pytest.mark.parametrize("command, expected", [
    ("[./no_such_program]", "no_such_program does not exist"),
    ("[no-such-program-on-path-x]", "no such program on PATH"),
    ("[./not_executable.sh]", "is not executable"),
    ("[./no_shebang]", "does not start: Exec format error"),
    ("[]", "command is empty"),
])
def test_a_command_that_cannot_start_is_a_user_error(tmp_path, run_cli, command, expected):
    (tmp_path / "not_executable.sh").write_text("#!/bin/sh\n")
    (tmp_path / "no_shebang").write_bytes(b"\x00\x01garbage")
    (tmp_path / "no_shebang").chmod(0o755)
    path = write_yaml(tmp_path, f"""
input: {{shape: [3], batch: 2}}
layers:
  - {{type: external, name: ext, command: {command}}}
loss: mse
""")
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert expected in " ".join(result.stderr.split())


@pytest.mark.parametrize("options, expected", [
    ("options: {nested: {a: 1}}", "option 'nested' must be a number"),
    ("options: {sizes: [1, two]}", "a list may hold only numbers"),
    ("timeout: -1", "timeout must be a positive number"),
    ("timeout: fast", "timeout must be a positive number"),
])
def test_bad_layer_options_are_config_errors(tmp_path, run_cli, options, expected):
    path = write_yaml(tmp_path, f"""
input: {{shape: [3], batch: 2}}
layers:
  - {{type: external, name: ext, command: ['{sys.executable}', '{MISBEHAVING}', ok], {options}}}
loss: mse
""")
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert expected in " ".join(result.stderr.split())
    assert not (tmp_path / "child.pid").exists(), "no child is started for invalid options"


# -- the protocol's text forms --------------------------------------------------------------

def test_option_values_and_arrays_encode_as_documented():
    assert [format_value(v) for v in (True, 3, 0.1, "same", [1, 2.5])] == [
        "1", "3", "0.1", "same", "1 2.5"]
    binary = encode_message("forward", [("training", "1")], [("x", np.array([[1.0, -2.0]]))], "binary")
    assert binary == (b"forward\ntraining 1\narray x 2 1 2\n" + np.array([1.0, -2.0], "<f8").tobytes()
                      + b"end\n")
    text = encode_message("forward", [], [("x", np.array([0.1, 1e-300]))], "text")
    assert text == b"forward\narray x 1 2\n0.1 1e-300\nend\n"
    assert [float(v) for v in text.split(b"\n")[2].split()] == [0.1, 1e-300]


def test_the_engine_stacks_perturbed_copies_into_few_external_requests(monkeypatch):
    """Batching of perturbations reaches the child: requests carry more rows than the input batch."""
    if shutil.which("python3") is None:
        pytest.skip("the shipped YAML runs 'python3' from PATH")
    batches = []
    forward = External.forward
    monkeypatch.setattr(External, "forward", lambda self, x: (batches.append(x.shape[0]),
                                                              forward(self, x))[1])
    report = gradcheck.check_network(EXAMPLES / "dense_python.yaml")
    # No event but the memory estimate every check gives: no fallback from stacked copies.
    assert report.passed and all(e.startswith("memory:") for e in report.events)
    ext = next(layer for layer in report.layers if layer.name == "ext")
    compared = next(c for c in ext.checks if c.target == "input").checked
    # Parameters are shared by every row, so only input perturbations can be stacked: their
    # +h and -h rows all travel in requests larger than the batch of 4.
    assert max(batches) > 4
    assert sum(b for b in batches if b > 4) >= 2 * compared - 4, (batches, compared)


def test_every_unit_gets_the_yaml_folder_as_base_dir(tmp_path):
    folder = tmp_path / "nested"
    folder.mkdir()
    spec = gradcheck.load_config(write_yaml(folder, "input: {shape: [3]}\nlayers: [relu, "
                                            "{type: dense, units: 2}]\nloss: mse\n"))
    network, _ = gradcheck.build_network(spec)
    with network:
        assert {unit.base_dir.resolve() for unit in network.units} == {folder.resolve()}


def test_optional_reply_parts_mixes_batch_and_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the client writes child.pid in its working directory
    mixing = External([sys.executable, str(MISBEHAVING), "mixes_batch"])
    stateful = External([sys.executable, str(MISBEHAVING), "state"])
    try:
        assert mixing.build((3,), np.random.default_rng(0)) == (3,)
        assert mixing.mixes_batch, "'mixes_batch 1' in the build reply; unknown fields are ignored"
        stateful.build((3,), np.random.default_rng(0))
        assert not stateful.mixes_batch
        x = np.array([[1.0, -2.0, 3.0], [-0.5, 0.25, -4.0]])
        np.testing.assert_array_equal(stateful.forward(x), x)
        np.testing.assert_array_equal(stateful.branch_state(), x > 0)
    finally:
        mixing.close()
        stateful.close()
    assert all(gone(pid) for pid in logged_pids(tmp_path))
