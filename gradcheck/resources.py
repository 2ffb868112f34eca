"""Resource guards: refuse a network that would not fit in memory, before it is killed for it;
and keep the allocator from making a check pay page faults for every temporary array."""

from __future__ import annotations

import ctypes
import os

import numpy as np

from gradcheck.errors import GradcheckError

# Each activation is held several times during a check: the cached clean forward, the copy a
# perturbation works on, the analytic gradient (float64) and the layer's own caches for backward.
ACTIVATION_COPIES = 4
PARAM_COPIES = 3  # the parameter, its analytic gradient and the layer's grads entry
FALLBACK_BUDGET = 4 * 2**30
ENV_BUDGET = "GRADCHECK_MAX_MEMORY_GB"


class ResourceError(GradcheckError):
    """The check would need more memory (or time) than is available."""


def available_bytes() -> int:
    """Half of the memory the OS reports available (the rest is for everything else), or the
    override GRADCHECK_MAX_MEMORY_GB."""
    override = os.environ.get(ENV_BUDGET)
    if override:
        try:
            return int(float(override) * 2**30)
        except ValueError:
            raise ResourceError(f"{ENV_BUDGET}={override!r} is not a number of gigabytes.") from None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return FALLBACK_BUDGET


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


class MemoryBudget:
    """Accumulates the estimated memory of a network as it is built, layer by layer, and stops the
    build as soon as the estimate exceeds the budget (before the next layer allocates)."""

    def __init__(self, batch: int, itemsize: int, budget: int | None = None):
        self.batch = batch
        self.itemsize = max(itemsize, 8)  # gradients are compared in float64
        self.budget = available_bytes() if budget is None else budget
        self.used = 0

    def add_activation(self, per_sample_shape: tuple[int, ...], where: str) -> None:
        size = self.batch * int(np.prod(per_sample_shape, dtype=np.float64))
        self._add(size * self.itemsize * ACTIVATION_COPIES, where)

    def add_params(self, params: dict, where: str) -> None:
        size = sum(int(np.size(p)) for p in params.values())
        self._add(size * self.itemsize * PARAM_COPIES, where)

    def _add(self, nbytes: int, where: str) -> None:
        self.used += nbytes
        if self.used > self.budget:
            raise ResourceError(
                f"the check would need at least {_gib(self.used)} of memory (reached at {where}), "
                f"more than the {_gib(self.budget)} available to it.",
                hint="use a smaller input.batch or smaller layers; "
                     f"{ENV_BUDGET} raises the limit")


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Stacked chunks are capped at 16 MiB (gradcheck.stacking), so their arrays stay below this.
REUSED_BLOCK_BYTES = 32 * 2**20
RETAINED_BYTES = 256 * 2**20


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to serve large arrays from memory it has already mapped.

    A check allocates and frees thousands of multi-MiB numpy temporaries. By default glibc maps
    each of them afresh and returns it to the OS when it is freed, so every first write page
    faults: bench N1's full check takes 0.17 s that way and 0.10 s with freed blocks reused
    (single-threaded, this project's 2-core VM). Process-wide, so the CLI calls it and the library does not; the
    memory kept is at most what the process already used. Returns False (and changes nothing)
    where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, REUSED_BLOCK_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, RETAINED_BYTES))
