"""--jobs: the same report to the byte from one process and from several, refusals merged in
plan order, a worker's error raised as one process raises it, no process outliving a check, and
auto picking one process for a check too small to gain."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import gradcheck
from conftest import CONFIGS, TEST_PLUGINS, gone, logged_pids, write_yaml
from gradcheck import footprint, parallel, resources
from gradcheck.engine.local import LocalProbe
from gradcheck.engine.verify import Distrusted, Verifier
from gradcheck.errors import ConfigError
from gradcheck.fanout import AHEAD, Fanout
from gradcheck.handover import SharedValues
from gradcheck.layers.dense import Dense
from gradcheck.render.json import render_json

MISBEHAVING = Path(__file__).resolve().parent / "external" / "misbehaving_client.py"
needs_fork = pytest.mark.skipif(not parallel.can_fork(), reason="worker processes need fork")


def _copy(config: Path, folder: Path, seed: int) -> Path:
    """``config`` written into ``folder`` with its seed set, its plugins named by their paths
    (loaded from where they are: a copy would be another module, registering the same names)."""
    spec = yaml.safe_load(config.read_text())
    spec["seed"] = seed
    if "plugins" in spec:
        spec["plugins"] = [str(config.parent / plugin) for plugin in spec["plugins"]]
    return write_yaml(folder, yaml.safe_dump(spec), config.name)


def _json(run_cli, path: Path, *args) -> tuple[int, str]:
    result = run_cli("check", path, "--format", "json", "--mode", "full", *args)
    assert result.exit_code in (0, 1), result.stdout + result.stderr
    return result.exit_code, result.stdout


# lenet: convolutions with max-pool and ReLU kinks; resnet_block: a graph; plugin: a plugin
# layer; plugin_buggy: a buggy plugin, so failures, patterns and blame come from the workers.
IDENTITY_CONFIGS = ["lenet.yaml", "resnet_block.yaml", "plugin.yaml", "broken/plugin_buggy.yaml"]


@needs_fork
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("config", IDENTITY_CONFIGS)
def test_the_json_report_is_the_same_bytes_whatever_the_number_of_jobs(run_cli, tmp_path, config,
                                                                       seed):
    path = _copy(CONFIGS / config, tmp_path, seed)
    code, one = _json(run_cli, path, "--jobs", "1")
    several = [2, 3] if seed == 0 else [2]
    for jobs in several:
        assert _json(run_cli, path, "--jobs", str(jobs)) == (code, one), f"--jobs {jobs}"
    report = json.loads(one)
    assert "jobs" not in report["settings"]
    if "buggy" in config:
        assert code == 1 and report["root_causes"] and any(
            c.get("pattern") for layer in report["layers"] for c in layer["checks"])


def _liar_net(seed: int) -> dict:
    # A 40 x 40 W: passes of 256, 512 and 832 elements; the shortcut lies from the second on.
    return {"seed": seed, "plugins": [str(TEST_PLUGINS / "liars.py")],
            "input": {"shape": [40], "batch": 3},
            "layers": [{"type": "liar_objective_past_pass", "name": "liar"}], "loss": "mse"}


@needs_fork
@pytest.mark.parametrize("seed", range(10))
def test_a_shortcut_refused_in_a_later_pass_gives_the_same_verdict_with_workers(seed):

    one = gradcheck.check_network(_liar_net(seed), mode="full", jobs=1)
    two = gradcheck.check_network(_liar_net(seed), mode="full", jobs=2)
    assert not one.passed and one.root_causes == ["liar"]
    assert any("'liar': objective_changes disagrees with forward" in n for n in one.notes)
    assert render_json(two) == render_json(one)


@needs_fork
@pytest.mark.parametrize("seed", range(10))
def test_passes_this_process_computes_ahead_make_their_refusals_in_turn(monkeypatch, seed):
    # The worker is slowed, so this process computes most passes ahead of their turn, the
    # liar's refused ones among them: what it refuses there must not reach the passes before
    # them (their notes would come out of order), and the verdict and report stay one process's.

    here, in_worker = Fanout._here, Fanout._in_worker
    refused_ahead = []

    def recorded(fanout, item):
        before = list(fanout.comparison.verifier.refusals)
        outcome = here(fanout, item)
        assert fanout.comparison.verifier.refusals == before, "refused before its turn"
        if item[0] != AHEAD:  # a pass, not the safety net a worker may compute ahead
            refused_ahead.append(bool(outcome.refusals))
        return outcome

    monkeypatch.setattr(Fanout, "_in_worker",
                        lambda fanout, item: time.sleep(0.2) or in_worker(fanout, item))
    monkeypatch.setattr(Fanout, "_here", recorded)
    one = gradcheck.check_network(_liar_net(seed), mode="full", jobs=1)
    two = gradcheck.check_network(_liar_net(seed), mode="full", jobs=2)
    assert render_json(two) == render_json(one) and not two.passed
    assert any(refused_ahead), "no pass computed here refused the liar's shortcut"


# Every liar whose speed-up (or branch state) lies like its backward: with workers, and this
# process computing passes ahead of their turn, none may pass where one process fails it; and
# objective_second_pass (a right backward, a speed-up lying in the second pass only) must pass.
SHORTCUT_LIARS = ["transposed", "past_first", "later_part", "minus_side", "objective_past_first",
                  "objective_input_later", "objective_fake_kinks", "state_fake_kinks",
                  "objective_second_pass"]


@needs_fork
@pytest.mark.parametrize("seed", [0, 1, *(pytest.param(s, marks=pytest.mark.deep)
                                          for s in range(2, 10))])
def test_no_shortcut_liar_passes_with_workers_and_each_report_is_one_processs(seed):

    for liar in SHORTCUT_LIARS:
        spec = {"seed": seed, "plugins": [str(TEST_PLUGINS / "liars.py")],
                "input": {"shape": [40], "batch": 3},  # W 40 x 40: three passes
                "layers": [{"type": "dense", "units": 40},
                           {"type": f"liar_{liar}", "name": "liar"}], "loss": "mse"}
        one = gradcheck.check_network(spec, mode="full", jobs=1)
        two = gradcheck.check_network(spec, mode="full", jobs=2)
        if liar == "objective_second_pass":
            assert two.passed, liar
        else:
            assert not two.passed and "liar" in two.root_causes, liar
        assert render_json(two) == render_json(one), liar


@needs_fork
def test_a_pass_computed_with_a_shortcut_refused_before_it_is_redone_in_the_parent():
    # The first pass (elements 0-255) trusts objective_changes and goes on to the third pass,
    # while the other worker refuses it in the (longer) second: the third pass is redone.
    # Which worker takes the third pass is the scheduler's choice: a few seeds, until one does.
    redone = any(any("redone in this process" in e for e in gradcheck.check_network(
        _liar_net(seed), mode="full", jobs=2).events) for seed in range(10))
    assert redone, "no run redid a pass: the test no longer reaches the merge rule"


def _raising_net(folder: Path, external: bool = False) -> Path:
    layers = [{"type": "raises_late", "name": "late", "units": 200, "after": 300}]
    if external:
        layers.insert(0, {"type": "external", "name": "ext",
                          "command": [sys.executable, str(MISBEHAVING), "ok"]})
    spec = {"plugins": [str(TEST_PLUGINS / "jobs_layers.py")], "input": {"shape": [3],
            "batch": 2}, "layers": layers, "loss": "mse"}
    return write_yaml(folder, yaml.safe_dump(spec))


def _no_new_children(before: set[int]) -> bool:
    """Whether every process of this one that was not in ``before`` has ended: a worker that
    finished has closed its units and is exiting when the check returns (``Workers.close`` does
    not wait for the system to take it down)."""
    return all(gone(pid) for pid in _children() - before)


def _children() -> set[int]:
    """The live (not zombie) processes whose parent is this one."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


