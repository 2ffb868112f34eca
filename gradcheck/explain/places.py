"""Fingerprints in the places: where the failing elements are, and where they are not.

"Errors only in X" says two things: the errors lie in X, and the rest is right. The second rests
only on *informative* elements outside X (compared, not both exactly 0). A region claim is made
when those would be unlikely to all pass if errors were spread over them as thickly as inside X:
(1 - p)^m <= CHANCE, p being the failing share inside X and m the informative elements outside.
It speaks of the whole tensor only when every element was checked and every index outside X
showed evidence; otherwise it speaks of the compared elements.
"""

from __future__ import annotations

import numpy as np

from gradcheck.explain.axes import BATCH, axis_note, is_generic, noun
from gradcheck.explain.evidence import Mismatch, Pattern, index_list

CHANCE = 1e-3
# Bands at an edge at most this wide; wider ones are ranges.
BAND_MAX = 3
# A band or range wider than one index must be mostly wrong (at least this share failing);
# whole slices must be wrong almost throughout.
DENSE_SHARE, WHOLE_SHARE = 0.5, 0.9
# "A few isolated elements": at most this many, or this share of the informative ones.
FEW_ELEMENTS, FEW_SHARE = 3, 0.05
# ... with at least this many informative passing elements per failing one around them; the
# first few are listed.
ISOLATED_CONTEXT, ISOLATED_SHOWN = 4, 5


def _per_index(mask: np.ndarray, axis: int) -> np.ndarray:
    """Counts of ``mask`` per index along ``axis``."""
    return np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).sum(axis=1)


def _region(shape: tuple[int, ...], axis: int, picked: np.ndarray) -> np.ndarray:
    """The mask of the indices ``picked`` (bool, per index) along ``axis``."""
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(picked.reshape(view), shape)


def _claim(m: Mismatch, region: np.ndarray, where: str, unknown: str = "") -> str | None:
    """The claim "errors only in <where>", or None: the failing elements must all lie in
    ``region``, and the informative elements outside it must make that unlikely by chance.
    ``unknown`` names the indices outside it that showed no evidence; with those, or with
    elements not checked, the claim is worded as about the compared elements."""
    if np.any(m.failing & ~region):
        return None
    inside = int((m.informative & region).sum())
    outside = int((m.informative & ~region).sum())
    share = m.evidence.failing / max(inside, 1)
    if outside == 0 or (1.0 - share) ** outside > CHANCE:
        return None
    if m.evidence.complete and not unknown:
        return f"errors only in {where}"
    tail = f"; {unknown} showed no evidence (not compared, or uninformative)" if unknown else ""
    return f"the failing elements all lie in {where}{tail}"


def _dense(m: Mismatch, region: np.ndarray, share: float) -> bool:
    return m.evidence.failing >= share * int((m.informative & region).sum())


def _axis_state(m: Mismatch, axis: int):
    """Per index along ``axis``: whether any element fails, and whether it shows evidence."""
    return _per_index(m.failing, axis) > 0, _per_index(m.informative, axis) > 0


def _unknown(name: str, count: int) -> str:
    return f"{count} other {noun(name, count)}" if count else ""


def some_samples(m: Mismatch) -> Pattern | None:
    if not m.names or m.names[0] != BATCH or m.analytic.shape[0] < 2:
        return None
    bad, seen = _axis_state(m, 0)
    if not (seen & ~bad).any():
        return None
    size = m.analytic.shape[0]
    idx = np.flatnonzero(bad)
    where = f"{noun(BATCH, len(idx))} {index_list(idx)} of {size}"
    claim = _claim(m, _region(m.analytic.shape, 0, bad), where,
                   _unknown(BATCH, int((~seen).sum())))
    if claim is None:
        return None
    return m.pattern("some_samples", claim, "the batch is mishandled (a sample index, or only "
                                            "part of the batch processed)")


def boundary(m: Mismatch) -> Pattern | None:
    """Errors only in the first and/or last k indices of one axis (k <= BAND_MAX; wider than
    one, mostly wrong), else only in a border ring of the last two axes."""
    for axis, name in enumerate(m.names):
        size = m.analytic.shape[axis]
        if name == BATCH or size < 2:
            continue
        bad, seen = _axis_state(m, axis)
        first, last = _run(bad), _run(bad[::-1])
        if first + last != int(bad.sum()) or not (seen & ~bad).any():
            continue  # the errors are not (only) at the ends
        if max(first, last) > BAND_MAX or first + last >= size:
            continue
        region = _region(m.analytic.shape, axis, bad)
        if max(first, last) > 1 and not _dense(m, region, DENSE_SHARE):
            continue
        where = f"{_ends(name, first, last)}{axis_note(name, axis, size)}"
        claim = _claim(m, region, where, _unknown(name, int((~seen).sum())))
        if claim:
            hint = ("a boundary, padding or loop-bound (off-by-one) error" if max(first, last) == 1
                    else f"a padding or window offset {max(first, last)} wide, or a loop that "
                         "starts or stops that many indices early")
            return m.pattern("boundary", claim, hint)
    return _border(m)


def _run(flags: np.ndarray) -> int:
    """How many leading entries of ``flags`` are True."""
    return int(np.argmin(flags)) if not flags.all() else len(flags)


