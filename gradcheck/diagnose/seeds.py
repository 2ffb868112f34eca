"""Probe seeds: whatever depends on the initial weights or the data is measured at three seeds --
the config's own and two derived from it -- and called only when all three agree.

A finding seen at some seeds but not all is reported as ``info`` with where it was seen: an error
is raised only by a finding that does not depend on the seed (a config lint, a gradient that
disagrees with finite differences) or by one confirmed at every probe seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import numpy as np

from gradcheck.build import build_network
from gradcheck.config import NetworkSpec
from gradcheck.diagnose.findings import SEVERITIES, Finding, Spread
from gradcheck.network import Batch, Network

PROBE_SEEDS = 3
# Derived seeds stay below this, so that a user can paste one into the YAML (seed: ...).
SEED_RANGE = 1_000_000
# Findings about the network as a whole whose layer is only where it is worst or first: they
# agree across seeds whatever layer each seed names.
NETWORK_WIDE = frozenset({
    "nonfinite-forward", "loss-rejects-output", "sample-collapse", "activation-scale",
    "initial-loss", "loss-reduction", "nonfinite-backward", "zero-gradient", "grad-profile",
    "update-ratio", "reg-dominates", "hyperparameter-problem", "cannot-fit-one-batch", "slow-fit",
    "input-independent", "nonfinite-training", "loss-diverging", "loss-stagnating"})
# Ids that name one result with different explanations, which may vary from seed to seed: an
# output stuck at one value for every sample, at the target mean or away from it.
FAMILY = {"collapse-to-mean": "collapse", "collapse-to-constant": "collapse"}


def probe_seeds(seed: int) -> tuple[int, ...]:
    """The config's seed, then ``PROBE_SEEDS - 1`` seeds derived from it (distinct, < 1e6)."""
    seeds = [seed]
    state = np.random.SeedSequence(seed, spawn_key=(9,)).generate_state(4 * PROBE_SEEDS)
    for value in state:
        if len(seeds) == PROBE_SEEDS:
            break
        if int(value) % SEED_RANGE not in seeds:
            seeds.append(int(value) % SEED_RANGE)
    return tuple(seeds)


@contextlib.contextmanager
def at_seed(spec: NetworkSpec, network: Network, batch: Batch,
            seed: int) -> Iterator[tuple[Network, Batch]]:
    """The network and batch the config gives at ``seed``: the caller's own at the config's seed,
    else a fresh build (new initial weights and, unless loaded from files, new data), closed
    after."""
    if seed == spec.seed:
        yield network, batch
        return
    other, other_batch = build_network(dataclasses.replace(spec, seed=seed))
    with other:
        other.set_training(True)
        yield other, other_batch


def agree(per_seed: list[list[Finding]], seeds: tuple[int, ...]) -> list[Finding]:
    """Merge the findings of each probe seed (``per_seed[i]`` at ``seeds[i]``) into one list.

    A finding fired at every seed keeps the mildest severity it had; one fired at only some
    becomes ``info`` and says where. Each carries its ``Spread``; the config seed's instance (or
    the first seed's that fired) supplies the text, and names any other id of its ``FAMILY``
    another seed fired.
    """
    groups: dict[tuple, list[Finding | None]] = {}
    for i, found in enumerate(per_seed):
        for f in found:
            slot = groups.setdefault(_key(f), [None] * len(seeds))
            if slot[i] is None:
                slot[i] = f
    merged = []
    for slot in groups.values():
        fired = tuple(f is not None for f in slot)
        first = next(f for f in slot if f is not None)
        spread = Spread(seeds, fired, tuple(f.value if f is not None else None for f in slot))
        others = sorted({f"{f.id} at seed {seed}" for f, seed in zip(slot, seeds)
                         if f is not None and f.id != first.id})
        if others:
            first = dataclasses.replace(first, cause=f"{first.cause} ({'; '.join(others)})")
        if all(fired):
            mildest = max((f.severity for f in slot), key=SEVERITIES.index)
            merged.append(dataclasses.replace(first, severity=mildest, spread=spread))
        else:
            merged.append(not_called(first, spread))
    return merged


def not_called(f: Finding, spread: Spread) -> Finding:
    """``f`` as ``info``, saying at which probe seeds it was seen (not all: so not called)."""
    where = ", ".join(str(s) for s, hit in zip(spread.seeds, spread.fired) if hit)
    note = (f" (seen at {spread.count} of {len(spread.seeds)} probe seeds, seed {where}; not "
            "called, since the seeds disagree)")
    return dataclasses.replace(f, severity="info", cause=f.cause + note, spread=spread)


def _key(f: Finding) -> tuple:
    return (FAMILY.get(f.id, f.id), f.stage, f.threshold,
            None if f.id in NETWORK_WIDE else f.layer)
