"""How far the healthy configs stay from every threshold of ``gradcheck diagnose``.

    .venv/bin/python bench/diagnose_margins.py [--seeds 10]

Diagnoses every healthy config (``configs/*.yaml`` and the scenarios' ``_fixed`` twins) at seeds
0..N-1 (each at its three probe seeds), recording the statistic behind every threshold
(``gradcheck.diagnose.measure``) whether or not it fired. Statistics the diagnosis only computes
on failing runs are measured here on the healthy runs too: the progress and divergence of every
check of every run (what the early exits see), the zeroed-input twin of the user's run and the
reference with its fit projection (both at the config's own seed only). Prints a Markdown table:
per threshold, the worst healthy value at any one probe seed and its margin (threshold / worst
for a ceiling, worst / threshold for a floor; > 1 = never crossed), and the worst value a
finding would need to be called -- crossed at all three probe seeds of one diagnosis -- with
its margin.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from gradcheck.build import build_network
from gradcheck.config import load_config
from gradcheck.diagnose import graph, inputs, probe, run_diagnosis, thresholds as T, verdict
from gradcheck.diagnose.measure import measured, recording, tagged

ROOT = Path(__file__).resolve().parent.parent
# name -> (fires when the statistic is above ("max") or below ("min") the threshold, threshold)
RULES = {
    "INIT_F_CRIT": ("max", T.INIT_F_CRIT), "INIT_SIGN_SHARE": ("max", T.INIT_SIGN_SHARE),
    "DROPOUT_MAX": ("max", T.DROPOUT_MAX), "COLLAPSE_WARN": ("min", T.COLLAPSE_WARN),
    "DEAD_SHARE_WARN": ("max", T.DEAD_SHARE_WARN), "SATURATED_SHARE": ("max", T.SATURATED_SHARE),
    "SCALE_ABNORMAL": ("max", T.SCALE_ABNORMAL), "SCALE_LOW": ("min", T.SCALE_LOW),
    "SCALE_HIGH": ("max", T.SCALE_HIGH), "INIT_LOSS_FACTOR": ("max", T.INIT_LOSS_FACTOR),
    "REDUCTION_GROWTH": ("max", T.REDUCTION_GROWTH), "ZERO_GRAD_SHARE": ("max", T.ZERO_GRAD_SHARE),
    "VANISH_RATIO": ("min", T.VANISH_RATIO), "EXPLODE_RATIO": ("max", T.EXPLODE_RATIO),
    "VANISH_MEAN": ("min", T.VANISH_MEAN), "UPDATE_HIGH": ("max", T.UPDATE_HIGH),
    "UPDATE_LOW": ("min", T.UPDATE_LOW), "REG_DOMINATES": ("max", T.REG_DOMINATES),
    "BATCH_LEAK": ("max", T.BATCH_LEAK), "FROZEN": ("min", T.FROZEN),
    "PROGRESS_MIN": ("min", T.PROGRESS_MIN), "DIVERGE_FACTOR": ("max", T.DIVERGE_FACTOR),
    "INPUT_GAIN": ("max", T.INPUT_GAIN), "PROJECT_SLACK": ("max", T.PROJECT_SLACK),
    "WEIGHT_SHARE": ("max", T.WEIGHT_SHARE), "WEIGHT_HUGE": ("max", T.WEIGHT_HUGE),
    "BRANCH_RATIO": ("max", T.BRANCH_RATIO), "TIME_VANISH_STEP": ("min", T.TIME_VANISH_STEP),
    "TIME_EXPLODE": ("max", T.TIME_EXPLODE), "ATTENTION_ENTROPY": ("min", T.ATTENTION_ENTROPY),
}


def healthy_configs() -> list[Path]:
    return sorted((ROOT / "configs").glob("*.yaml")) + sorted(
        (ROOT / "configs" / "scenarios").glob("*_fixed.yaml"))


def curve_statistics(runs) -> None:
    """What the early exits see at every check of every run (not the zeroed-input twins, which
    do not stop early): its progress from step 50 on (the frozen exit) and its divergence ratio;
    and at the end of a run that did not fit, the stall rule's progress."""
    for run in runs:
        if run.label == "zeroed-input":
            continue
        with tagged(run.seed):
            for step in range(2 * T.CHECK_PERIOD, run.steps_run + 1, T.CHECK_PERIOD):
                part = dataclasses.replace(run, losses=run.losses[:step + 1])
                measured("DIVERGE_FACTOR", verdict.divergence(part))
                if step >= T.STALL_MIN_STEPS:
                    measured("FROZEN", verdict.progress(part))
            gained = verdict.progress(run)
            if gained is not None and not run.passed:
                measured("PROGRESS_MIN", gained)