@needs_fork
@pytest.mark.parametrize("external", [False, True])
def test_a_worker_error_is_the_error_of_one_process_and_leaves_no_process(run_cli, tmp_path,
                                                                         external):
    path = _raising_net(tmp_path, external)
    before = _children()
    one = run_cli("check", path, "--mode", "full", "--jobs", "1")
    two = run_cli("check", path, "--mode", "full", "--jobs", "2")
    assert one.exit_code == two.exit_code == 2
    assert "W element past 300 perturbed" in one.stderr and two.stderr == one.stderr
    assert _no_new_children(before)
    if external:
        assert all(gone(pid) for pid in logged_pids(tmp_path))


@needs_fork
def test_a_worker_that_dies_is_a_user_error_naming_what_it_computed_and_leaves_no_process(
        run_cli, tmp_path):
    # A layer whose code kills a worker process (a crashing extension would): one process
    # passes; with workers the check must end with a user error, not a traceback or a hang.
    spec = {"plugins": [str(TEST_PLUGINS / "jobs_layers.py")], "input": {"shape": [3],
            "batch": 2}, "layers": [{"type": "dies_in_worker", "name": "fragile"}], "loss": "mse"}
    path = write_yaml(tmp_path, yaml.safe_dump(spec))
    before = _children()
    assert run_cli("check", path, "--mode", "full", "--jobs", "1").exit_code == 0
    two = run_cli("check", path, "--mode", "full", "--jobs", "2")
    assert two.exit_code == 2 and "Traceback" not in two.stderr
    assert "a --jobs worker process ended unexpectedly (exit status 7)" in two.stderr
    # The worker dies on the first item it is sent: the safety net or a pass of W.
    assert ("layer 'fragile' (dies_in_worker): " in two.stderr and "while evaluating W elements"
            in two.stderr) or "while computing the end-to-end safety net" in two.stderr
    assert "Hint: run with --jobs 1" in two.stderr
    assert _no_new_children(before)


