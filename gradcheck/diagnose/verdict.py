"""The differential verdict of the training probe.

Each run ends in one of ``OUTCOMES``: it fits the batch, fails clearly (goes non-finite, diverges,
or makes no progress), or is still improving when its budget runs out (slow). Only a clear failure
of the user's run is an error: a hyper-parameter problem when the reference fits, else a structural
problem or a gradient bug. Slower than the reference but improving is ``info``, with both curves.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.diagnose import advice
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.findings import Finding, ProbeRun, Spread, finding
from gradcheck.diagnose.seeds import not_called

OUTCOMES = ("fit", "slow", "stalled", "diverging", "nonfinite")
FAILED = ("stalled", "diverging", "nonfinite")
GRADIENT_NOTE = "; but the gradient check fails, so every run used a wrong gradient: fix it first"


def excess(run: ProbeRun) -> np.ndarray:
    """The run's losses above the least loss its targets allow (``run.loss_floor``)."""
    return np.maximum(np.asarray(run.losses, dtype=np.float64) - run.loss_floor, 0.0)


def divergence(run: ProbeRun) -> float:
    """The smallest loss / best-so-far ratio over the last ``TREND_CHECKS`` checks (0 when the run
    is too short to tell): TDC calls a run diverging when it is >= ``DIVERGE_FACTOR``."""
    checks = excess(run)[::T.CHECK_PERIOD]
    if len(checks) <= T.TREND_CHECKS:
        return 0.0
    best = np.minimum.accumulate(checks)
    with np.errstate(all="ignore"):
        ratios = checks[-T.TREND_CHECKS:] / best[-T.TREND_CHECKS:]
    return float(np.min(np.where(best[-T.TREND_CHECKS:] > 0, ratios, 1.0)))


def progress(run: ProbeRun) -> float | None:
    """How far the best loss of the second half of the run is below the best of the first half,
    both above the floor (1 - after/before), or None for runs shorter than two checks."""
    losses = excess(run)
    steps = len(losses) - 1
    if steps < 2 * T.CHECK_PERIOD:
        return None
    half = steps // 2
    before, after = float(np.min(losses[:half + 1])), float(np.min(losses[half + 1:]))
    return 1.0 - after / before if before > 0 else 0.0


def classify(run: ProbeRun) -> str:
    """One of ``OUTCOMES`` for a finished run."""
    if run.stopped == "nonfinite":
        return "nonfinite"
    if run.passed:
        return "fit"
    if divergence(run) >= T.DIVERGE_FACTOR:
        return "diverging"
    gained = progress(run)
    return "stalled" if gained is not None and gained < T.PROGRESS_MIN else "slow"


def describe(run: ProbeRun) -> str:
    """How ``run`` ended, in a few words."""
    if run.outcome == "nonfinite":
        return f"NaN/Inf at step {run.nonfinite_step}"
    if run.outcome == "fit":
        return f"fits the batch in {run.steps_run} steps"
    if run.outcome == "diverging":
        return f"the loss climbs to {divergence(run):.3g} x its best"
    reach = f"{run.fit_metric} {run.fit:.3g} after {run.steps_run} steps"
    if run.outcome == "stalled":
        return (f"no progress, the best loss fell {progress(run):.0%} over the last "
                f"{run.steps_run - run.steps_run // 2} steps, {reach}")
    return f"still improving, {reach}"