def yardsticks(spec, network, batch) -> None:
    """At the config's own seed: the zeroed-input twin of the user's run, and the reference with
    the slack its fit projection needed to go on (as the diagnosis runs both only for failing
    networks)."""
    sub = inputs.head(batch, min(inputs.rows(batch), T.PROBE_BATCH))
    x, target = sub.x, sub.target
    user = spec.train or probe.REFERENCE
    params = [p for _, _, p in graph.parameters(network)]
    init = [p.copy() for p in params]

    def train(*args, **how):
        try:
            return probe.train_run(network, *args, **how)
        finally:
            for p, p0 in zip(params, init):
                p[...] = p0

    real = train(x, target, user, "configured", spec.seed, exits=False)
    steps = dataclasses.replace(user, steps=real.run.steps_run)
    zeroed = train(inputs.zeroed(network, sub).x, target, steps, "zeroed-input", spec.seed,
                   until_fit=False, exits=False)
    best_real, best_zero = verdict.excess(real.run).min(), verdict.excess(zeroed.run).min()
    if best_zero > 0:
        measured("INPUT_GAIN", best_real / best_zero)
    reference = train(x, probe._reference_target(network, batch, target), probe.REFERENCE,
                      "reference", spec.seed)
    if reference.run.passed and reference.run.fit_metric == "r2":
        measured("PROJECT_SLACK", slack_needed(reference))


def slack_needed(outcome) -> float:
    """The least ``PROJECT_SLACK`` that would have let this fitting reference run on to its fit."""
    fits, budget, need = outcome.fits, outcome.run.steps, 0.0
    for i in range(T.PROJECT_MIN_STEPS // T.CHECK_PERIOD, len(fits) - 1):
        step, half = i * T.CHECK_PERIOD, i // 2
        gain = max(fits[i] - fits[half], 0.0) / (step - half * T.CHECK_PERIOD) * (budget - step)
        short = T.FIT_R2 - fits[i]
        need = max(need, math.inf if gain <= 0 < short else short / gain if gain else 0.0)
    return need


def worst(pairs, side):
    """The worst value at any one probe seed, and the worst a finding needs to be called: crossed
    at every probe seed of one diagnosis (values without a seed stand alone)."""
    pick = max if side == "max" else min
    single = pick(pairs, key=lambda item: item[2])
    called = []
    for where in {where for where, _, _ in pairs}:
        per_seed = {}
        for w, tag, value in pairs:
            if w == where:
                per_seed[tag] = pick(per_seed.get(tag, value), value)
        untagged = per_seed.pop(None, None)
        candidates = ([min(per_seed.values()) if side == "max" else max(per_seed.values())]
                      if len(per_seed) == 3 else []) + ([untagged] if untagged is not None else [])
        called += [(where, candidate) for candidate in candidates]
    return single, pick(called, key=lambda item: item[1]) if called else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per config (default 10)")
    args = parser.parse_args()
    started = time.perf_counter()
    values: dict[str, list[tuple[str, int | None, float]]] = {}
    loud = []
    for path in healthy_configs():
        for seed in range(args.seeds):
            spec = dataclasses.replace(load_config(path), seed=seed)
            network, batch = build_network(spec)
            with network, recording() as record, np.errstate(all="ignore"):
                d = run_diagnosis(spec, network, batch)
                curve_statistics(d.runs)
                network.set_training(True)
                with tagged(seed):
                    yardsticks(spec, network, batch)
            loud += [f"{path.stem} seed {seed}: {f.id} ({f.severity})" for f in d.findings
                     if f.severity != "info"]
            for name, numbers in record.items():
                values.setdefault(name, []).extend(
                    (f"{path.stem}:{seed}", tag, v) for tag, v in numbers
                    if v is not None and math.isfinite(v))
    print(f"{len(healthy_configs())} healthy configs x seeds 0-{args.seeds - 1} "
          f"({time.perf_counter() - started:.0f} s); warn/error findings: {len(loud)}")
    for line in loud:
        print(f"  {line}")
    print("\n| threshold | fires when | value | worst at one seed | margin | worst at all 3 | "
          "margin |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, (side, threshold) in RULES.items():
        pairs = values.get(name)
        sign = ">" if side == "max" else "<"
        if not pairs:
            print(f"| `{name}` | {sign} | {threshold:g} | - | never measured | - | - |")
            continue
        (where, _, single), called = worst(pairs, side)
        cells = [f"{single:.3g} ({where})", margin(single, threshold, side)]
        cells += ([f"{called[1]:.3g} ({called[0]})", margin(called[1], threshold, side)]
                  if called else ["-", "-"])
        print(f"| `{name}` | {sign} | {threshold:g} | {' | '.join(cells)} |")


def margin(value: float, threshold: float, side: str) -> str:
    ratio = (threshold / value if value > 0 else math.inf) if side == "max" else (
        value / threshold if threshold > 0 else math.inf)
    return f"{ratio:.3g}x"


if __name__ == "__main__":
    main()
