"""Benchmark: gradcheck's modes against torch.autograd.gradcheck on the networks N1..N4 of issue 4.

Run with ``make bench`` (it installs the bench-only torch pin into the venv). Both sides run
float64 and single-threaded; torch checks every parameter (``all parameters as inputs``), while
gradcheck's ``full`` mode compares every parameter and every network-input element, plus a
stratified sample of each later layer's input (the blame probes), so it compares more elements
than torch does: the tables show the elements each compared.
Prints three Markdown tables: N1..N4, full-mode scaling with width, and directional mode on a
network with over 10 million parameters.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

from gradcheck.check import check_network
from gradcheck.config import load_config
from gradcheck.check import full_seconds
from gradcheck.compare import Comparison
from gradcheck.engine.verify import Verifier
from gradcheck.settings import settings_for
from gradcheck.build import build_network
from gradcheck.resources import reuse_freed_memory

CONV = "conv2d"
NETWORKS = {
    "N1": {"input": {"shape": [1, 20, 20], "batch": 32}, "layers": [
        {"type": CONV, "filters": 1, "kernel": 3, "padding": 1}, "sigmoid", "flatten",
        {"type": "dense", "units": 4}, "sigmoid", {"type": "dense", "units": 4}], "loss": "mse"},
    "N2": {"input": {"shape": [64], "batch": 16}, "layers": [
        {"type": "dense", "units": 128}, "tanh", {"type": "dense", "units": 64}, "relu",
        {"type": "dense", "units": 10}], "loss": "cross_entropy"},
    "N3": {"input": {"shape": [1, 28, 28], "batch": 4}, "layers": [
        {"type": CONV, "filters": 6, "kernel": 5, "padding": 2}, "relu", "maxpool2d",
        {"type": CONV, "filters": 16, "kernel": 5}, "relu", "maxpool2d", "flatten",
        {"type": "dense", "units": 120}, "relu", {"type": "dense", "units": 84}, "relu",
        {"type": "dense", "units": 10}], "loss": "cross_entropy"},
    "N4": {"input": {"shape": [1, 16, 16], "batch": 8}, "layers": [
        {"type": CONV, "filters": 8, "kernel": 3, "padding": 1}, "batchnorm", "relu", "maxpool2d",
        {"type": CONV, "filters": 8, "kernel": 3, "padding": 1}, "batchnorm", "relu", "maxpool2d",
        "flatten", {"type": "dense", "units": 32}, "relu", {"type": "dense", "units": 5},
        "sigmoid"], "loss": "mse"},
}
BIG = {"input": {"shape": [2048], "batch": 8}, "layers": [
    {"type": "dense", "units": 4096}, "relu", {"type": "dense", "units": 512}, "relu",
    {"type": "dense", "units": 10}], "loss": "cross_entropy"}
WIDTHS = (64, 128, 256, 512, 1024)
MEASURED_WIDTH_LIMIT = 256  # wider: the auto-mode estimate (a full run would take many minutes)


def wide_n2(width: int) -> dict:
    return {"input": {"shape": [64], "batch": 16}, "layers": [
        {"type": "dense", "units": width}, "tanh", {"type": "dense", "units": width}, "relu",
        {"type": "dense", "units": 10}], "loss": "cross_entropy"}


# Shared 2-core VMs swing by up to 2x between runs: each side gets the best of a few runs (the
# usual way to read through noise from other tenants), except runs too long to repeat.
REPEATS = 3
REPEAT_BELOW_SECONDS = 15.0


def seconds(fn) -> float:
    """Best wall time of up to REPEATS runs of ``fn`` (one run when it takes long)."""
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
        if best > REPEAT_BELOW_SECONDS:
            break
    return best


def parameter_count(config: dict) -> int:
    """What torch checks: every parameter element."""
    network, _ = build_network(load_config(config))
    return sum(p.size for unit in network.units for p in unit.params.values())


def gradcheck_run(config: dict, mode: str) -> tuple[float, bool, int]:
    """Seconds, verdict and elements compared one by one."""
    report = None

    def run():
        nonlocal report
        report = check_network(config, mode=mode)
    took = seconds(run)
    return took, report.passed, report.counts()["checked"]


def torch_function(name: str, config: dict, with_input: bool = False):
    """The same network in torch: a function of all parameters (and of the network input when
    ``with_input``), returning the scalar loss."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    f64 = torch.float64
    shape = config["input"]["shape"]
    x = torch.randn(config["input"]["batch"], *shape, dtype=f64)
    params, ops = [], []
    channels, features = shape[0], int(np.prod(shape))
    spatial = shape[1:] if len(shape) == 3 else None
    for layer in config["layers"]:
        kind = layer if isinstance(layer, str) else layer["type"]
        if kind == CONV:
            f, k = layer["filters"], layer["kernel"]
            pad = layer.get("padding", 0)
            params += [torch.randn(f, channels, k, k, dtype=f64) * 0.3, torch.zeros(f, dtype=f64)]
            i = len(params) - 2
            ops.append(lambda h, p, i=i, pad=pad: F.conv2d(h, p[i], p[i + 1], padding=pad))
            spatial = [s + 2 * pad - k + 1 for s in spatial]
            channels = f
        elif kind == "batchnorm":
            params += [torch.ones(channels, dtype=f64), torch.zeros(channels, dtype=f64)]
            i = len(params) - 2
            ops.append(lambda h, p, i=i: F.batch_norm(h, None, None, p[i], p[i + 1], training=True))
        elif kind == "maxpool2d":
            ops.append(lambda h, p: F.max_pool2d(h, 2))
            spatial = [s // 2 for s in spatial]
        elif kind == "flatten":
            ops.append(lambda h, p: h.flatten(1))
            features = channels * int(np.prod(spatial))
        elif kind == "dense":
            units = layer["units"]
            params += [torch.randn(units, features, dtype=f64) / features ** 0.5,
                       torch.zeros(units, dtype=f64)]
            i = len(params) - 2
            ops.append(lambda h, p, i=i: F.linear(h, p[i], p[i + 1]))
            features = units
        else:
            ops.append({"relu": lambda h, p: torch.relu(h), "tanh": lambda h, p: torch.tanh(h),
                        "sigmoid": lambda h, p: torch.sigmoid(h)}[kind])
    if config["loss"] == "mse":
        target = torch.rand(x.shape[0], features, dtype=f64)

        def loss(out):
            return 0.5 * ((out - target) ** 2).sum() / out.shape[0]
    else:
        labels = torch.randint(0, features, (x.shape[0],))

        def loss(out):
            return F.cross_entropy(out, labels)

    if with_input:
        def fn(h, *p):
            for op in ops:
                h = op(h, p)
            return loss(h)

        return fn, [x.requires_grad_()] + [q.requires_grad_() for q in params]

    def fn(*p):
        h = x
        for op in ops:
            h = op(h, p)
        return loss(h)

    return fn, [q.requires_grad_() for q in params]


def torch_seconds(name: str, config: dict, fast: bool, with_input: bool = False) -> float:
    import torch

    fn, inputs = torch_function(name, config, with_input)
    return seconds(lambda: torch.autograd.gradcheck(fn, inputs, fast_mode=fast))


def main() -> None:
    import torch

    torch.set_num_threads(1)
    # What the gradcheck CLI does at start-up; process-wide, so torch's arrays get it too.
    reused = reuse_freed_memory()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
          f"freed blocks reused (glibc mallopt, as the CLI does): {reused}\n")
    print("| net | params (torch checks) | elements compared (full) | gradcheck full s | "
          "gradcheck directional s | torch slow s | torch fast s | slow / full | "
          "slow / directional | torch slow, params + input s | same elements: slow / full |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, config in NETWORKS.items():
        params = parameter_count(config)
        full, passed, elements = gradcheck_run(config, "full")
        directional, passed_d, _ = gradcheck_run(config, "directional")
        slow = torch_seconds(name, config, fast=False)
        fast = torch_seconds(name, config, fast=True)
        # gradcheck's full mode also compares every network-input element: torch given the
        # input as well does the same work, for a like-for-like ratio next to the one.
        slow_with_input = torch_seconds(name, config, fast=False, with_input=True)
        flag = "" if passed and passed_d else " (FAILED)"
        print(f"| {name}{flag} | {params:,} | {elements:,} | {full:.2f} | {directional:.2f} | "
              f"{slow:.2f} | {fast:.2f} | {slow / full:.1f}x | {slow / directional:.0f}x | "
              f"{slow_with_input:.2f} | {slow_with_input / full:.1f}x |", flush=True)

    print("\n| N2 hidden width | params | elements compared | full-mode s |")
    print("|---:|---:|---:|---:|")
    for width in WIDTHS:
        config = wide_n2(width)
        params = parameter_count(config)
        if width <= MEASURED_WIDTH_LIMIT:
            full, _, elements = gradcheck_run(config, "full")
            took = f"{full:.1f}"
        else:
            elements = "-"
            spec = load_config(config)
            network, batch = build_network(spec)
            settings = settings_for(spec)
            comparison = Comparison(settings, network.dtype,
                                    Verifier(network.dtype, settings.tol.rtol, settings.seed))
            estimate = full_seconds(network, network.run(batch), batch, comparison, 0)
            took = f"~{estimate:.0f} (estimate)"
        print(f"| {width} | {params:,} | {elements if isinstance(elements, str) else f'{elements:,}'}"
              f" | {took} |", flush=True)

    params = parameter_count(BIG)
    took, passed, _ = gradcheck_run(BIG, "directional")
    auto, _, _ = gradcheck_run(BIG, "auto")
    print("\n| network | params | directional s | auto s (falls back to sample+directional) |")
    print("|---|---:|---:|---:|")
    print(f"| dense 2048-4096-512-10, batch 8{'' if passed else ' (FAILED)'} | {params:,} | "
          f"{took:.1f} | {auto:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