def test_a_dead_worker_is_reported_with_the_layer_target_and_elements_it_was_evaluating():

    unit = Dense(units=3)
    unit.name = "fc2"
    plan = [(0, "W", np.arange(600)), (0, "input", np.arange(40))]
    fanout = Fanout(plan, 1, None, None, lambda t: True, units=[unit])
    error = fanout._died(parallel.WorkerDied("killed by signal SIGSEGV", (0, slice(256, 600))))
    assert error.message.startswith("layer 'fc2' (dense): a --jobs worker process ended "
                                    "unexpectedly (killed by signal SIGSEGV) while evaluating W "
                                    "elements 256-599 of those selected; ")
    assert "--jobs 1" in error.hint
    ahead = fanout._died(parallel.WorkerDied("exit status 7", (AHEAD, None)))
    assert "while computing the end-to-end safety net" in ahead.message
    idle = fanout._died(parallel.WorkerDied("exit status 1"))
    assert "before it computed anything" in idle.message


def _external_net(folder: Path) -> Path:
    spec = {"input": {"shape": [3], "batch": 2}, "layers": [
        {"type": "external", "name": "ext", "command": [sys.executable, str(MISBEHAVING), "ok"]},
        {"type": "dense", "name": "fc", "units": 300}], "loss": "mse"}
    return write_yaml(folder, yaml.safe_dump(spec))


@needs_fork
def test_an_external_layer_gets_a_child_per_worker_and_none_outlives_the_check(run_cli, tmp_path):
    path = _external_net(tmp_path)
    before = _children()
    code, one = _json(run_cli, path, "--jobs", "1")
    assert len(logged_pids(tmp_path)) == 1
    assert _json(run_cli, path, "--jobs", "3") == (code, one) and code == 0
    pids = logged_pids(tmp_path)
    # --jobs 3: the check's own process and two workers, each with a child of its own.
    assert len(pids) == 1 + 1 + 2, "one child for each check's own process, one per worker"
    assert all(gone(pid) for pid in pids) and _no_new_children(before)


@needs_fork
def test_a_deadline_stops_the_workers_keeps_a_prefix_and_leaves_no_process(tmp_path):
    path = _external_net(tmp_path)
    spec = yaml.safe_load(path.read_text())
    # 2,000 input elements of the external layer, each a round trip to its child: seconds.
    spec["input"]["shape"] = [1000]
    spec["layers"][1]["units"] = 30
    write_yaml(tmp_path, yaml.safe_dump(spec))
    before = _children()
    report = gradcheck.check_network(path, mode="full", jobs=2, max_seconds=0.5)
    assert report.verdict == "incomplete" and not report.complete
    checks = [c for layer in report.layers for c in layer.checks]
    whole = [c.checked == int(np.prod(c.shape)) for c in checks]
    # What was compared is a prefix of the plan: whole targets, at most one in part, then none.
    cut = whole.index(False)
    assert all(c.checked == 0 for c in checks[cut + 1:])
    assert all(gone(pid) for pid in logged_pids(tmp_path)) and _no_new_children(before)


