"""Reproduce one failing element without re-running the whole check.

``gradcheck check NET.yaml --replay FILE`` writes a small JSON document with everything needed
to reproduce the worst failing element of the first root cause: the config, seed and dtype, the
layer, target and index, the step, the objective's changes at +h and -h, the analytic and
numeric values, and whether it was compared against its own layer or through the network.
``gradcheck replay FILE`` rebuilds the network from the config (same seed: same weights and
data), perturbs that one element and compares again, so a fix can be tried in seconds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from gradcheck import tolerance
from gradcheck.build import build_network
from gradcheck.config import load_config
from gradcheck.check import upstream_of
from gradcheck.engine.local import LocalProbe, slot_of
from gradcheck.engine.tail import TailProbe
from gradcheck.engine.verify import Verifier
from gradcheck.errors import ConfigError
from gradcheck.report import Report

# Version 2: the step is per element (``h``), the comparison is against the unit's own objective
# or the network's loss (``compared``), and the dtype is applied on replay.
REPLAY_VERSION = 2
_REQUIRED = ("replay_version", "config", "seed", "dtype", "layer", "unit", "target",
             "flat_index", "h", "rtol", "atol", "analytic", "numeric", "loss_plus", "loss_minus",
             "compared")


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
    hint = "write one with 'gradcheck check NET.yaml --replay FILE'"
    try:
        record = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the replay file {str(path)!r}: {exc.strerror}.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{str(path)!r} is not a replay file: {exc}.", hint=hint) from None
    if isinstance(record, dict) and record.get("replay_version") != REPLAY_VERSION:
        raise ConfigError(f"{str(path)!r} is a replay file of version "
                          f"{record.get('replay_version')!r}; this gradcheck reads version "
                          f"{REPLAY_VERSION}.", hint="write it again: " + hint)
    missing = [key for key in _REQUIRED if not isinstance(record, dict) or key not in record]
    if missing:
        raise ConfigError(f"{str(path)!r} is not a replay file: missing {', '.join(missing)}.",
                          hint=hint)
    return record


def replay(path: str | Path) -> ReplayResult:
    """Rebuild the recorded network (same seed and dtype: same weights and data) and compare the
    recorded element again, at the recorded step, the way it was compared."""
    record = load_record(path)
    spec = dataclasses.replace(load_config(record["config"]), seed=int(record["seed"]),
                               dtype=str(record["dtype"]))
    network, batch = build_network(spec)
    with network:
        units = network.units
        k = record["unit"]
        if not 0 <= k < len(units) or units[k].name != record["layer"]:
            raise ConfigError(f"the network in {record['config']!r} has no layer "
                              f"{record['layer']!r} at position {k}: it changed since the replay "
                              "file was written.")
        network.set_training(True)
        clean = network.run(batch)
        name = record["target"]
        slot = slot_of(name)
        known = (slot is not None and slot < len(network.sources[k])) or name in units[k].params
        if not known:
            raise ConfigError(f"layer {record['layer']!r} has no target {name!r} any more.")
        grad = (clean.arg_grads[k][slot] if slot is not None else clean.grads[(k, name)])
        grad = grad.reshape(-1)
        flat = int(record["flat_index"])
        if not 0 <= flat < grad.size:
            raise ConfigError(f"index {record.get('index')} is outside {name!r} now.")
        if record["compared"] == "layer":
            probe = LocalProbe(units[k], clean.args[k], upstream_of(network, clean, batch, k),
                               name, network.dtype,
                               Verifier(network.dtype, record["rtol"], spec.seed),
                               f"{units[k].name}.{name}")
        else:
            probe = TailProbe.for_target(network, clean, batch.target, k, name)
        found = probe.evaluate(np.array([flat]), np.array([float(record["h"])]))
        numeric, analytic = float(found.numeric[0]), float(grad[flat])
        tol = tolerance.Tolerance(float(record["h"]), record["rtol"], record["atol"])
        noise = tolerance.round_off(network.dtype, found.scale, found.step)
        rel = float(tolerance.relative_error(np.array([analytic]), np.array([numeric]), tol,
                                             noise)[0])
        return ReplayResult(record, analytic, numeric, float(found.plus[0]),
                            float(found.minus[0]), rel)
