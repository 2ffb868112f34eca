"""Behavioural probes: what a layer *does*, measured on random inputs, never read from its name.

The registry has no privileged members, so the lints must work for plugin layers exactly as for
built-ins. Each probe calls only the public contract (``forward``/``backward``/``params``/
``training``) on random inputs of the layer's input shape and records a trait: affine, elementwise,
bounded (and its range), constant, zero Jacobian, normalising over axis 1, coupling samples, the
share of units a training-mode layer drops, and the fan-in of one output element.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from gradcheck.errors import GradcheckError
from gradcheck.network import Network
from gradcheck.usercode import invoke

PROBE_BATCH = 4


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
    fan_in: int | None = None


def _quiet(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray | None]:
    """``fn`` with numpy warnings silenced and any failure turned into None (trait unknown)."""

    def call(x):
        with np.errstate(all="ignore"):
            try:
                return np.asarray(fn(x), dtype=np.float64)
            except GradcheckError:
                return None

    return call


def _close(a, b, rtol: float = 1e-9) -> bool:
    if a is None or b is None or a.shape != b.shape:
        return False
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), 1.0)
    return bool(np.all(np.abs(a - b) <= rtol * scale))


def map_traits(fn, input_shape, dtype, rng, name: str) -> Traits:
    """Probe the map ``fn`` (batch, *input_shape) -> (batch, ...) for its traits."""
    f = _quiet(fn)
    traits = Traits(name)
    x1 = rng.normal(size=(PROBE_BATCH, *input_shape)).astype(dtype)
    x2 = rng.normal(size=x1.shape).astype(dtype)
    y1, y2 = f(x1), f(x2)
    if y1 is None or y2 is None or not (np.all(np.isfinite(y1)) and np.all(np.isfinite(y2))):
        return traits
    # Affine: f(t x1 + (1-t) x2) = t f(x1) + (1-t) f(x2), inside and outside the segment.
    traits.affine = all(_close(f((t * x1 + (1 - t) * x2).astype(dtype)), t * y1 + (1 - t) * y2,
                               1e-7) for t in (0.3, 1.7))
    traits.constant = _close(y1, y2, 1e-12)
    x3 = x1.copy()
    x3[0] += rng.normal(size=x3[0].shape).astype(dtype)
    y3 = f(x3)
    traits.batch_coupled = y3 is not None and not _close(y3[1:], y1[1:], 1e-13)
    if y1.shape == x1.shape and not traits.batch_coupled:
        traits.elementwise = _is_elementwise(f, x1, y1, rng)
    if y1.ndim >= 2 and np.all(y1 >= -1e-12) and np.allclose(y1.sum(axis=1), 1.0, atol=1e-9):
        traits.normalizes = True
    traits.bounded = _range(f, x1, y1)
    return traits


def _is_elementwise(f, x, y, rng) -> bool:
    flat = x.reshape(len(x), -1)
    for j in rng.choice(flat.shape[1], size=min(3, flat.shape[1]), replace=False):
        moved = flat.copy()
        moved[0, j] += 0.5
        out = f(moved.reshape(x.shape))
        if out is None:
            return False
        changed = np.abs(out.reshape(len(x), -1) - y.reshape(len(x), -1)) > 0
        changed[0, j] = False
        if changed.any():
            return False
    return True


def _range(f, x, y) -> tuple[float, float] | None:
    """(min, max) of the output if it stays bounded as the input grows 1000-fold, else None."""
    outputs = [y]
    for scale in (10.0, 1e4):
        out = f((x * scale).astype(x.dtype))
        if out is None or not np.all(np.isfinite(out)):
            return None
        outputs.append(out)
    small, large = np.max(np.abs(outputs[1])), np.max(np.abs(outputs[2]))
    if large > 2.0 * small + 1e-12:
        return None
    return float(min(o.min() for o in outputs)), float(max(o.max() for o in outputs))


def layer_traits(network: Network, k: int, rng, x_real: np.ndarray) -> Traits:
    """Traits of layer ``k``, including those only its backward and its modes reveal.

    ``x_real`` is the input the layer receives on the config's batch: the share a dropout-like
    layer drops is measured on it, with the masks the check itself uses.
    """
    layer = network.layers[k]
    in_shape, out_shape = network.shapes[k], network.shapes[k + 1]
    traits = map_traits(lambda x: invoke(layer, "forward", layer.forward, x), in_shape,
                        network.dtype, rng, layer.name)
    traits.parametric = any(np.size(p) for p in layer.params.values())
    x = rng.normal(size=(PROBE_BATCH, *in_shape)).astype(network.dtype)
    with np.errstate(all="ignore"):
        try:
            invoke(layer, "forward", layer.forward, x)
            grad_out = rng.normal(size=(PROBE_BATCH, *out_shape)).astype(network.dtype)
            grad_in = invoke(layer, "backward", layer.backward, grad_out)
            traits.zero_jacobian = (not np.any(grad_in) and
                                    not any(np.any(g) for g in layer.grads.values()))
            if traits.affine and traits.parametric:
                traits.fan_in = _fan_in(layer, x, out_shape)
            if not traits.parametric and out_shape == in_shape:
                traits.drop_share = _drop_share(layer, x_real)
                traits.drop_sample = int(np.count_nonzero(x_real))
        except GradcheckError:
            pass
        finally:
            layer.training = True
    return traits


def _fan_in(layer, x, out_shape) -> int | None:
    """Input elements that reach one central output element: a conv's C*kh*kw, a dense's fan_in."""
    invoke(layer, "forward", layer.forward, x)
    one_hot = np.zeros((len(x), *out_shape), dtype=x.dtype)
    centre = (0,) + tuple(d // 2 for d in out_shape[1:]) if len(out_shape) > 1 else (0,)
    one_hot[(0, *centre)] = 1.0
    grad_in = invoke(layer, "backward", layer.backward, one_hot)
    count = int(np.count_nonzero(grad_in[0]))
    return count or None


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


def tail_traits(network: Network, start: int, rng) -> Traits:
    """Traits of the composite map from layer ``start`` to the network output."""
    return map_traits(lambda x: network.forward(x, start=start), network.shapes[start],
                      network.dtype, rng, network.layers[start].name)
