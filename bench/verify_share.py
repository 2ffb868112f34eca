"""Where a full check's time goes: the whole check, its evaluations (``LocalProbe.evaluate``) and,
within them, the verification of speed-ups against plain forward (``LocalProbe._verify``), on
each bench network (N1..N4 of bench/bench.py), one process, best of N checks.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/verify_share.py [--repeats N]

The two methods are wrapped with timers, which add a little to the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import NETWORKS  # noqa: E402  (bench/bench.py, next to this file)

from gradcheck.check import check_network  # noqa: E402
from gradcheck.engine.local import LocalProbe  # noqa: E402
from gradcheck.resources import reuse_freed_memory  # noqa: E402

spent = {"evaluate": 0.0, "_verify": 0.0}


def _timed(name: str) -> None:
    method = getattr(LocalProbe, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started
    setattr(LocalProbe, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    reuse_freed_memory()
    for name in spent:
        _timed(name)
    print("| net | full check s | evaluations s | verifying s |\n|---|---:|---:|---:|")
    for name, layers in NETWORKS.items():
        config = dict(layers, name=name, seed=0)
        best = None
        for _ in range(args.repeats):
            spent.update(dict.fromkeys(spent, 0.0))
            started = time.perf_counter()
            check_network(config, mode="full", jobs=1)
            total = time.perf_counter() - started
            if best is None or total < best[0]:
                best = (total, dict(spent))
        print(f"| {name} | {best[0]:.3f} | {best[1]['evaluate']:.3f} | "
              f"{best[1]['_verify']:.3f} |")


if __name__ == "__main__":
    main()
