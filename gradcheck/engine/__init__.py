"""The finite-difference engine: an objective under element perturbations, every one undone.

- ``local.LocalProbe``: one unit's own objective (sum(G * layer(x)), or the loss): what full and
  sample modes compare, and the units checked alone.
- ``tail.TailProbe``: the network's loss through everything after the perturbed arrays: what
  directional checks, bisection, replay and the end-to-end safety net compare.
- ``shortcuts``: faster ways to compute a unit's perturbed copies, each used only through the
  verifier (``verify``).
"""

from gradcheck.engine.base import Perturbed

__all__ = ["Perturbed"]
