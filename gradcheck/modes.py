"""Which elements a check compares one by one: ``full``, ``sample`` and ``directional``.

- ``full``: every element of every target: each parameter, the network input and the input of
  every later layer and of the loss, each against its unit's own objective (the upstream
  gradient fixed), so the network's gradient follows by the chain rule.
- ``sample``: N elements per target: the largest-gradient quarter (bugs show first where the
  gradient is large) and the rest stratified over the leading axis (rows of a weight matrix,
  filters of a kernel, samples and channels of an input), so no row or channel is skipped
  wholesale the way a uniform draw can.
- ``directional``: none one by one; random directions through the network instead
  (``gradcheck.directional``).
- ``auto`` resolves to ``full`` when its estimated time fits the budget, else to
  ``sample+directional`` (the check says which).
"""

from __future__ import annotations

import numpy as np

from gradcheck.engine.base import runs


def select_elements(grad: np.ndarray, mode: str, samples: int, rng) -> np.ndarray:
    """Flat indices to compare one by one: all of them (``full``), none (``directional``), or
    ``samples`` of them (``sample``): the largest-|gradient| quarter plus a draw stratified over
    the leading axis (the two leading axes of an input, batch and channel)."""
    size = grad.size
    if mode == "directional":
        return np.arange(0)
    if mode == "full" or size <= samples:
        return np.arange(size)
    n_top = max(1, samples // 4)
    top = _largest(grad.reshape(-1), n_top)
    taken = np.zeros(size, dtype=bool)
    taken[top] = True
    strata = _strata(grad.shape)
    per_stratum = size // strata
    need = samples - n_top
    chosen = []
    # Visit strata in a random order, round-robin, one element each time a stratum comes up.
    counts = np.full(strata, need // strata)
    counts[rng.permutation(strata)[:need % strata]] += 1
    for stratum in np.flatnonzero(counts):
        pool = np.arange(stratum * per_stratum, (stratum + 1) * per_stratum)
        pool = pool[~taken[pool]]
        if len(pool):
            chosen.append(rng.choice(pool, size=min(int(counts[stratum]), len(pool)),
                                     replace=False))
    drawn = np.concatenate(chosen) if chosen else np.arange(0)
    return np.sort(np.concatenate([top, drawn])).astype(np.intp)


def _largest(flat: np.ndarray, n: int) -> np.ndarray:
    """Flat indices of the ``n`` largest |values| (ties broken arbitrarily): the largest of
    each run of elements first, so no array-sized temporary is made."""
    picked = []
    for run in runs(flat.size):
        magnitude = np.abs(flat[run])
        best = np.argpartition(-magnitude, n - 1)[:n] if len(magnitude) > n else \
            np.arange(len(magnitude))
        picked.append((run.start + best, magnitude[best]))
    at, magnitude = (np.concatenate(parts) for parts in zip(*picked))
    return at[np.argpartition(-magnitude, n - 1)[:n]]


def _strata(shape: tuple[int, ...]) -> int:
    if len(shape) >= 3:
        return int(shape[0] * shape[1])  # an input (batch, channels, ...) or a conv kernel
    return int(shape[0]) if len(shape) == 2 else 1
