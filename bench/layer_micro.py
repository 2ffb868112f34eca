"""Time each layer of bench network N4 on COPIES stacked copies of its batch, as the engine runs them.

Run from the repository root (single-threaded BLAS, as the bench):
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/layer_micro.py [COPIES=128]
Batch-mixing layers go through ``forward_groups`` (one group per copy); each time is the best of 5.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench import NETWORKS  # noqa: E402

from gradcheck.config import load_config  # noqa: E402
from gradcheck.build import build_network  # noqa: E402


def best_time(function, *args, repeats: int = 5):
    """(fastest wall time in seconds, last result) of ``repeats`` calls."""
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest, result


def main(copies: int) -> None:
    network, batch = build_network(load_config(NETWORKS["N4"]))
    inputs = network.run(batch).inputs[0]
    rows = inputs.shape[0]
    # The offset keeps the copies off the exact values of the unperturbed batch, as perturbed
    # copies are.
    x = np.repeat(inputs[None], copies, 0).reshape(copies * rows, *inputs.shape[1:]) + 1e-7
    total = 0.0
    for k, layer in enumerate(network.layers):
        if getattr(layer, "mixes_batch", False):
            seconds, y = best_time(layer.forward_groups, x, rows)
        else:
            seconds, y = best_time(layer.forward, x)
        total += seconds
        print(f"{k:2d} {layer.name:12s} {x.shape} -> {y.shape}: {seconds * 1e3:.2f} ms  "
              f"per copy {seconds / copies * 1e6:.1f} us")
        x = y
    print(f"total per copy {total / copies * 1e6:.1f} us")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 128)
