"""Fixes that can be pasted into the YAML: an option is named only where it exists.

Convention (``tests/test_diagnose_fixes.py`` holds every fix to it): a fix spells an option as
YAML, ``key: value``; ``key: value on NAME`` puts it on the layer called NAME, and a bare
``train: {lr: 0.001}`` is a config key. A word followed by ": " means an option and nothing else,
so prose in a fix uses commas and semicolons instead. A layer's option is named only when its
class accepts it (its constructor takes it, as the YAML loader requires) and, for an initialiser,
when it is seen to work: a plugin that subclasses dense but draws its own weights in ``build``
accepts ``init:`` and ignores it. Otherwise the fix says what to draw and where, in words.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from gradcheck.config import TrainSpec
from gradcheck.diagnose import graph

# What each initialiser of ``gradcheck.layers.init`` draws, for the fix text.
INIT_FORMULA = {"he": "N(0, 2/fan_in)", "lecun": "N(0, 1/fan_in)"}


def accepts(layer, option: str) -> bool:
    """Whether ``layer``'s class takes ``option`` as a YAML key (a named constructor argument)."""
    try:
        params = inspect.signature(type(layer).__init__).parameters
    except (TypeError, ValueError):
        return False
    return option in params and params[option].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                         inspect.Parameter.KEYWORD_ONLY)


def init_options(layer, options: dict, input_shape, roles: dict[str, str]) -> dict[str, str]:
    """Which YAML option draws each parameter of ``layer``: ``init`` for its weights and
    ``bias_init`` for its bias, where a fresh instance built with that option set to ``ones``
    (and the layer's other options) on ``input_shape`` (a list of shapes for several inputs)
    starts the parameter at one -- no default draws that."""
    wanted = {"init": "weight", "bias_init": "bias"}
    found = {}
    for option, role in wanted.items():
        if not accepts(layer, option):
            continue
        try:
            fresh = type(layer)(**{**options, option: "ones"})
            fresh.build(input_shape if isinstance(input_shape, list) else tuple(input_shape),
                        np.random.default_rng(0))
        except Exception:  # noqa: BLE001 - plugin code may raise anything: then name no option
            continue
        found.update({name: option for name, r in roles.items() if r == role
                      and name in fresh.params and np.all(fresh.params[name] == 1)})
    return found


def weight_init(layer, label: str, scheme: str, option: str | None) -> str:
    """How to draw the weights ``label`` of ``layer`` from ``scheme`` (he or lecun): with
    ``option`` (``init``) on the layer when it works, else in words."""
    formula = INIT_FORMULA[scheme]
    where = (f"{option}: {scheme} on {layer.name}" if option else
             f"draw {label} from {formula} in {type(layer).__name__}.build")
    return f"{where} ({formula})"


def zero_bias(layer, label: str, option: str | None) -> str:
    """How to start the bias ``label`` of ``layer`` at zero."""
    return (f"{option}: zeros on {layer.name}" if option else
            f"initialise {label} to zero in {type(layer).__name__}.build")


def on_layer(layer, option: str, value: str, otherwise: str) -> str:
    """``"rate: 0.5 on drop"`` when ``layer`` takes ``option``, else the words ``otherwise``."""
    return f"{option}: {value} on {layer.name}" if accepts(layer, option) else otherwise


def train_block(**settings) -> str:
    """``train: {optimizer: adam, lr: 0.001}``: only keys a ``train:`` block takes."""
    unknown = set(settings) - {f.name for f in dataclasses.fields(TrainSpec)}
    if unknown:
        raise ValueError(f"not train: keys: {sorted(unknown)}")
    body = ", ".join(f"{key}: {value:g}" if isinstance(value, float) else f"{key}: {value}"
                     for key, value in settings.items())
    return f"train: {{{body}}}"


def scheme_after(network, k: int, traits) -> str:
    """He init when the first non-linearity the output of layer ``k`` flows into (through its
    readers, before any parametric layer) is an unbounded rectifier, LeCun otherwise (a bounded
    activation, or none: the output layer)."""
    pending, seen = graph.readers(network, k), set()
    while pending:
        j = pending.pop(0)
        if j in seen or j >= len(traits):  # the loss
            continue
        seen.add(j)
        t = traits[j]
        if t.elementwise and not t.affine and not t.constant:
            return "lecun" if t.bounded is not None else "he"
        if not t.parametric:
            pending = sorted({*pending, *graph.readers(network, j)})
    return "lecun"
