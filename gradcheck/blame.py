"""Who is to blame: root causes, inherited failures, and failures no single unit explains.

A unit is a root cause exactly when it fails on its own: its backward disagrees with finite
differences of its own objective (under the upstream gradient the network hands it, or a random
one when it is checked alone), or it breaks the contract before any comparison (a forward that
is not deterministic, a backward that is not idempotent). Nothing else makes a root cause: a
unit whose own checks pass is never blamed.

A unit upstream of a root cause whose input gradient is wrong receives a wrong gradient: its own
check still passes (its backward is right for what it received) while its gradients, checked
through the whole network, fail. Those failures are inherited from the nearest root cause
downstream. When the network's gradient fails end to end but no unit fails on its own, the
failure is ``unlocalised``: an interaction between units (``smallest_failing_span``) or a
numerical problem of the whole chain.
"""

from __future__ import annotations

from gradcheck.engine.local import slot_of
from gradcheck.report import LayerReport


def fails_alone(layer: LayerReport) -> bool:
    """Whether the unit fails on its own (see the module docstring)."""
    own = any(c.own_failed for c in layer.checks)
    return bool(layer.problems) or own or layer.isolated == "fail"


def input_gradient_wrong(layer: LayerReport) -> bool:
    """Whether a gradient this unit hands upstream is wrong (an input target fails on its own,
    or it is not trustworthy at all)."""
    return bool(layer.problems) or any(
        slot_of(c.target) is not None and c.own_failed
        for c in [*layer.checks, *layer.isolated_checks])


def upstream_of_wrong_gradient(network, layers: list[LayerReport]) -> list[int]:
    """Indices of units that receive a wrong gradient: the ancestors of a unit whose input
    gradient is wrong."""
    found: set[int] = set()
    for k, layer in enumerate(layers):
        if input_gradient_wrong(layer):
            found.update(network.ancestors(k))
    return sorted(found)


def assign_blame(network, layers: list[LayerReport]) -> bool:
    """Mark root causes and inherited failures; return True when something fails that no unit
    explains (unlocalised)."""
    unexplained = False
    for k in range(len(layers) - 1, -1, -1):
        layer = layers[k]
        layer.root_cause, layer.inherited_from = False, None
        if fails_alone(layer):
            layer.root_cause = True
        elif layer.status == "fail":
            cause = next((d.name for j, d in enumerate(layers)
                          if d.root_cause and k in network.ancestors(j)), None)
            if cause is None:
                unexplained = True
            layer.inherited_from = cause
    return unexplained