def test_auto_keeps_a_tiny_check_in_one_process_and_says_so_under_v(run_cli, tmp_path):
    path = write_yaml(tmp_path, "input: {shape: [3], batch: 2}\nlayers: [{type: dense, "
                      "units: 2}]\nloss: mse\n")
    result = run_cli("check", path, "-v", "--jobs", "auto")
    assert result.exit_code == 0
    if parallel.can_fork() and parallel.available_cores() > 1:
        assert "jobs: 1 (auto), the comparison took" in result.stderr
    result = run_cli("check", path, "-v", env={"GRADCHECK_JOBS": "auto"})
    assert "jobs: 1 (auto)" in result.stderr


def test_without_fork_the_check_runs_in_one_process_and_says_so(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "can_fork", lambda: False)
    started = []
    monkeypatch.setattr(parallel, "Workers", lambda *a, **k: started.append(a))
    path = write_yaml(tmp_path, "input: {shape: [30], batch: 2}\nlayers: [{type: dense, "
                      "units: 30}]\nloss: mse\n")
    result = run_cli("check", path, "-v", "--jobs", "4", "--mode", "full")
    assert result.exit_code == 0 and not started
    assert "jobs: 1, this system cannot fork worker processes" in result.stderr


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "two", None])
def test_a_bad_jobs_value_is_a_config_error_naming_it(value):
    if value is None:  # None means "not given": the default, one process
        assert gradcheck.check_layer("dense", (3,), units=2, jobs=None).passed
        return
    with pytest.raises(ConfigError) as info:
        gradcheck.check_layer("dense", (3,), units=2, jobs=value)
    assert info.value.path == "jobs"


def test_a_bad_jobs_option_exits_2_naming_it(run_cli, tmp_path):
    path = write_yaml(tmp_path, "input: {shape: [3], batch: 2}\nlayers: [{type: dense, "
                      "units: 2}]\nloss: mse\n")
    result = run_cli("check", path, "--jobs", "0")
    assert result.exit_code == 2 and "jobs" in result.stderr