def curve(run: ProbeRun) -> str:
    """The loss at the start, a quarter, half and three quarters of the way, and the end."""
    n = run.steps_run
    points = sorted({0, n // 4, n // 2, 3 * n // 4, n})
    return "loss " + " -> ".join(f"{run.losses[k]:.3g}" for k in points) + f" over {n} steps"


@dataclasses.dataclass
class SeedVerdict:
    """The verdict at one probe seed: ``kind`` is ``fit``, ``hyperparameter``, ``structural`` or
    ``slow``; ``sentence`` says it in words; ``finding`` is its finding, if any."""

    seed: int
    kind: str
    sentence: str
    finding: Finding | None
    user: ProbeRun


def seed_verdict(seed: int, user: ProbeRun, reference: ProbeRun | None,
                 gradient_ok: bool) -> SeedVerdict:
    """The verdict from the user's run (configured, or the reference when there is no ``train:``)
    and, when it did not fit, the reference run."""
    note = "" if gradient_ok else GRADIENT_NOTE
    mine = user if user.label == "configured" else None
    ref = reference if mine is not None else user
    if user.outcome == "fit":
        fits = "your settings fit" if mine is not None else "the reference fits"
        return SeedVerdict(seed, "fit", f"{fits} one batch in {user.steps_run} steps", None, user)
    if user.outcome in FAILED and mine is not None and ref.outcome == "fit":
        text = ("your settings fail where the reference succeeds, a hyper-parameter problem "
                f"(yours: {describe(mine)}; the reference, adam lr {ref.lr:g} without weight "
                f"decay, fits the batch in {ref.steps_run} steps){note}")
        return SeedVerdict(seed, "hyperparameter", text, finding(
            "probe", "hyperparameter-problem", "error", "train", mine.fit,
            f"{mine.fit_metric} >= {_fit_threshold(mine)}", text,
            "fix the flagged settings (lr, momentum, weight_decay), or start from the reference "
            f"settings, {advice.train_block(optimizer='adam', lr=ref.lr)}"), user)
    if user.outcome in FAILED:
        failing = "both your settings and the reference fail" if mine is not None else (
            "the reference fails")
        runs = (f"yours: {describe(mine)}; " if mine is not None else "") + (
            f"the reference: {describe(ref)}")
        text = (f"{failing} to fit one batch of {T.PROBE_BATCH} or fewer samples, a structural "
                f"problem or a gradient bug -- see the gradient check ({runs}){note}")
        return SeedVerdict(seed, "structural", text, finding(
            "probe", "cannot-fit-one-batch", "error", None, user.fit,
            f"{user.fit_metric} >= {_fit_threshold(user)}", text,
            "fix the errors above first (gradient, loss/output, collapse); no optimizer setting "
            "fixes them"), user)
    if mine is not None:
        text = (f"your settings improve but fit more slowly than the reference: yours "
                f"{curve(mine)} ({describe(mine)}); the reference {curve(ref)} ({describe(ref)})")
        fix = ("nothing is broken; give training more steps, or start from the reference "
               f"settings, {advice.train_block(optimizer='adam', lr=ref.lr)}")
    else:
        text = (f"the reference improves but has not fitted one batch in {ref.steps_run} steps: "
                f"{curve(ref)} ({describe(ref)})")
        fix = ("nothing is broken; this network needs more steps than the probe's budget to fit "
               "one batch with adam")
    return SeedVerdict(seed, "slow", text, finding(
        "probe", "slow-fit", "info", "train" if mine is not None else None, user.fit,
        f"{user.fit_metric} >= {_fit_threshold(user)}", text, fix), user)


def conclude(verdicts: list[SeedVerdict], seeds: tuple[int, ...]) -> tuple[list[Finding], str]:
    """The verdict findings and sentence over all probe seeds.

    The result is how the user's run ends, so an error needs it to fail clearly at every probe
    seed; the reference only explains why: a hyper-parameter problem when it fits at every seed,
    else a structural problem or a gradient bug. Failing or slow at only some seeds is ``info``.
    """
    found = []
    for kinds in (("hyperparameter", "structural"), ("slow",)):
        hits = [v for v in verdicts if v.kind in kinds]
        if not hits:
            continue
        chosen = next((v for v in hits if v.kind == "structural"), hits[0])
        fired = tuple(any(v.seed == s for v in hits) for s in seeds)
        fits = {v.seed: v.user.fit for v in verdicts}
        spread = Spread(seeds, fired, tuple(fits.get(s) if hit else None
                                            for s, hit in zip(seeds, fired)))
        f = dataclasses.replace(chosen.finding, spread=spread)
        mixed = {v.kind for v in hits} == {"hyperparameter", "structural"}
        if mixed:
            fitted = [str(v.seed) for v in hits if v.kind == "hyperparameter"]
            f = dataclasses.replace(f, cause=f"{f.cause}; the reference fits only at seed "
                                    f"{', '.join(fitted)}")
        found.append(f if all(fired) else not_called(f, spread))
    return found, _sentence(verdicts, seeds)


def _sentence(verdicts: list[SeedVerdict], seeds: tuple[int, ...]) -> str:
    if len(verdicts) == len(seeds) and len({v.kind for v in verdicts}) == 1:
        if verdicts[0].kind == "fit":
            steps = sorted(v.user.steps_run for v in verdicts)
            span = f"{steps[0]}" if steps[0] == steps[-1] else f"{steps[0]}-{steps[-1]}"
            fits = ("your settings fit" if verdicts[0].user.label == "configured" else
                    "the reference fits")
            return f"{fits} one batch in {span} steps at all {len(seeds)} probe seeds"
        return f"{verdicts[0].sentence} (the same at all {len(seeds)} probe seeds)"
    parts = [f"at seed {v.seed}, {v.sentence}" for v in verdicts]
    missing = [str(s) for s in seeds if s not in {v.seed for v in verdicts}]
    if missing:
        parts.append(f"at seed {', '.join(missing)} the probe could not run")
    return "the probe seeds disagree, so no verdict is called: " + "; ".join(parts)


def _fit_threshold(run: ProbeRun) -> float:
    return T.FIT_ACCURACY if run.fit_metric == "accuracy" else T.FIT_R2
