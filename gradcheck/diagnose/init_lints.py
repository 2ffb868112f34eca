"""Initialisation lints: each parameter judged by the role it plays (``Traits.roles``).

A weight (an output element mixes several of its entries) must be random, zero-centred and scaled
to its fan-in; a bias should start at zero (except in an output layer, one the loss reads through
parameter-free layers only); a scale (batchnorm's gamma, a learned gain) starts at
one by design and is not judged. The role is measured, never read from a name or a shape, so a
plugin's ``(C, 1, 1)`` bias is a bias and its gain initialised at 1 is not told to be zero. The
scale is judged by the layer's forward gain (``behaviour.layer_gain``), never by a fan-in read
off its backward, which may be the bug, and only for a layer affine in its inputs (a dense, a
conv): an LSTM's gates or an attention's softmax shrink the gain by design. These depend on the
initial draw: every probe seed runs them.
"""

from __future__ import annotations

import numpy as np

from gradcheck.diagnose import advice, graph
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.behaviour import Traits, constant_makes_units_alike, layer_gain
from gradcheck.diagnose.findings import Finding, finding
from gradcheck.diagnose.inputs import Slots
from gradcheck.diagnose.measure import measured
from gradcheck.network import Network


def init_lints(network: Network, traits: list[Traits], rng,
               vocab: dict[str, int]) -> list[Finding]:
    """Every init finding for ``network``'s current parameters (``traits`` from any seed: the
    roles are structural; ``vocab``: the vocabulary of each integer input)."""
    found = []
    outputs = graph.output_layers(network, {k for k, t in enumerate(traits) if t.parametric})
    for k, t in enumerate(traits):
        layer = network.layers[k]
        slots = Slots.of(network, k, vocab)
        # A parameter shared from another layer (share:) is judged where it is owned.
        roles = {name: role for name, role in t.roles.items() if (k, name) not in network.shared}
        weights = [name for name, role in roles.items() if role == "weight"]
        for pname, role in roles.items():
            w = np.asarray(layer.params[pname], dtype=np.float64)
            label = f"{t.name}.{pname}"
            if role == "weight" and w.size > 1:
                # The forward gain is the layer's, so it is judged once, on its first weight; and
                # only for a layer affine in its inputs, whose gain He's 2 and LeCun's 1 are the
                # references for (a gated cell's or an attention's products have none).
                gain = (layer_gain(layer, slots, rng) if pname == weights[0] and t.affine
                        else None)
                alike = (constant_makes_units_alike(layer, pname, slots, rng)
                         if _constant(w) else None)
                found += _weight(layer, t, label, w, gain, advice.scheme_after(network, k, traits),
                                 t.init_options.get(pname), alike is not False)
            elif role == "bias" and np.any(w) and k not in outputs:
                found.append(finding(
                    "lint", "init-bias", "info", t.name, float(np.abs(w).max()), "0",
                    f"{label} shifts {t.name}'s output whatever the input (a bias) and starts "
                    "non-zero", f"{advice.zero_bias(layer, label, t.init_options.get(pname))}, "
                    "or to the target mean in the output layer"))
    return found


def _constant(w: np.ndarray) -> bool:
    return float(w.std()) <= T.INIT_CONSTANT_RTOL * max(abs(float(w.mean())), 1e-12)


def _weight(layer, t: Traits, label: str, w: np.ndarray, gain: float | None, scheme: str,
            option: str | None, units_alike: bool) -> list[Finding]:
    """Findings on weight ``label``; ``units_alike``: being constant makes the layer's units
    compute the same thing (measured; True when it could not be)."""
    mean, std = float(w.mean()), float(w.std())
    draw = advice.weight_init(layer, label, scheme, option)
    if _constant(w):
        if not units_alike:
            return []  # constant by design (a zero bias inside a product): no symmetry to break
        return [finding("lint", "init-constant", "error", t.name, std, "std > 0",
                        f"every entry of {label} starts at {mean:.3g}; all units compute the same "
                        "thing and receive the same gradient, so they never differentiate",
                        f"initialise {label} randomly, {draw}")]
    found = []
    # He init keeps the mean square of what flows through at 2 x its input's, LeCun at 1 x.
    refs = {"he": 2.0, "lecun": 1.0}
    ratio = min(max(gain / ref, ref / gain) for ref in refs.values()) if gain else None
    if ratio is not None:
        measured("INIT_F_CRIT", ratio)
    if ratio is not None and ratio > T.INIT_F_CRIT:
        size = "small" if gain < refs["lecun"] else "large"
        found.append(finding(
            "lint", "init-scale", "warn", t.name, ratio, f"F <= {T.INIT_F_CRIT}",
            f"{label} is too {size}: {t.name} turns standard-normal inputs into outputs of mean "
            f"square {gain:.3g} (fan_in x mean(W^2)), against 2 for He init or 1 for LeCun, so "
            f"activations {'shrink' if size == 'small' else 'grow'} layer after layer",
            f"rescale {label}, {draw}"))
    if w.size >= T.INIT_MIN_SIZE:
        share = float(max(np.mean(w > 0), np.mean(w < 0)))
        measured("INIT_SIGN_SHARE", share)
        if abs(mean) > std or share > T.INIT_SIGN_SHARE:
            found.append(finding(
                "lint", "init-not-centred", "warn", t.name, share,
                f"one-sign share <= {T.INIT_SIGN_SHARE}",
                f"{label} is not zero-centred (mean {mean:.3g}, std {std:.3g}, {share:.0%} of one "
                "sign); every unit sees the same push, outputs grow with the input's mean and the "
                "first updates move all weights together",
                f"draw {label} from a zero-mean distribution, {draw}, not uniform(0, 1)"))
    return found
