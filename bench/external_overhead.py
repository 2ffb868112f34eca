"""How much the external-layer protocol costs per evaluation, for a small convolution.

    .venv/bin/python bench/external_overhead.py [--seconds 1.0]

Compiles examples/external/conv2d.c with the system C compiler into a temporary folder, then
measures forward evaluations per second of the same small conv layer (input 2x8x8, 4 filters
3x3, padding 1) as

- the built-in ``conv2d`` layer (numpy, in process),
- the C client over the protocol (binary arrays), one sample per request and with perturbed
  copies stacked along the batch axis (how batching amortises the round trip),
- the plain-Python reference client (text arrays; a dense layer, for the text encoding's cost),

and the wall time of a full ``check`` of examples/external/conv_c.yaml against the same network
with the built-in conv2d. Prints a table (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

import gradcheck
from gradcheck.layers.external import External

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "external"
INPUT_SHAPE = (2, 8, 8)
CONV = {"filters": 4, "kernel": 3, "padding": 1}


def rate(fn, seconds: float) -> float:
    """Calls of ``fn`` per second, over at least ``seconds`` (after one warm-up call)."""
    fn()
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def compile_client(folder: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("bench/external_overhead.py needs a C compiler (cc or gcc)")
    binary = folder / "conv2d"
    subprocess.run([compiler, "-O2", "-std=c99", "-o", str(binary), str(EXAMPLES / "conv2d.c"), "-lm"],
                   check=True)
    return binary


def timed_check(config: dict, base_dir: Path) -> float:
    """Seconds for build + check of ``config``; counts the external layer's requests meanwhile."""
    spec = gradcheck.load_config(config, base_dir=base_dir)
    start = time.perf_counter()
    network, batch = gradcheck.build_network(spec)
    with network:
        report = gradcheck.run_check(network, batch, gradcheck.check.settings_for(spec))
    assert report.passed, "the benchmark networks must pass"
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        binary = compile_client(Path(tmp))
        builtin = gradcheck.layer_class("conv2d")(**CONV)
        builtin.build(INPUT_SHAPE, np.random.default_rng(0))
        external = External([str(binary)], CONV)
        external.build(INPUT_SHAPE, np.random.default_rng(0))
        try:
            for batch in (1, 64):
                x = rng.normal(size=(batch, *INPUT_SHAPE))
                for label, layer in (("built-in conv2d (numpy)", builtin),
                                     ("external C conv2d, binary", external)):
                    per_second = rate(lambda: layer.forward(x), args.seconds)
                    rows.append((label, batch, per_second, per_second * batch))
        finally:
            external.close()
        dense = External([sys.executable, str(EXAMPLES / "dense_client.py")], {"units": 8})
        dense.build((16,), np.random.default_rng(0))
        try:
            x = rng.normal(size=(1, 16))
            per_second = rate(lambda: dense.forward(x), args.seconds)
            rows.append(("external Python dense 16->8, text", 1, per_second, per_second))
        finally:
            dense.close()

        config = yaml.safe_load((EXAMPLES / "conv_c.yaml").read_text())
        requests = []
        forward = External.forward
        External.forward = lambda self, x: (requests.append(x.shape[0]), forward(self, x))[1]
        try:
            ext_seconds = timed_check(config, Path(tmp))
        finally:
            External.forward = forward
        config["layers"][0] = {"type": "conv2d", "name": "cconv", **config["layers"][0]["options"]}
        builtin_seconds = timed_check(config, Path(tmp))

    print("| layer | batch per request | evaluations/s | µs per evaluation | samples/s |")
    print("|---|---:|---:|---:|---:|")
    for label, batch, per_second, samples in rows:
        print(f"| {label} | {batch} | {per_second:,.0f} | {1e6 / per_second:,.0f} | {samples:,.0f} |")
    print()
    print(f"full check of examples/external/conv_c.yaml: {ext_seconds:.2f} s with the C conv, "
          f"{builtin_seconds:.2f} s with the built-in conv2d; the C conv served {len(requests)} "
          f"forward requests carrying {sum(requests)} samples (the engine stacks perturbed copies)")


if __name__ == "__main__":
    main()
