"""The memory guard counts the engine's working memory: the estimate covers what a check
allocates (tracemalloc), the peak RSS of real checks stays within 1.5x of it, a network that no
check can hold is refused before its parameters are drawn, a mode that does not fit is refused
naming those that do, and auto mode falls back to one that fits."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import gradcheck
from conftest import CONFIGS, ROOT, TEST_PLUGINS, write_yaml
from gradcheck import footprint, resources
from gradcheck.build import build_network
from gradcheck.check import run_check
from gradcheck.config import load_config
from gradcheck.layers.init import parse_init
from gradcheck.resources import MemoryBudget, ResourceError
from gradcheck.settings import CheckSettings, settings_for

WRONG = str(TEST_PLUGINS / "wrong_layers.py")
MB = 2**20


def _dense(n: int, batch: int = 8, layer: str = "dense") -> dict:
    return {"input": {"shape": [n], "batch": batch}, "plugins": [WRONG],
            "layers": [{"type": layer, "units": n, "name": "fc"}], "loss": "mse"}


def _conv() -> dict:
    return {"input": {"shape": [3, 16, 16], "batch": 4}, "layers": [
        {"type": "conv2d", "filters": 8, "kernel": 3, "padding": 1}, "relu", "maxpool2d",
        {"type": "conv2d", "filters": 8, "kernel": 5, "padding": 2}, "batchnorm", "tanh",
        "flatten", {"type": "dense", "units": 10}], "loss": "cross_entropy"}


def bench_network(name: str) -> dict:
    """Network ``name`` of bench/bench.py's NETWORKS, read from its source (the bench imports
    torch-side helpers a test must not need)."""
    tree = ast.parse((ROOT / "bench" / "bench.py").read_text(encoding="utf-8"))
    assigned = {node.targets[0].id: node.value for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    names = {"CONV": ast.literal_eval(assigned["CONV"])}
    networks = eval(compile(ast.Expression(assigned["NETWORKS"]), "bench.py", "eval"),  # noqa: S307
                    {"__builtins__": {}}, names)
    return networks[name]


# -- the estimate covers what a check allocates ----------------------------------------------------

def _traced_check(config, mode: str):
    """The check's allocations (tracemalloc's peak, from before the network is built) and the
    estimate for it without the baseline (what the check itself adds)."""
    tracemalloc.start()
    try:
        spec = load_config(config)
        network, batch = build_network(spec)
        settings = settings_for(spec, mode=mode)
        units = footprint.units_of(network, batch.x.shape[0])
        estimate = footprint.estimate(units, network.dtype.itemsize, mode, settings.samples, 0)
        with network:
            report = run_check(network, batch, settings)
        return tracemalloc.get_traced_memory()[1], estimate, report
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("config, mode, verdict", [
    (CONFIGS / "lenet.yaml", "full", "pass"),
    (_dense(120, 2, "dense_transposed_grad"), "full", "fail"),
    (_dense(300, 8, "dense_transposed_grad"), "sample", "fail"),
    (_dense(300, 4, "dense_transposed_grad"), "directional", "fail"),
    (_conv(), "sample", "pass"),
])
def test_the_estimate_covers_what_the_check_allocates(config, mode, verdict):
    """Never below what is allocated; and, for a failing check (the case the estimate models:
    every layer checked alone), not so far above (measured: 0.4-0.7 of it) that a network which
    fits would be refused. A passing check may use far less: layers whose objective_changes
    serve every target build no copies at all."""
    peak, estimate, report = _traced_check(config, mode)
    assert report.verdict == verdict
    modelled = estimate.network + estimate.working
    assert peak <= modelled, (peak / MB, estimate)
    if verdict == "fail":
        assert modelled / 4 <= peak, (peak / MB, estimate)


def test_a_guard_counting_only_parameters_and_activations_is_caught():
    """The guard this one replaces (3 copies of every parameter, 4 of every activation): the
    comparison above fails it, so it would not go unnoticed."""
    peak, _, _ = _traced_check(_dense(300, 8, "dense_transposed_grad"), "sample")
    params, activations = 300 * 300 + 300, 3 * 8 * 300
    assert peak > (3 * params + 4 * activations) * 8


# -- peak RSS of real checks -----------------------------------------------------------------------

# Runs the CLI in a child and prints the child's peak RSS: RUSAGE_CHILDREN of this fresh
# process holds only that child, whatever the test process ran before.
MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""
ESTIMATE = re.compile(r"memory: an? (\S+) check needs about ([\d.]+) (MB|GB).*; about "
                      r"([\d.]+) (MB|GB) if nothing fails")


def _peak_rss(config, *args, env=None) -> tuple[int, int, str]:
    """Exit code, peak RSS (bytes) and stderr of ``gradcheck check config -v`` in a child."""
    command = [sys.executable, "-c", MEASURE, sys.executable, "-m", "gradcheck", "check",
               str(config), "-v", "--format", "json", "-o", os.devnull, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    code, rss = done.stdout.split()
    return int(code), int(rss), done.stderr


def _estimated(stderr: str) -> tuple[str, float, float]:
    """The mode, the estimate (a check that fails somewhere) and the one for a healthy check."""
    found = ESTIMATE.search(stderr)
    assert found, stderr
    unit = {"GB": 2**30, "MB": MB}
    return (found.group(1), float(found.group(2)) * unit[found.group(3)],
            float(found.group(4)) * unit[found.group(5)])


@pytest.mark.parametrize("config", ["mlp.yaml", "lenet.yaml", "bench N3"])
def test_peak_rss_of_a_full_check_is_within_1_5x_of_the_estimate(tmp_path, config):
    """Nothing is subtracted: the estimate includes what the process holds before the check
    (the interpreter, numpy, gradcheck), measured when the check starts."""
    path = (write_yaml(tmp_path, json.dumps(bench_network("N3"))) if config == "bench N3"
            else CONFIGS / config)
    code, rss, stderr = _peak_rss(path, "--mode", "full")
    mode, estimate, healthy = _estimated(stderr)
    assert code == 0 and mode == "full"
    # A passing check: within 1.5x of the healthy estimate, and never above the guard's.
    assert healthy / 1.5 <= rss <= min(1.5 * healthy, estimate), (rss / MB, healthy / MB)


# -- refusals and fallbacks, in a child with a lowered GRADCHECK_MAX_MEMORY_GB ----------------------

def _run(config, *args, limit_gb: float) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gradcheck", "check", str(config), *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, resources.ENV_BUDGET: str(limit_gb)})
    return done, time.monotonic() - started


def test_a_20000_by_20000_dense_network_is_refused_in_seconds_before_it_is_drawn(tmp_path):
    """Its weights alone are 3.2 GB, and drawing them takes 8-20 s on this machine: the refusal
    comes before the initialiser draws them."""
    path = write_yaml(tmp_path, "input: {shape: [20000], batch: 8}\n"
                                "layers: [{type: dense, units: 20000}]\nloss: mse\n")
    done, took = _run(path, limit_gb=4)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no check of this network fits in memory" in done.stderr
    found = re.search(r"even in (\w+) mode, its cheapest, it needs about ([\d.]+) GB",
                      done.stderr)
    assert found and float(found.group(2)) > 3 * 3.2, done.stderr
    assert "4.0 GB available" in done.stderr and "layers[0]" in done.stderr
    assert took < 10, took


def test_a_mode_that_does_not_fit_is_refused_naming_the_modes_that_do(tmp_path):
    path = write_yaml(tmp_path, json.dumps(_dense(1500)))
    done, _ = _run(path, "--mode", "full", limit_gb=0.5)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(r"needs about \d+ MB in full mode .*, 512 MB available", done.stderr)
    assert "Hint: use --mode directional or sample (about" in done.stderr


def test_auto_mode_falls_back_to_a_mode_that_fits_and_says_why(tmp_path):
    path = write_yaml(tmp_path, json.dumps(_dense(1500)))
    done, _ = _run(path, "--format", "json", limit_gb=0.5)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["settings"]["mode"] == "sample+directional"
    assert report["settings"]["requested_mode"] == "auto"
    assert report["settings"]["resolved_by"] == "memory"
    assert any("a full check would not fit in memory" in w for w in report["warnings"])


@pytest.mark.parametrize("value", ["lots", "0", "-2", "nan", "inf"])
def test_a_budget_that_is_not_a_positive_number_is_refused(tmp_path, value):
    path = write_yaml(tmp_path, "input: {shape: [3]}\nlayers: [relu]\nloss: mse\n")
    done, _ = _run(path, limit_gb=value)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{resources.ENV_BUDGET}={value!r} is not a positive number" in done.stderr


# -- the decisions, with the process's size and the budget fixed ------------------------------------

BASELINE = 100 * MB


def _built(n: int, monkeypatch, budget: float | None = None):
    """A dense n -> n network, its estimate per mode, and the process's size and budget fixed
    so that ``resources.fit`` sees a baseline of BASELINE and a budget of ``budget`` bytes (a
    function of the estimates, given as ``budget(estimates)``)."""
    network, batch = build_network(load_config(_dense(n)))
    units = footprint.units_of(network, batch.x.shape[0])
    estimates = {mode: footprint.estimate(units, 8, mode, 32, BASELINE)
                 for mode in footprint.MODES}
    held = sum(p.nbytes for u in network.units for p in u.params.values()) + batch.x.nbytes \
        + batch.target.nbytes
    monkeypatch.setattr(resources, "resident_bytes", lambda: BASELINE + held)
    limit = budget(estimates) if callable(budget) else budget
    monkeypatch.setattr(resources, "available_bytes", lambda: int(limit))
    return network, batch, estimates


def test_fit_keeps_a_mode_that_fits_and_auto_lets_time_decide(monkeypatch):
    network, batch, _ = _built(50, monkeypatch, 2**40)
    for mode in ("full", "sample", "directional", "auto"):
        settings, plan = resources.fit(network, batch, CheckSettings(mode=mode))
        assert settings.mode == mode and settings.resolved is None
        assert plan.budget == 2**40


def test_fit_resolves_auto_to_the_most_thorough_mode_that_fits(monkeypatch):
    network, batch, estimates = _built(
        1500, monkeypatch, lambda e: (e["sample+directional"].total + e["full"].total) / 2)
    settings, plan = resources.fit(network, batch, CheckSettings())
    assert (settings.resolved, settings.resolved_by) == ("sample+directional", "memory")
    assert plan.describe(settings.effective_mode).startswith(
        "memory: a sample+directional check needs about")
    with pytest.raises(ResourceError, match="in full mode") as refused:
        resources.fit(network, batch, CheckSettings(mode="full"))
    assert "use --mode directional or sample" in refused.value.hint


def test_fit_refuses_when_not_even_directional_fits(monkeypatch):
    network, batch, estimates = _built(1500, monkeypatch,
                                       lambda e: e["directional"].total - 1)
    assert estimates["directional"].total - 1 > BASELINE
    with pytest.raises(ResourceError, match="even in directional mode") as refused:
        resources.fit(network, batch, CheckSettings())
    assert "smaller input.batch" in refused.value.hint
    assert "--mode" not in refused.value.hint


def test_a_built_in_initialiser_is_refused_before_it_draws():
    budget = MemoryBudget(8, budget=resources.resident_bytes() + 64 * MB)
    budget.admit_input("input", (8, 10))
    init = parse_init("he", "init", "dense")
    with budget.watching():
        init(np.random.default_rng(0), (10, 1000), 10, 1000)  # 80 kB: fits
        started = time.monotonic()
        with pytest.raises(ResourceError, match="no check of this network fits in memory"):
            init(np.random.default_rng(0), (10, 10**9), 10, 10**9)  # 80 GB: never allocated
        assert time.monotonic() - started < 1
    init(np.random.default_rng(0), (10, 1000), 10, 1000)  # nothing watches outside a build


def test_a_plugin_drawing_its_own_parameters_is_refused_after_its_build(tmp_path, monkeypatch):
    (tmp_path / "big.py").write_text(
        "import gradcheck\n\n@gradcheck.register_layer('own_draw')\n"
        "class OwnDraw(gradcheck.Layer):\n"
        "    def build(self, input_shape, rng):\n"
        "        self.params['W'] = rng.normal(size=(input_shape[0], 2000))\n"
        "        return (2000,)\n"
        "    def forward(self, x):\n        return x @ self.params['W']\n"
        "    def backward(self, g):\n        return g @ self.params['W'].T\n")
    path = write_yaml(tmp_path, "plugins: [big.py]\ninput: {shape: [2000], batch: 2}\n"
                                "layers: [{type: own_draw, name: mine}, relu]\nloss: mse\n")
    monkeypatch.setattr(resources, "available_bytes",
                        lambda: resources.resident_bytes() + 64 * MB)
    with pytest.raises(ResourceError, match="up to layer 'mine'"):
        build_network(load_config(path))


def test_the_check_reports_its_estimate_under_verbose(run_cli):
    result = run_cli("check", CONFIGS / "mlp.yaml", "-v", "--mode", "sample")
    assert result.exit_code == 0
    size = r"[\d.]+ (MB|GB)"
    assert re.search(rf"memory: a sample check needs about {size} \({size} already in use, "
                     rf"{size} for the network and its clean pass, {size} for the .*\); "
                     rf"{size} available", result.stderr), result.stderr
    assert gradcheck.check_network(CONFIGS / "mlp.yaml", mode="sample").events[-1].startswith(
        "memory:")
