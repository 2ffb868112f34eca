"""Behavioural probes: what a layer *does*, measured on random inputs, never read from its name.

The registry has no privileged members, so the lints must work for plugin layers exactly as for
built-ins. Each probe calls only the public contract (``forward``/``backward``/``params``/
``training``) on random inputs of the layer's input shapes (``inputs.Slots``: a layer with several
inputs gets them all, token ids drawn from their vocabulary and never perturbed) and records a
trait: affine, elementwise, bounded (and its range), constant, zero Jacobian, normalising over axis
1, coupling samples, the share of units a training-mode layer drops, and the role each parameter
plays in the output. A trait about real values ("affine in its inputs") is about the real-valued
inputs only.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from gradcheck.diagnose.inputs import PROBE_BATCH, Slots
from gradcheck.errors import GradcheckError
from gradcheck.network import Network
from gradcheck.usercode import invoke


@dataclasses.dataclass
class Traits:
    """What probing one layer (or a tail of layers) found. ``None`` means "could not tell"."""

    name: str
    parametric: bool = False
    affine: bool = False
    elementwise: bool = False
    batch_coupled: bool = False
    constant: bool = False
    zero_jacobian: bool = False
    normalizes: bool = False
    bounded: tuple[float, float] | None = None
    drop_share: float | None = None
    drop_sample: int = 0
    # How each parameter enters the output, by behaviour (never by its name): "bias" (shifts every
    # sample's output by the same amount whatever the input), "scale" (multiplies what comes in,
    # one entry per output element: batchnorm's gamma, a learned gain, prelu's slope) or "weight"
    # (an output element mixes several entries with as many inputs: a dense's or conv's W).
    roles: dict[str, str] = dataclasses.field(default_factory=dict)
    # The YAML option (init, bias_init) seen to draw each parameter (``advice.init_options``).
    init_options: dict[str, str] = dataclasses.field(default_factory=dict)


def _quiet(fn: Callable) -> Callable[[list[np.ndarray]], np.ndarray | None]:
    """``fn`` on a list of inputs, with numpy warnings silenced, several outputs flattened side
    by side per sample, and any failure turned into None (trait unknown)."""

    def call(args):
        with np.errstate(all="ignore"):
            try:
                out = fn(*args)
                if isinstance(out, tuple):
                    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(len(o), -1)
                                           for o in out], axis=1)
                return np.asarray(out, dtype=np.float64)
            except GradcheckError:
                return None

    return call


def _close(a, b, rtol: float = 1e-9) -> bool:
    if a is None or b is None or a.shape != b.shape:
        return False
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), 1.0)
    return bool(np.all(np.abs(a - b) <= rtol * scale))


def _forward(layer) -> Callable:
    return lambda *args: invoke(layer, "forward", layer.forward, *args)


def map_traits(fn, slots: Slots, rng, name: str) -> Traits:
    """Probe the map ``fn(*inputs)`` (inputs as ``slots`` describes) for its traits."""
    f = _quiet(fn)
    traits = Traits(name)
    a1 = slots.draw(rng)
    a2 = slots.redraw(a1, rng)
    y1, y2 = f(a1), f(a2)
    if y1 is None or y2 is None or not (np.all(np.isfinite(y1)) and np.all(np.isfinite(y2))):
        return traits
    if slots.floats:
        # Affine: f(t a1 + (1-t) a2) = t f(a1) + (1-t) f(a2), inside and outside the segment.
        traits.affine = all(_close(f(slots.mix(a1, lambda j, a: t * a + (1 - t) * a2[j])),
                                   t * y1 + (1 - t) * y2, 1e-7) for t in (0.3, 1.7))
        traits.constant = _close(y1, y2, 1e-12)
    else:  # ids only: constant if other ids give the same output
        traits.constant = _close(y1, f(slots.draw(rng)), 1e-12)
    y3 = f(slots.moved_sample(a1, rng))
    traits.batch_coupled = y3 is not None and not _close(y3[1:], y1[1:], 1e-13)
    if slots.single_float and y1.shape == a1[0].shape and not traits.batch_coupled:
        traits.elementwise = _is_elementwise(f, a1[0], y1, rng)
    if y1.ndim >= 2 and np.all(y1 >= -1e-12) and np.allclose(y1.sum(axis=1), 1.0, atol=1e-9):
        traits.normalizes = True
    traits.bounded = _range(f, slots, a1, y1) if slots.floats else None
    return traits


def _is_elementwise(f, x, y, rng) -> bool:
    flat = x.reshape(len(x), -1)
    for j in rng.choice(flat.shape[1], size=min(3, flat.shape[1]), replace=False):
        moved = flat.copy()
        moved[0, j] += 0.5
        out = f([moved.reshape(x.shape)])
        if out is None:
            return False
        changed = np.abs(out.reshape(len(x), -1) - y.reshape(len(x), -1)) > 0
        changed[0, j] = False
        if changed.any():
            return False
    return True


def _range(f, slots: Slots, args, y) -> tuple[float, float] | None:
    """(min, max) of the output if it stays bounded as the real inputs grow 1000-fold, else
    None."""
    outputs = [y]
    for scale in (10.0, 1e4):
        out = f(slots.mix(args, lambda j, a: a * scale))
        if out is None or not np.all(np.isfinite(out)):
            return None
        outputs.append(out)
    small, large = np.max(np.abs(outputs[1])), np.max(np.abs(outputs[2]))
    if large > 2.0 * small + 1e-12:
        return None
    return float(min(o.min() for o in outputs)), float(max(o.max() for o in outputs))


def layer_traits(network: Network, k: int, rng, real: list[np.ndarray],
                 vocab: dict[str, int]) -> Traits:
    """Traits of layer ``k``, including those only its backward and its modes reveal.

    ``real`` are the inputs the layer receives on the config's batch: the share a dropout-like
    layer drops is measured on them, with the masks the check itself uses. ``vocab``: the
    vocabulary of each integer input.
    """
    layer = network.layers[k]
    slots = Slots.of(network, k, vocab)
    out_shapes = [network.tensor_shapes[t] for t in network.outputs[k]]
    traits = map_traits(_forward(layer), slots, rng, layer.name)
    traits.parametric = any(np.size(p) for p in layer.params.values())
    args = slots.draw(rng)
    with np.errstate(all="ignore"):
        try:
            invoke(layer, "forward", layer.forward, *args)
            grad_out = [rng.normal(size=(PROBE_BATCH, *shape)).astype(network.dtype)
                        for shape in out_shapes]
            got = invoke(layer, "backward", layer.backward, *grad_out)
            grad_in = list(got) if len(args) > 1 and isinstance(got, tuple) else [got]
            traits.zero_jacobian = (
                not any(j < len(grad_in) and grad_in[j] is not None and np.any(grad_in[j])
                        for j in slots.floats)
                and not any(np.any(g) for g in layer.grads.values()))
            if traits.parametric:
                traits.roles = _roles(layer, slots, args, out_shapes, rng)
            if not traits.parametric and slots.single_float and out_shapes == [slots.shapes[0]]:
                traits.drop_share = _drop_share(layer, real[0])
                traits.drop_sample = int(np.count_nonzero(real[0]))
        except GradcheckError:
            pass
        finally:
            layer.training = True
    return traits


def _roles(layer, slots: Slots, args, out_shapes, rng) -> dict[str, str]:
    """The role of every non-empty parameter of ``layer`` (see ``Traits.roles``) on inputs
    ``args``."""
    f = _quiet(_forward(layer))
    other = slots.draw(rng)
    entries = _entries_per_output(layer, args, out_shapes, slots.dtype)
    roles = {}
    for name, p in layer.params.items():
        if not p.size or name not in entries:
            continue
        before = f(args), f(other)
        saved = p.copy()
        try:
            p += (rng.normal(size=p.shape) * max(float(np.max(np.abs(saved))), 1.0)).astype(p.dtype)
            after = f(args), f(other)
        finally:
            p[...] = saved
        if any(a is None for a in (*before, *after)):
            continue
        shift, shift_other = after[0] - before[0], after[1] - before[1]
        # Input-independent change: the same shift for two unrelated batches.
        bias = bool(np.any(shift)) and _close(shift, shift_other, 1e-7)
        if not bias and entries[name] > 1 and slots.floats:
            bias = _moves_the_zero_state(layer, f, name, slots.zeros(args), rng)
        roles[name] = "bias" if bias else "scale" if entries[name] <= 1 else "weight"
    return roles


def _moves_the_zero_state(layer, f, name: str, zero: list[np.ndarray], rng) -> bool:
    """Whether parameter ``name`` alone moves the output when the real inputs (``zero``) and
    every other parameter are 0: a bias inside a nonlinearity (an RNN's or a GRU's gate bias)
    does, a weight, which multiplies the input or a state the input drives, does not."""
    saved = {n: p.copy() for n, p in layer.params.items()}
    try:
        for p in layer.params.values():
            p[...] = 0
        rest = f(zero)
        layer.params[name][...] = rng.normal(size=saved[name].shape).astype(saved[name].dtype)
        moved = f(zero)
    finally:
        for n, p in layer.params.items():
            p[...] = saved[n]
    return rest is not None and moved is not None and not _close(rest, moved, 1e-9)


def constant_makes_units_alike(layer, name: str, slots: Slots, rng,
                               samples: int = 16) -> bool | None:
    """Whether parameter ``name``, as it is (constant), makes output units compute the same
    thing: fewer distinct output columns (centred over a batch of standard-normal inputs) than
    with ``name`` drawn at random. A constant dense or conv weight does; a zero query bias of an
    attention layer or a zero gate bias of a GRU does not. None if it cannot be measured."""
    f = _quiet(_forward(layer))
    x = slots.draw(rng, samples)
    param = layer.params[name]
    saved = param.copy()
    alike = f(x)
    try:
        param[...] = rng.normal(size=param.shape).astype(param.dtype)
        apart = f(x)
    finally:
        param[...] = saved
    if alike is None or apart is None:
        return None
    return _distinct_columns(alike) < _distinct_columns(apart)


def _distinct_columns(y: np.ndarray) -> int:
    columns = y.reshape(len(y), -1)
    columns = columns - columns.mean(axis=0)
    scale = max(float(np.abs(columns).max()), 1e-300)
    return len(np.unique(np.round(columns.T / scale, 9), axis=0))


def layer_gain(layer, slots: Slots, rng, samples: int = 32) -> float | None:
    """The mean square of f(x) - f(0) over standard-normal real inputs x (the ids drawn and
    kept): how the layer scales the variance of what flows through it, by its forward alone
    (fan_in x mean(W^2) for a dense or an unpadded conv; He init gives 2, LeCun 1). None if it
    cannot be measured, or the layer reads ids only."""
    if not slots.floats:
        return None
    f = _quiet(_forward(layer))
    x = slots.draw(rng, samples)
    y, y0 = f(x), f(slots.zeros(x))
    if y is None or y0 is None or not (np.all(np.isfinite(y)) and np.all(np.isfinite(y0))):
        return None
    return float(np.mean((y - y0) ** 2))


def _entries_per_output(layer, args, out_shapes, dtype) -> dict[str, int]:
    """Per parameter, how many of its entries one central element of sample 0 of the first
    output depends on (a dense's fan_in, a conv's C*kh*kw, 1 for a per-unit scale or bias)."""
    invoke(layer, "forward", layer.forward, *args)
    grads = [np.zeros((len(args[0]), *shape), dtype=dtype) for shape in out_shapes]
    shape = out_shapes[0]
    centre = (0,) + tuple(d // 2 for d in shape[1:]) if len(shape) > 1 else (0,)
    grads[0][(0, *centre)] = 1.0
    invoke(layer, "backward", layer.backward, *grads)
    return {name: int(np.count_nonzero(g)) for name, g in layer.grads.items()}


def _drop_share(layer, x) -> float | None:
    """Share of units zeroed in training mode by a layer that is the identity in eval mode."""
    layer.training = False
    evaluated = invoke(layer, "forward", layer.forward, x)
    layer.training = True
    if not _close(np.asarray(evaluated, dtype=np.float64), x.astype(np.float64), 1e-12):
        return None
    trained = np.asarray(invoke(layer, "forward", layer.forward, x))
    if _close(trained.astype(np.float64), x.astype(np.float64), 1e-12):
        return None
    live = x != 0  # a zero input (after a rectifier) says nothing about the mask
    return float(np.mean(trained[live] == 0)) if live.any() else None


def tail_traits(network: Network, units: list[int], rng, vocab: dict[str, int]) -> Traits:
    """Traits of the composite map through the tail layers ``units`` (``graph.tail``: each
    reads the one before) to the tensor the loss reads."""
    start, source = units[0], network.sources[units[0]][0]
    last = network.outputs[units[-1]][0]
    return map_traits(lambda x: network.run_units({source: x}, units)[last],
                      Slots.of(network, start, vocab), rng, network.layers[start].name)
