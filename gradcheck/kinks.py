"""Generic detection of non-differentiable points, and the measured round-off of the loss.

Both read the loss along one element's perturbation at five points, t = -h, -h/2, 0, +h/2, +h,
and fit a quadratic (least squares, 3 coefficients, 2 degrees of freedom):

- A smooth loss fits it to within round-off plus a cubic term. What a cubic cannot fit is the
  loss's own round-off (``noise``), so a layer computing in float32 (or casting inside a float64
  network) gets judged by the noise it really has, not by the dtype's textbook ulp.
- A kink (ReLU at 0, an exact max-pool tie, abs, clip) makes the loss piecewise: it bends at
  one point and no quadratic fits it. The misfit scales like the slope jump times the distance
  from the kink to the end of the stencil, and so does the error the kink causes in the central
  difference, so the test compares the two (``stencil_kinked``): a failure the misfit explains is
  a kink, one it cannot explain is real. Layers that expose ``branch_state`` are covered exactly by
  the engine; this is the fallback for plugins that expose nothing.

Chainer's ``detect_nondifferentiable`` fits the same quadratic over the same five points along a
random direction; here the direction is one element, so the verdict is per element.
"""

from __future__ import annotations

import functools

import numpy as np

STENCIL = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
# Least-squares projector onto quadratics over the 5-point stencil: residual = R @ values.
_VANDER = np.vander(STENCIL, 3)
_RESIDUAL = np.eye(5) - _VANDER @ np.linalg.pinv(_VANDER)
# A kink explains a central-difference error e (|analytic - numeric|, if the analytic is right)
# with a misfit of about 0.05..0.3 x e x h depending on where the kink sits; 0.01 leaves margin.
KINK_MISFIT_FRACTION = 0.01
# ... and must stand out of the round-off by this factor to count.
KINK_NOISE_FACTOR = 8.0


def stencil_values(minus: np.ndarray, half_minus: np.ndarray, base: np.ndarray,
                   half_plus: np.ndarray, plus: np.ndarray) -> np.ndarray:
    """The five loss values of each element relative to its unperturbed loss, shape (n, 5), in
    stencil order (relative, so that a large loss does not drown the variation in the fits)."""
    values = np.stack([minus, half_minus, base, half_plus, plus], axis=1).astype(np.float64)
    return values - values[:, 2:3]


def misfit(values: np.ndarray) -> np.ndarray:
    """rms distance of each row of ``values`` (n, 5) from its best quadratic (abs loss units)."""
    residual = values @ _RESIDUAL.T
    return np.sqrt(np.mean(residual ** 2, axis=1))


@functools.cache
def _hinge_projectors() -> tuple[np.ndarray, ...]:
    """Residual projectors of "a line plus one bend at b" for bends b across the stencil.
    Made on first use, not on import: 79 pseudo-inverses cost 3 ms of every check's start-up,
    and only a check that meets a suspected kink needs them."""
    projectors = []
    for bend in np.linspace(-0.975, 0.975, 79):  # steps of 0.025: 0 (an exact tie) included
        design = np.stack([np.ones(5), STENCIL, np.maximum(STENCIL - bend, 0.0)], axis=1)
        projectors.append(np.eye(5) - design @ np.linalg.pinv(design))
    return tuple(projectors)


# A kink is one bend: a line with one break fits it this much better than a quadratic does.
HINGE_IMPROVEMENT = 0.1


def hinge_misfit(values: np.ndarray) -> np.ndarray:
    """rms distance of each row of ``values`` (n, 5) from the best "line with one bend"."""
    best = np.full(len(values), np.inf)
    for projector in _hinge_projectors():
        residual = values @ projector.T
        best = np.minimum(best, np.sqrt(np.mean(residual ** 2, axis=1)))
    return best


def stencil_kinked(values: np.ndarray, step: np.ndarray, error: np.ndarray,
                   noise_per_point: float, branched=False) -> np.ndarray:
    """Which elements' losses bend, enough to explain their finite-difference error.

    ``values``: (n, 5) losses on the stencil; ``step``: the full distance 2h of each element;
    ``error``: |analytic - numeric| at step h; ``noise_per_point``: round-off of one loss value;
    ``branched``: per element (or for all), whether the unit's branch state changed across the
    step. A loss that is rough everywhere (noise, wiggles) is not a kink: the step sweep judges
    it. Where the state changed, several branches may be crossed (a max over tied values), so
    any bend that explains the error will do; elsewhere it must be one bend.
    """
    bend = misfit(values)
    explains = bend > KINK_MISFIT_FRACTION * error * (step / 2.0)
    above_noise = bend > KINK_NOISE_FACTOR * noise_per_point
    one_bend = hinge_misfit(values) <= np.maximum(HINGE_IMPROVEMENT * bend,
                                                  KINK_NOISE_FACTOR * noise_per_point)
    return explains & above_noise & (one_bend | np.asarray(branched, bool))


# Least-squares projector onto cubics over the stencil (1 degree of freedom left): a cubic
# absorbs the truncation a coarse step leaves, so what remains is round-off alone.
_CUBIC = np.vander(STENCIL, 4)
_CUBIC_RESIDUAL = np.eye(5) - _CUBIC @ np.linalg.pinv(_CUBIC)


def noise(values: np.ndarray) -> np.ndarray:
    """Per row of ``values`` (n, 5): the round-off of one value, estimated from what a cubic
    cannot fit (rms residual times sqrt(5/1) for one degree of freedom)."""
    residual = values @ _CUBIC_RESIDUAL.T
    return np.sqrt(np.mean(residual ** 2, axis=1) * 5.0)