def _ends(name: str, first: int, last: int) -> str:
    """The ends in words: the first row, the last 2 rows, the first and last rows, the first 2
    and last 1 rows."""
    if first and last:
        if first == last == 1:
            return f"the first and last {noun(name, 2)}"
        return f"the first {first} and last {last} {noun(name, 2)}"
    k = first or last
    which = "first" if first else "last"
    return f"the {which} {noun(name, 1)}" if k == 1 else f"the {which} {k} {noun(name, k)}"


def _border(m: Mismatch) -> Pattern | None:
    """Failures only on the outer ring, k wide, of the last two (spatial) axes: padding."""
    if m.analytic.ndim < 3 or BATCH in m.names[-2:]:
        return None
    rows, cols = m.analytic.shape[-2:]
    for width in range(1, BAND_MAX + 1):
        if min(rows, cols) <= 2 * width:
            return None
        ring = np.ones((rows, cols), dtype=bool)
        ring[width:-width, width:-width] = False
        region = np.broadcast_to(ring, m.analytic.shape)
        if np.any(m.failing & ~region) or (width > 1 and not _dense(m, region, DENSE_SHARE)):
            continue
        r, c = m.names[-2:]
        if is_generic(r) or is_generic(c):
            lines = f"indices along axes {m.analytic.ndim - 2} and {m.analytic.ndim - 1}"
        else:
            lines = f"{noun(r, 2)} and {noun(c, 2)}"
        ends = "first/last" if width == 1 else f"first/last {width}"
        claim = _claim(m, region, f"the border ring ({ends} {lines})")
        if claim:
            return m.pattern("boundary", claim, "a padding offset or an edge case of the window "
                                                "loop")
    return None


def axis_range(m: Mismatch) -> Pattern | None:
    """Errors only in one contiguous range of indices along one axis, mostly wrong inside it;
    of several axes, the one with the narrowest range."""
    found = []
    for axis, name in enumerate(m.names):
        size = m.analytic.shape[axis]
        if name == BATCH or size < 2:
            continue
        bad, seen = _axis_state(m, axis)
        idx = np.flatnonzero(bad)
        lo, hi = int(idx[0]), int(idx[-1])
        if hi - lo + 1 != len(idx) or not (seen & ~bad).any():
            continue  # not one unbroken range, or nothing outside it to contrast with
        region = _region(m.analytic.shape, axis, bad)
        if not _dense(m, region, DENSE_SHARE):
            continue
        span = f"{noun(name, 1)} {lo}" if lo == hi else f"{noun(name, 2)} {lo}-{hi}"
        where = f"{span} of {size}{axis_note(name, axis)}"
        claim = _claim(m, region, where, _unknown(name, int((~seen).sum())))
        if claim:
            found.append(((hi - lo + 1) / size, claim, _range_hint(name, lo, hi, size)))
    if not found:
        return None
    _, claim, hint = min(found, key=lambda f: f[0])
    return m.pattern("axis_range", claim, hint)


def _range_hint(name: str, lo: int, hi: int, size: int) -> str:
    if name == "time" and (lo, hi) == (0, size - 2):
        return ("every step but the last: what later steps pass back (the gradient through the "
                "recurrent state) is missing or wrong")
    return ("a loop or slice over the wrong part of this axis, or one block of a fused tensor "
            "computed wrongly (e.g. the Q and K columns of a fused projection, but not V)")


def whole_slices(m: Mismatch) -> Pattern | None:
    """Whole slices along one axis wrong (nearly every informative element in them fails)
    while the other slices are right: rows of an embedding whose ids repeat."""
    for axis, name in enumerate(m.names):
        size = m.analytic.shape[axis]
        if name == BATCH or size < 3:
            continue
        bad, seen = _axis_state(m, axis)
        if bad.sum() < 2 or not (seen & ~bad).any():
            continue
        share = _per_index(m.failing, axis)[bad] / _per_index(m.informative, axis)[bad]
        if share.min() < WHOLE_SHARE:
            continue
        idx = np.flatnonzero(bad)
        where = (f"whole slices at {noun(name, len(idx))} {index_list(idx)} of {size}"
                 f"{axis_note(name, axis)}")
        claim = _claim(m, _region(m.analytic.shape, axis, bad), where,
                       _unknown(name, int((~seen).sum())))
        if claim:
            return m.pattern("whole_slices", claim, "whole slices wrong while the others are "
                             "right: an indexed write that overwrites where it must accumulate "
                             "(repeated ids: grad[ids] = g where np.add.at(grad, ids, g) belongs), "
                             "or a mask that selects the wrong slices")
    return None


def isolated(m: Mismatch) -> Pattern | None:
    count = m.evidence.failing
    informative = int(m.informative.sum())
    if count > max(FEW_ELEMENTS, FEW_SHARE * informative) or \
            informative - count < ISOLATED_CONTEXT * count:
        return None
    where = str([list(map(int, idx)) for idx in np.argwhere(m.failing)[:ISOLATED_SHOWN]])
    if count > ISOLATED_SHOWN:
        where += f" and {count - ISOLATED_SHOWN} more"
    scope = "" if m.evidence.complete else " compared"
    return m.pattern("isolated", f"only {count} isolated{scope} element(s) wrong, at {where}",
                     "a special case in a loop or a mask that misses them")


def widespread(m: Mismatch) -> Pattern:
    claim = ("errors throughout, no simple pattern" if m.evidence.complete else
             "errors spread over the compared elements, no simple pattern")
    return m.pattern("widespread", claim, "no factor, sign, rearrangement or region explains it: "
                                          "the formula itself differs (see the worst elements)")
