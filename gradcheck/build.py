"""From a validated spec to a network ready to check: plugins, layers, memory budget and data."""

from __future__ import annotations

import numpy as np

from gradcheck.assemble import assemble
from gradcheck.config import NetworkSpec
from gradcheck.data import make_inputs, make_target
from gradcheck.network import Batch, Network
from gradcheck.plugins import load_spec_plugins
from gradcheck.resources import MemoryBudget


def build_network(spec: NetworkSpec) -> tuple[Network, Batch]:
    """Load the spec's plugins, build every layer (refusing a network that would not fit in
    memory before it allocates), and make the check's inputs and targets."""
    load_spec_plugins(spec)
    dtype = np.dtype(spec.dtype)
    budget = MemoryBudget(dtype.itemsize)
    for source in spec.inputs:
        if source.shape is not None:
            # Refuse an impossible input before drawing it.
            budget.admit_input(source.name, (source.batch, *source.shape))
    inputs = make_inputs(spec)
    for name, x in inputs.items():
        budget.admit_input(name, x.shape)
    rows = next(iter(inputs.values())).shape[0]
    with budget.watching():
        network = assemble(spec, {name: tuple(x.shape[1:]) for name, x in inputs.items()},
                           on_built=budget.built)
    try:
        target = make_target(spec, network.loss, network.shapes[-1], rows, dtype)
    except BaseException:
        network.close()
        raise
    data = {name: x if name in network.integer else x.astype(dtype)
            for name, x in inputs.items()}
    return network, Batch(data if len(data) > 1 else next(iter(data.values())), target)
