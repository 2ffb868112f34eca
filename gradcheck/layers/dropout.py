"""Dropout with a mask fixed at build time, so that finite differences see a deterministic map."""

from __future__ import annotations

import numpy as np

from gradcheck.errors import LayerError
from gradcheck.contract import Layer
from gradcheck.registry import register_layer


@register_layer("dropout")
class Dropout(Layer):
    """Inverted dropout: y = x * keep / (1 - rate) in training mode, y = x in eval mode.

    x, y: (batch, *shape); keep: (batch, *shape) of 0/1, each unit kept with probability 1 - rate.
    Scaling the kept units by 1/(1 - rate) keeps E[y] = x, so eval mode needs no rescaling.
    """

    def __init__(self, rate: float = 0.5):
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            # `not 0 <= rate < 1` is also True for NaN, so NaN is rejected here too.
            raise LayerError(f"rate must be a number in [0, 1), got {rate!r}.",
                             hint="rate is the fraction of units dropped; 1 would drop them all")
        self.rate = float(rate)
        self.seed: int | None = None
        self._base_mask: np.ndarray | None = None

    def build(self, input_shape, rng):
        # A gradient check compares f(x+h) with f(x-h): a fresh mask per forward would make f
        # random and every difference meaningless. So the only randomness is a seed taken here,
        # from the config's generator, and every mask is a pure function of it.
        self.seed = int(rng.integers(2**63))
        self._base_mask = None
        return tuple(input_shape)

    def _draw_mask(self, full_shape: tuple[int, ...]) -> np.ndarray:
        if self.seed is None:
            raise LayerError("dropout was run before it was built.")
        keep = np.random.default_rng(self.seed).random(full_shape) >= self.rate
        return keep / (1.0 - self.rate)

    def _mask(self, full_shape: tuple[int, ...]) -> np.ndarray:
        """The scaled 0/(1/(1-rate)) mask for an input of ``full_shape`` (batch first)."""
        batch = full_shape[0]
        if self._base_mask is None and batch > 0:
            self._base_mask = self._draw_mask(full_shape)
        base = self._base_mask
        if base is not None and base.shape[1:] == full_shape[1:] and batch % base.shape[0] == 0:
            # The engine may evaluate k perturbed copies of the first batch (size B) stacked into
            # one batch of k*B: each copy must see the very mask the unperturbed batch saw, or the
            # copies would differ by more than the perturbation.
            return np.tile(base, (batch // base.shape[0],) + (1,) * (len(full_shape) - 1))
        # Any other size is a different batch; a mask drawn from the same seed keeps it
        # deterministic (and, since rows are drawn in order, its rows agree with the first
        # batch's rows as far as both go).
        return self._draw_mask(full_shape)

    def forward(self, x):
        # Remember the mode of *this* forward: backward must differentiate the map that ran.
        # The mask takes x's dtype so a float32 check stays a float32 computation.
        self.mask = self._mask(x.shape).astype(x.dtype, copy=False) if self.training else None
        return x if self.mask is None else x * self.mask

    def backward(self, grad_out):
        return grad_out if self.mask is None else grad_out * self.mask

