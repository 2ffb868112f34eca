"""Dropout, random on purpose, through the contract's ``uses_rng``: its mask is drawn from
``self.rng`` in every forward, as in training, and the engine rewinds that generator before each
call it makes during a check, so finite differences compare one function, not two draws."""

from __future__ import annotations

from gradcheck.contract import Layer
from gradcheck.errors import LayerError
from gradcheck.registry import register_layer


@register_layer("dropout")
class Dropout(Layer):
    """Inverted dropout: y = x * keep / (1 - rate) in training mode, y = x in eval mode.

    x, y: (batch, *shape); keep: (batch, *shape) of 0/1, each unit kept with probability 1 - rate,
    drawn from ``self.rng``. Scaling the kept units by 1/(1 - rate) keeps E[y] = x, so eval mode
    needs no rescaling.
    """

    uses_rng = True

    def __init__(self, rate: float = 0.5):
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            # `not 0 <= rate < 1` is also True for NaN, so NaN is rejected here too.
            raise LayerError(f"rate must be a number in [0, 1), got {rate!r}.",
                             hint="rate is the fraction of units dropped; 1 would drop them all")
        self.rate = float(rate)

    def forward(self, x):
        # Remember the mode of *this* forward: backward must differentiate the map that ran.
        if not self.training:
            self.mask = None
            return x
        # The mask takes x's dtype so a float32 check stays a float32 computation.
        keep = self.rng.random(x.shape) >= self.rate
        self.mask = (keep / (1.0 - self.rate)).astype(x.dtype, copy=False)
        return x * self.mask

    def backward(self, grad_out):
        return grad_out if self.mask is None else grad_out * self.mask
