"""Inputs of the right kind for every probe: a unit's inputs drawn at random, and the batch's
inputs cut, zeroed or redrawn.

Real-valued inputs are drawn standard normal, scaled or zeroed; integer token ids never are:
they are drawn uniformly from their vocabulary and otherwise left as they are, since an id
outside [0, vocab) is not an input a layer has to take, and ids have no gradient.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.config import NetworkSpec
from gradcheck.network import Batch, Network

PROBE_BATCH = 4


def vocabularies(spec: NetworkSpec, network: Network, batch: Batch) -> dict[str, int]:
    """Per integer input, its vocabulary: the spec's ``vocab``, or one past the largest id in
    the data when a file gave ids without one."""
    given = {source.name: source.vocab for source in spec.inputs}
    data = network.named_inputs(batch.x)
    return {name: given.get(name) or int(np.max(data[name])) + 1 for name in network.integer}


@dataclasses.dataclass(frozen=True)
class Slots:
    """What a unit reads: per input slot its per-sample shape and, for token ids, the
    vocabulary (None for real values)."""

    shapes: tuple[tuple[int, ...], ...]
    vocab: tuple[int | None, ...]
    dtype: np.dtype

    @classmethod
    def of(cls, network: Network, k: int, vocab: dict[str, int]) -> Slots:
        """The inputs of unit ``k`` of ``network`` (``vocab``: each integer input's)."""
        tensors = network.sources[k]
        return cls(tuple(network.tensor_shapes[t] for t in tensors),
                   tuple(vocab.get(t) if t in network.integer else None for t in tensors),
                   network.dtype)

    @property
    def floats(self) -> list[int]:
        """The slots that hold real values."""
        return [j for j, v in enumerate(self.vocab) if v is None]

    @property
    def single_float(self) -> bool:
        """Whether the unit reads exactly one input, of real values."""
        return self.vocab == (None,)

    @property
    def build_shape(self):
        """The shape argument of ``Layer.build``: one shape, or a list for several inputs."""
        return list(self.shapes) if len(self.shapes) > 1 else self.shapes[0]

    def draw(self, rng, rows: int = PROBE_BATCH) -> list[np.ndarray]:
        """Standard-normal values and uniform ids, ``rows`` samples."""
        return [rng.normal(size=(rows, *shape)).astype(self.dtype) if v is None
                else rng.integers(0, v, size=(rows, *shape))
                for shape, v in zip(self.shapes, self.vocab)]

    def redraw(self, args: list[np.ndarray], rng) -> list[np.ndarray]:
        """``args`` with new standard-normal values, the same ids."""
        return [rng.normal(size=a.shape).astype(self.dtype) if v is None else a
                for a, v in zip(args, self.vocab)]

    def mix(self, args: list[np.ndarray], fn) -> list[np.ndarray]:
        """``args`` with ``fn(j, value)`` in place of each real value ``j``, the ids kept."""
        return [np.asarray(fn(j, a)).astype(self.dtype) if v is None else a
                for j, (a, v) in enumerate(zip(args, self.vocab))]

    def zeros(self, args: list[np.ndarray]) -> list[np.ndarray]:
        """``args`` with every real value 0, the ids kept."""
        return self.mix(args, lambda j, a: np.zeros_like(a))

    def moved_sample(self, args: list[np.ndarray], rng) -> list[np.ndarray]:
        """``args`` with sample 0 changed: its values moved by standard-normal noise, its ids
        redrawn."""
        moved = [np.array(a, copy=True) for a in args]
        for a, v in zip(moved, self.vocab):
            if v is None:
                a[0] += rng.normal(size=a[0].shape).astype(self.dtype)
            else:
                a[0] = rng.integers(0, v, size=a[0].shape)
        return moved


def rows(batch: Batch) -> int:
    """The number of samples in ``batch``."""
    x = batch.x
    return len(next(iter(x.values())) if isinstance(x, dict) else x)


def head(batch: Batch, n: int) -> Batch:
    """The first ``n`` samples of ``batch``."""
    x = batch.x
    cut = {name: a[:n] for name, a in x.items()} if isinstance(x, dict) else x[:n]
    return Batch(cut, batch.target[:n])


def _each(network: Network, x, fn):
    """``x`` (one array, or a dict by name) with ``fn`` applied to every real-valued input."""
    if not isinstance(x, dict):
        return x if network.input_names[0] in network.integer else fn(x)
    return {name: a if name in network.integer else fn(a) for name, a in x.items()}


def zeroed(network: Network, batch: Batch) -> Batch:
    """``batch`` with every real-valued input 0 (the ids kept: they are not values)."""
    return Batch(_each(network, batch.x, np.zeros_like), batch.target)


def standard(network: Network, batch: Batch, vocab: dict[str, int], rng) -> Batch:
    """``batch`` with every input redrawn: standard-normal values, uniform ids."""
    def draw(name, a):
        if name in network.integer:
            return rng.integers(0, vocab[name], size=a.shape)
        return rng.normal(size=a.shape).astype(a.dtype)

    x = batch.x
    if isinstance(x, dict):
        return Batch({name: draw(name, a) for name, a in x.items()}, batch.target)
    return Batch(draw(network.input_names[0], x), batch.target)
