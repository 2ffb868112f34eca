"""Reproduce one failing element without re-running the whole check.

``gradcheck check NET.yaml --replay FILE`` writes a small JSON document with everything needed
to reproduce the worst failing element of the first root cause: the config, seed and dtype, the
layer, target and index, the step, the losses at +h and -h, the analytic and numeric values.
``gradcheck replay FILE`` rebuilds the network from the config (same seed: same weights and
data), perturbs that one element and compares again, so a fix can be tried in seconds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from gradcheck import tolerance
from gradcheck.config import load_config
from gradcheck.analytic import Target, analytic_pass
from gradcheck.engine import Probe
from gradcheck.errors import ConfigError
from gradcheck.build import build_network
from gradcheck.report import Report

REPLAY_VERSION = 1
_REQUIRED = ("config", "layer", "unit", "target", "flat_index", "eps", "rtol", "atol", "analytic",
             "numeric", "loss_plus", "loss_minus")


def replay_record(report: Report, config: str | Path) -> dict | None:
    """The document for the worst failing element of the first root cause (or of the first
    failing layer when no root cause is known); None when nothing fails."""
    layers = [layer for layer in report.layers if layer.root_cause] or \
        [layer for layer in report.layers if layer.status == "fail"]
    for layer in layers:
        failing = [c for c in layer.checks if c.status == "fail" and c.term == "data" and c.replay]
        if not failing:
            continue
        check = max(failing, key=lambda c: c.max_rel_error)
        record = {"replay_version": REPLAY_VERSION, "config": str(Path(config).resolve()),
                  "network": report.network, "seed": report.settings["seed"],
                  "dtype": report.settings["dtype"], "layer": layer.name, "unit": layer.index,
                  "target": check.target, "pattern": check.pattern}
        record.update(check.replay)
        return record
    return None


def write_replay(report: Report, config: str | Path, path: str | Path) -> dict | None:
    """Write ``replay_record`` to ``path`` (sorted keys); returns it, or None (nothing written)."""
    record = replay_record(report, config)
    if record is not None:
        try:
            Path(path).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write the replay file {str(path)!r}: {exc.strerror}.") from None
    return record


@dataclasses.dataclass
class ReplayResult:
    """The recorded element and what it gives now."""

    record: dict
    analytic: float
    numeric: float
    loss_plus: float
    loss_minus: float
    rel_error: float

    @property
    def passed(self) -> bool:
        return self.rel_error <= self.record["rtol"]

    @property
    def reproduced(self) -> bool:
        """The losses at +h/-h are the recorded ones: same network, data and element."""
        return (np.isclose(self.loss_plus, self.record["loss_plus"], rtol=1e-12, atol=0.0) and
                np.isclose(self.loss_minus, self.record["loss_minus"], rtol=1e-12, atol=0.0))


def load_record(path: str | Path) -> dict:
    """Read and validate a replay file."""
    try:
        record = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the replay file {str(path)!r}: {exc.strerror}.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{str(path)!r} is not a replay file: {exc}.",
                          hint="write one with 'gradcheck check NET.yaml --replay FILE'") from None
    missing = [key for key in _REQUIRED if not isinstance(record, dict) or key not in record]
    if missing:
        raise ConfigError(f"{str(path)!r} is not a replay file: missing {', '.join(missing)}.",
                          hint="write one with 'gradcheck check NET.yaml --replay FILE'")
    return record


def replay(path: str | Path) -> ReplayResult:
    """Rebuild the recorded network and re-check the recorded element."""
    record = load_record(path)
    spec = load_config(record["config"])
    network, batch = build_network(spec)
    with network:
        units = network.units
        unit = record["unit"]
        if not 0 <= unit < len(units) or units[unit].name != record["layer"]:
            raise ConfigError(f"the network in {record['config']!r} has no layer {record['layer']!r} "
                              f"at position {unit}: it changed since the replay file was written.")
        network.set_training(True)
        cached = analytic_pass(network, batch)
        target = Target(unit, record["target"])
        if target not in cached.grads:
            raise ConfigError(f"layer {record['layer']!r} has no target {record['target']!r} any more.")
        grad = cached.grads[target].reshape(-1)
        flat = int(record["flat_index"])
        if not 0 <= flat < grad.size:
            raise ConfigError(f"index {record.get('index')} is outside {record['target']!r} now.")
        probe = Probe(network, batch, cached, target)
        found = probe.evaluate(np.array([flat]), float(record["eps"]))
        numeric = float(found.numeric[0])
        analytic = float(grad[flat])
        tol = tolerance.Tolerance(record["eps"], record["rtol"], record["atol"])
        noise = tolerance.round_off(network.dtype, max(abs(found.plus[0]), abs(found.minus[0])),
                                    found.step[0])
        rel = float(tolerance.relative_error(np.array([analytic]), np.array([numeric]), tol,
                                             noise)[0])
        return ReplayResult(record, analytic, numeric, float(found.plus[0]), float(found.minus[0]),
                            rel)
