"""``--jobs``: a full check of each bench network (N1..N4 of bench/bench.py) with one process and
with two, measured in one run.

    .venv/bin/python bench/jobs.py [--repeats N] [--jobs J]

Each network is checked with ``jobs=1`` and ``jobs=J`` (2 by default) alternately, N rounds (3
by default), and each side keeps its best time: on a shared machine a burst of load from other
work falls on both sides alike. Every check also confirms that the two JSON reports are the same
bytes. The last column says what ``jobs="auto"`` (the command's default) does for the network,
read from the report's events (what ``-v`` prints). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import NETWORKS  # noqa: E402  (bench/bench.py, next to this file)

from gradcheck.check import check_network  # noqa: E402
from gradcheck.parallel import available_cores  # noqa: E402
from gradcheck.render.json import render_json  # noqa: E402
from gradcheck.resources import reuse_freed_memory  # noqa: E402


def timed(config: dict, jobs) -> tuple[float, str, list[str]]:
    started = time.perf_counter()
    report = check_network(config, mode="full", jobs=jobs)
    return time.perf_counter() - started, render_json(report), report.events


def best_times(config: dict, jobs: int, repeats: int) -> dict[int, float]:
    """The best seconds of a full check of ``config`` with 1 and with ``jobs`` processes, over
    ``repeats`` rounds that run each once, in turn; exits if their JSON reports differ."""
    best = {1: float("inf"), jobs: float("inf")}
    reports = {}
    for _ in range(repeats):
        for count in best:
            seconds, reports[count], _ = timed(config, count)
            best[count] = min(best[count], seconds)
    if reports[1] != reports[jobs]:
        sys.exit(f"{config.get('name', 'network')}: the JSON reports of jobs 1 and jobs {jobs} "
                 "differ")
    return best


def auto_choice(events: list[str]) -> str:
    said = [e for e in events if e.startswith("jobs:")]
    return said[0].split(",")[0].removeprefix("jobs: ") if said else "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    reuse_freed_memory()
    print(f"cores available: {available_cores()}; best of {args.repeats}, alternating\n")
    print(f"| net | jobs 1 | jobs {args.jobs} | speed-up | auto |")
    print("|---|---|---|---|---|")
    for name, layers in NETWORKS.items():
        config = dict(layers, name=name, seed=0)
        best = best_times(config, args.jobs, args.repeats)
        _, _, events = timed(config, "auto")
        ratio = best[1] / best[args.jobs]
        print(f"| {name} | {best[1]:.2f} s | {best[args.jobs]:.2f} s | {ratio:.2f}x | "
              f"{auto_choice(events)} |")


if __name__ == "__main__":
    main()
