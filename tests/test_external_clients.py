"""The MATLAB/Octave and C++ reference clients of the external layer: each computes the convolution
it claims (against plain loops and central differences) and draws its weights from the seed as
documented, its shipped config passes `gradcheck check`, its buggy twin is blamed exactly where its
bug is, and no client process outlives a check. (Their language: test_matlab_subset.py.)

Skipped where octave-cli or g++ is missing, unless GRADCHECK_REQUIRE_EXTERNAL_TOOLS=1 (CI)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import gradcheck
from conftest import (EXTERNAL_EXAMPLES, OCTAVE_FLAGS, examples, gone, logged_pids,
                      require_tool, write_yaml)
from conv_reference import initial_weights, reference_conv, reference_conv_backward
from fd import assert_layer_gradients
from gradcheck.errors import LayerError
from gradcheck.layers.external import External

FEW = settings(max_examples=examples(6))


@pytest.fixture(scope="module")
def cpp_client(tmp_path_factory) -> Path:
    """conv2d.cpp compiled as the Makefile does, with every warning an error."""
    cxx = require_tool("g++", "c++", install="apt-get install g++, or .ci/install-external-tools")
    binary = tmp_path_factory.mktemp("cppbuild") / "conv2d_cpp"
    build = subprocess.run([cxx, "-O2", "-std=c++17", "-Wall", "-Wextra", "-pedantic", "-Werror",
                            "-o", str(binary), str(EXTERNAL_EXAMPLES / "conv2d.cpp")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return binary


def octave_command(octave: str, variant: str = "correct") -> list[str]:
    call = "conv2d_client" if variant == "correct" else f"conv2d_client('{variant}')"
    return [octave, *OCTAVE_FLAGS, "--path", str(EXTERNAL_EXAMPLES), "--eval", call]


@pytest.fixture(scope="module", params=["octave", "cpp"])
def client(request):
    """(name, command(variant)): how to start each client, 'correct' or 'buggy'."""
    if request.param == "octave":
        octave = request.getfixturevalue("octave")
        return "octave", lambda variant="correct": octave_command(octave, variant)
    binary = str(request.getfixturevalue("cpp_client"))
    return "cpp", lambda variant="correct": [binary] + (["--buggy"] if variant == "buggy" else [])


@st.composite
def conv_setups(draw, min_kernel=1, min_padding=0):
    """Shapes and options of a small convolution whose kernel fits the padded input."""
    padding = draw(st.integers(min_padding, 2))
    smallest = max(1, min_kernel - 2 * padding)
    height, width = draw(st.integers(smallest, 5)), draw(st.integers(smallest, 5))
    kernel = draw(st.integers(min_kernel, min(3, height + 2 * padding, width + 2 * padding)))
    return {"input_shape": (draw(st.integers(1, 2)), height, width),
            "batch": draw(st.integers(1, 3)),
            "options": {"filters": draw(st.integers(1, 3)), "kernel": kernel, "padding": padding},
            "seed": draw(st.integers(0, 9))}


def _run(command, setup):
    """Build the client for setup; forward and backward random data of setup's batch size.
    Returns (x, W, b, grad_out, y, grad_x, grad_W, grad_b), all from the client."""
    layer = External(command, setup["options"])
    try:
        rng = np.random.default_rng(setup["seed"])
        layer.build(setup["input_shape"], rng)
        x = rng.normal(size=(setup["batch"], *setup["input_shape"]))
        y = layer.forward(x)
        grad_out = rng.normal(size=y.shape)
        grad_x = layer.backward(grad_out)
        return (x, layer.params["W"], layer.params["b"], grad_out, y, grad_x,
                layer.grads["W"], layer.grads["b"])
    finally:
        layer.close()


def _assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-11, atol=1e-12, err_msg=what)


@FEW
@given(setup=conv_setups())
def test_client_computes_the_convolution_and_its_gradients(client, setup):
    _, command = client
    x, weights, bias, grad_out, y, grad_x, grad_w, grad_b = _run(command(), setup)
    padding = setup["options"]["padding"]
    _assert_close(y, reference_conv(x, weights, bias, padding), "y")
    expected = reference_conv_backward(x, weights, grad_out, padding)
    for actual, reference, what in zip((grad_x, grad_w, grad_b), expected, ("dx", "dW", "db")):
        _assert_close(actual, reference, what)


def test_one_client_serves_any_batch_size_between_requests(client):
    """The engine stacks perturbed copies: batch sizes change from one request to the next."""
    _, command = client
    layer = External(command(), {"filters": 2, "kernel": 3, "padding": 1})
    try:
        layer.build((2, 4, 3), np.random.default_rng(0))
        weights, bias = layer.params["W"], layer.params["b"]
        for batch, seed in zip((1, 5, 2), range(3)):
            x = np.random.default_rng(seed).normal(size=(batch, 2, 4, 3))
            grad_out = np.random.default_rng(seed + 10).normal(size=(batch, 2, 4, 3))
            _assert_close(layer.forward(x), reference_conv(x, weights, bias, 1),
                          f"y, batch {batch}")
            _assert_close(layer.backward(grad_out),
                          reference_conv_backward(x, weights, grad_out, 1)[0], f"dx, batch {batch}")
    finally:
        layer.close()


@settings(max_examples=examples(3))
@given(setup=conv_setups(min_kernel=2))
def test_client_agrees_with_central_differences(client, setup):
    _, command = client
    layer = External(command(), setup["options"])
    try:
        rng = np.random.default_rng(setup["seed"])
        layer.build(setup["input_shape"], rng)
        assert_layer_gradients(layer, rng.normal(size=(2, *setup["input_shape"])), rng)
    finally:
        layer.close()


# -- the buggy twins: wrong exactly where their bug is, and caught there -----------------------

def _mirror_visible(setup) -> bool:
    """Whether a kernel gradient filed under its mirrored element can differ from the right one:
    not when a 1x1 image meets a 3x3 kernel with padding 1 (one output, which sees the image
    only through the kernel's centre, its own mirror image). No check can see a bug there."""
    shape, options = setup["input_shape"], setup["options"]
    return not (shape[1:] == (1, 1) and options["kernel"] == 2 * options["padding"] + 1)


@FEW
@given(setup=conv_setups(min_kernel=2, min_padding=1))
def test_buggy_twin_is_wrong_in_one_gradient_only(client, setup):
    name, command = client
    x, weights, bias, grad_out, y, grad_x, grad_w, grad_b = _run(command("buggy"), setup)
    padding = setup["options"]["padding"]
    _assert_close(y, reference_conv(x, weights, bias, padding), "y")
    right_x, right_w, right_b = reference_conv_backward(x, weights, grad_out, padding)
    _assert_close(grad_b, right_b, "db")
    if name == "cpp":
        # R3's bug: the gradient of kernel element (u, v) is filed under (K-1-u, K-1-v).
        assume(_mirror_visible(setup))
        _assert_close(grad_x, right_x, "dx")
        _assert_close(grad_w, right_w[:, :, ::-1, ::-1], "dW, mirrored")
        assert not np.allclose(grad_w, right_w)
    else:
        # The padded input's gradient, cropped from 0-based P instead of 1-based P + 1.
        _assert_close(grad_w, right_w, "dW")
        padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        grad_padded = reference_conv_backward(padded, weights, grad_out, 0)[0]
        height, width = x.shape[2:]
        start = padding - 1
        _assert_close(grad_x, grad_padded[:, :, start:start + height, start:start + width],
                      "dx, shifted by one")
        assert not np.allclose(grad_x, right_x)


@FEW
@given(setup=conv_setups(min_kernel=2, min_padding=1))
def test_gradcheck_passes_the_client_and_blames_its_twin_in_the_right_gradient(client, setup):
    name, command = client
    assume(name != "cpp" or _mirror_visible(setup))
    blamed = {"cpp": "W", "octave": "input"}[name]
    for variant in ("correct", "buggy"):
        report = gradcheck.check_layer("external", setup["input_shape"], batch=setup["batch"],
                                       seed=setup["seed"], command=command(variant),
                                       options=setup["options"])
        (layer,) = [layer for layer in report.layers if layer.type == "external"]
        statuses = {check.target: check.status for check in layer.checks}
        if variant == "correct":
            assert report.passed, statuses
        else:
            assert report.root_causes == ["external"]
            assert statuses == {t: "fail" if t == blamed else "pass" for t in ("W", "b", "input")}


SHIPPED = {  # config -> (the external layer's name, its checks' statuses; None: all pass)
    "conv_octave.yaml": ("mconv", None),
    "conv_octave_buggy.yaml": ("mconv", {"W": "pass", "b": "pass", "input": "fail"}),
    "conv_cpp.yaml": ("cppconv", None),
    "conv_cpp_buggy.yaml": ("cppconv", {"W": "fail", "b": "pass", "input": "pass"}),
}


@pytest.mark.parametrize("config", sorted(SHIPPED))
def test_shipped_config_passes_or_blames_its_buggy_layer(request, tmp_path, run_cli, config):
    if "octave" in config:
        request.getfixturevalue("octave")
        path = EXTERNAL_EXAMPLES / config  # in place: Octave finds the .m files beside the YAML
    else:
        shutil.copy2(request.getfixturevalue("cpp_client"), tmp_path / "conv2d_cpp")
        path = tmp_path / config
        shutil.copy(EXTERNAL_EXAMPLES / config, path)
    result = run_cli("check", path, "--format", "json")
    layer_name, statuses = SHIPPED[config]
    assert result.exit_code == (0 if statuses is None else 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    (layer,) = [layer for layer in report["layers"] if layer["name"] == layer_name]
    if statuses is None:
        # Every element of the client's parameters and of the network input was compared.
        assert [c["checked"] for c in layer["checks"]] == [math.prod(c["shape"])
                                                           for c in layer["checks"]]
    else:
        assert report["root_causes"] == [layer_name]
        assert {c["target"]: c["status"] for c in layer["checks"]} == statuses


def test_octave_twin_without_padding_stops_at_its_index_error(octave):
    """With padding 0 the twin's crop starts at index 0, which MATLAB and Octave refuse: the
    error reply is a located user error, not a silent wrong gradient."""
    layer = External(octave_command(octave, "buggy"), {"filters": 1, "kernel": 2})
    try:
        layer.build((1, 3, 3), np.random.default_rng(0))
        layer.forward(np.ones((1, 1, 3, 3)))
        # Octave: "grad_xpad(_,_,0,_): subscripts must be either integers 1 to (2^63)-1 ...".
        with pytest.raises(LayerError, match=r"reported an error: conv2d_client: grad_xpad\(_,_,0"):
            layer.backward(np.ones((1, 1, 2, 2)))
    finally:
        layer.close()


# -- initial weights: the documented generators, the same in every run -------------------------

@pytest.mark.parametrize("seed", [0, 7])
def test_initial_weights_come_from_the_seed_alone(client, seed):
    name, command = client
    # The seed a build request carries is the first draw of the config's generator.
    sent = int(np.random.default_rng(seed).integers(0, 2**31 - 1))
    expected_w, expected_b = initial_weights(name, sent, 3, 2, 2)
    for _ in range(2):  # two children, the same weights
        layer = External(command(), {"filters": 3, "kernel": 2})
        try:
            layer.build((2, 4, 4), np.random.default_rng(seed))
            np.testing.assert_allclose(layer.params["W"], expected_w, rtol=1e-13)
            np.testing.assert_allclose(layer.params["b"], expected_b, rtol=1e-13)
        finally:
            layer.close()


# -- no client process outlives a check -----------------------------------------------------

def _session_members(session: int) -> list[int]:
    """Live processes of the session a child leads (the external layer starts each child in a
    session of its own), so anything the child started is seen too."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            members.append(int(stat.parent.name))
    return members


def test_the_session_scan_sees_a_running_client(client):
    """The check below can fail: a client that is still running is found by _session_members."""
    _, command = client
    layer = External(command(), {"filters": 1})
    layer.build((1, 3, 3), np.random.default_rng(0))
    pid = layer._child.pid
    try:
        assert _session_members(pid) == [pid]
    finally:
        layer.close()
    assert gone(pid) and _session_members(pid) == []


@pytest.mark.parametrize("variant, options, exit_code", [
    ("correct", {"filters": 2, "padding": 1}, 0),
    ("buggy", {"filters": 2, "padding": 1}, 1),
    ("correct", {"kernel": 3}, 2),  # no filters: the client's build answers 'error'
])
def test_no_client_process_outlives_a_check(client, tmp_path, run_cli, variant, options,
                                            exit_code):
    _, command = client
    # sh logs its pid and replaces itself with the client (exec): the pid is the client's.
    wrapped = ["sh", "-c", 'echo $$ >> child.pid; exec "$0" "$@"', *command(variant)]
    path = write_yaml(tmp_path, f"""
input: {{shape: [2, 5, 5], batch: 2}}
layers:
  - {{type: external, name: conv, command: {json.dumps(wrapped)}, options: {json.dumps(options)}}}
  - flatten
loss: mse
""")
    result = run_cli("check", path)
    assert result.exit_code == exit_code, result.stdout + result.stderr
    (pid,) = logged_pids(tmp_path)
    assert gone(pid)
    assert _session_members(pid) == []


