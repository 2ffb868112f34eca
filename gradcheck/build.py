"""From a validated spec to a network ready to check: plugins, layers, memory budget and data."""

from __future__ import annotations

import numpy as np

from gradcheck.config import NetworkSpec
from gradcheck.data import make_input, make_target
from gradcheck.network import Batch, Network, assemble
from gradcheck.plugins import load_spec_plugins
from gradcheck.resources import MemoryBudget


def build_network(spec: NetworkSpec) -> tuple[Network, Batch]:
    """Load the spec's plugins, build every layer (refusing a network that would not fit in
    memory before it allocates), and make the check's inputs and targets."""
    load_spec_plugins(spec)
    dtype = np.dtype(spec.dtype)
    budget = MemoryBudget(dtype.itemsize)
    if spec.input.shape is not None:
        # Refuse an impossible input before drawing it.
        budget.admit_input((spec.input.batch, *spec.input.shape))
    x = make_input(spec)
    budget.admit_input(x.shape)
    with budget.watching():
        network = assemble(spec, tuple(x.shape[1:]), on_built=budget.built)
    try:
        target = make_target(spec, network.loss, network.shapes[-1], x.shape[0], dtype)
    except BaseException:
        network.close()
        raise
    return network, Batch(x.astype(dtype), target)