def test_verification_positions_depend_on_the_pass_alone():
    verifier = Verifier(np.float64, 1e-5, seed=3)
    first = verifier.positions(256, "fc.W", 512)
    verifier.positions(100, "fc.b", 0)  # another pass in between changes nothing
    assert np.array_equal(verifier.positions(256, "fc.W", 512), first)
    again = Verifier(np.float64, 1e-5, seed=3).positions(256, "fc.W", 512)
    assert np.array_equal(again, first)
    others = [verifier.positions(256, "fc.W", 768), verifier.positions(256, "fc.b", 512),
              Verifier(np.float64, 1e-5, seed=4).positions(256, "fc.W", 512)]
    assert all(not np.array_equal(o, first) for o in others)
    # Spread: one in each of 8 equal strata of the pass.
    assert list(first // 32) == list(range(8))


@needs_fork
def test_a_worker_computes_the_safety_net_ahead_and_the_parent_uses_it(monkeypatch):
    import gradcheck.conclude

    calls = []
    original = gradcheck.conclude.safety_net

    def counted(*args, **kwargs):
        calls.append(os.getpid())  # a worker's append lands in its own copy of the list
        return original(*args, **kwargs)

    monkeypatch.setattr(gradcheck.conclude, "safety_net", counted)
    config = _liar_net(0) | {"layers": [{"type": "dense", "units": 40}]}
    one = gradcheck.check_network(config, mode="full", jobs=1)
    assert calls == [os.getpid()] and one.end_to_end["directions"] > 0
    two = gradcheck.check_network(config, mode="full", jobs=2)
    assert calls == [os.getpid()], "the parent computed the safety net again"
    assert two.end_to_end == one.end_to_end


@needs_fork
def test_without_the_redo_a_worker_would_compute_with_a_refused_shortcut(monkeypatch):
    """The merge rule is what makes the report equal: switched off, a third pass computed
    with a shortcut the second pass refused gives other bits than forward."""

    def config(seed):
        return _liar_net(seed) | {"layers": [{"type": "liar_objective_second_pass",
                                              "name": "liar"}]}

    expected = {seed: render_json(gradcheck.check_network(config(seed), mode="full", jobs=1))
                for seed in range(10)}
    assert all(json.loads(one)["passed"] for one in expected.values())
    for seed in range(10):
        assert render_json(gradcheck.check_network(config(seed), mode="full",
                                                   jobs=2)) == expected[seed]
    monkeypatch.setattr(Fanout, "_merge", _merge_without_redo)
    differs = any(render_json(gradcheck.check_network(config(seed), mode="full", jobs=2))
                  != expected[seed] for seed in range(10))
    assert differs, "no run differed: the test no longer shows what the redo is for"


def _merge_without_redo(self, probe, outcome, indices, steps):
    for method, message, quiet in outcome.refusals:
        self.comparison.verifier.refuse(probe.unit, Distrusted(method, message, quiet))
    return self.values(probe, outcome, indices, steps)


def test_fewer_processes_when_each_workers_copies_would_not_fit_in_memory():
    # Forked workers share the network, but each holds its own working copies: with a budget
    # that holds the check and one worker's copies more, 4 jobs run as 2, say why under -v,
    # and the report is one process's.

    estimate = footprint.Estimate("full", 100 * 2**20, 10 * 2**20, 50 * 2**20, "x", 40 * 2**20)
    extra = 2**20
    for room, expected in [(0, 1), (40 * 2**20, 1), (41 * 2**20, 2), (82 * 2**20, 3),
                           (10**12, 4)]:
        fit = resources.Fit({"full": estimate}, estimate.total + room)
        count, why = fit.processes("full", 4, extra)
        assert count == expected and (why is None) == (expected == 4), (room, count, why)
    assert "about 41 MB" in resources.Fit({"full": estimate}, estimate.total).processes(
        "full", 2, extra)[1]

    config = {"seed": 0, "input": {"shape": [1, 12, 12], "batch": 4},
              "layers": [{"type": "conv2d", "filters": 4, "kernel": 3}, "relu", "flatten",
                         {"type": "dense", "units": 5}], "loss": "cross_entropy"}
    one = gradcheck.check_network(config, mode="full", jobs=1)
    if not parallel.can_fork():
        return
    real = resources.Fit.processes

    def tight(self, mode, wanted, extra=0):  # the budget of exactly two processes
        each = self.estimates[mode].passing_working + extra
        squeezed = resources.Fit(self.estimates, self.estimates[mode].total + each)
        return real(squeezed, mode, wanted, extra)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resources.Fit, "processes", tight)
        four = gradcheck.check_network(config, mode="full", jobs=4)
    said = [e for e in four.events if e.startswith("jobs:")]
    assert said[0].startswith("jobs: at most 2 process(es), memory: each worker holds its own")
    assert said[1].startswith("jobs: 2 processes, this one and 1 worker(s)")
    assert render_json(four) == render_json(one)


@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=needs_fork)])
def test_a_check_frees_its_machinery_without_the_garbage_collector(jobs):
    # Kept alive by a reference cycle, the comparison's objects (probes with their copies of
    # the batch, the results) wait for the collector's next full collection, which a process
    # running check after check (a test suite) may not run for dozens of checks: a 2-job check
    # of bench N3 left 4 MiB each, and the next check faulted every page of its own in afresh.
    machinery = (Fanout, parallel.Workers, SharedValues, LocalProbe)
    config = {"input": {"shape": [1, 8, 8], "batch": 2}, "seed": 0, "loss": "mse",
              "layers": [{"type": "conv2d", "filters": 2, "kernel": 3}, "relu", "flatten",
                         {"type": "dense", "units": 3}]}
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        report = gradcheck.check_network(config, mode="full", jobs=jobs)
        left = sorted({type(obj).__name__ for obj in gc.get_objects()
                       if isinstance(obj, machinery)})
    finally:
        if enabled:
            gc.enable()
    assert report.passed
    assert any("jobs: 2 processes" in event for event in report.events) == (jobs == 2)
    assert left == []
