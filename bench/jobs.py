"""``--jobs``: a full check of each bench network (N1..N4 of bench/bench.py) with one process and
with two, measured in one run.

    .venv/bin/python bench/jobs.py [--repeats N] [--jobs J]

One BLAS thread per process, as the ``gradcheck`` command and ``make bench`` run it (unless
``OPENBLAS_NUM_THREADS`` and its kin are set): with OpenBLAS's default of one thread per core,
each of a 2-job check's processes spreads its products over both cores, and N3 with 2 jobs
measured 1.14-1.20x instead of 1.67-1.72x.

Each network is checked with ``jobs=1`` and ``jobs=J`` (2 by default) alternately, N rounds (3
by default), each timed check after an untimed one-process one (``best_times``), and each side
keeps its best time: on a shared machine a burst of load from other work falls on both sides
alike. Every check also confirms that the two JSON reports are the same bytes. The last column
says what ``jobs="auto"`` (the command's default) does for the network, read from the report's
events (what ``-v`` prints). Prints a Markdown table.

Then, for network N3, the CPU time of a check with 1 and 2 jobs (the workers' included), and
what a second process can give on this machine at best, each figure the best of the rounds: a
one-process check in a forked child against the same check in its parent (the cost of the fork:
every page the child first writes is copied), the same in a child that first hands its freed
heap pages back as a worker does (``resources.hand_back_freed_pages``), and two independent
one-process checks started together against one alone (what the cores share).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gradcheck.cli import single_threaded_blas  # noqa: E402  (imports no numpy)

single_threaded_blas(os.environ)  # before numpy loads: it reads them once

from bench import NETWORKS  # noqa: E402  (bench/bench.py, next to this file)

from gradcheck.check import check_network  # noqa: E402
from gradcheck.parallel import available_cores  # noqa: E402
from gradcheck.render.json import render_json  # noqa: E402
from gradcheck.resources import hand_back_freed_pages, reuse_freed_memory  # noqa: E402


def timed(config: dict, jobs) -> tuple[float, str, list[str]]:
    started = time.perf_counter()
    report = check_network(config, mode="full", jobs=jobs)
    return time.perf_counter() - started, render_json(report), report.events


def best_times(config: dict, jobs: int, repeats: int, cores: bool = False) -> dict:
    """The best seconds of a full check of ``config`` with 1 and with ``jobs`` processes, over
    ``repeats`` rounds that run each once, in turn; exits if their JSON reports differ. With
    ``cores``, each round also times a one-process check in a forked child and two at once in
    two (the longer), and "shared" is the median of the rounds' ratios of the two: how much this
    machine's second core was taken by other work during the rounds (another tenant's load on
    it slows two processes, not one). A median, not a best: one quiet round says little of the
    others.

    Each timed check follows an untimed one-process check. After a fork (a check with workers,
    the children of ``cores``) every page this process writes faults once more, whichever check
    comes next: a one-process N3 check right after a 2-job one took 7.6 ms longer (2,089 more
    page faults), which made the one-process side look slower than it is."""
    best = {1: float("inf"), jobs: float("inf")}
    shared = []
    reports = {}
    for _ in range(repeats):
        for count in best:  # 1 and jobs ("shared" is added after the rounds)
            timed(config, 1)
            seconds, reports[count], _ = timed(config, count)
            best[count] = min(best[count], seconds)
        if cores:
            alone = forked_check_seconds(config)
            shared.append(side_by_side_seconds(config) / alone)
    if reports[1] != reports[jobs]:
        sys.exit(f"{config.get('name', 'network')}: the JSON reports of jobs 1 and jobs {jobs} "
                 "differ")
    if cores:
        best["shared"] = statistics.median(shared)
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
    ceiling(dict(NETWORKS["N3"], name="N3", seed=0), args.repeats)


def forked_check_seconds(config: dict, hand_back: bool = False) -> float:
    """One full check (one process) of ``config`` in a child forked from this process; with
    ``hand_back``, the child first hands its freed heap pages back, as a worker does."""
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(readable)
        if hand_back:
            hand_back_freed_pages()
        seconds, _, _ = timed(config, 1)
        os.write(writable, f"{seconds!r}".encode())
        os._exit(0)
    os.close(writable)
    with os.fdopen(readable) as result:
        seconds = float(result.read())
    os.waitpid(pid, 0)
    return seconds


def side_by_side_seconds(config: dict) -> float:
    """The longer of two full checks (one process each) run at once, in two forked children."""
    pids, pipes = [], []
    start_readable, start_writable = os.pipe()
    for _ in range(2):
        readable, writable = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.read(start_readable, 1)  # both start together
            seconds, _, _ = timed(config, 1)
            os.write(writable, f"{seconds!r}".encode())
            os._exit(0)
        os.close(writable)
        pids.append(pid)
        pipes.append(readable)
    os.write(start_writable, b"go")
    times = []
    for pid, readable in zip(pids, pipes):
        with os.fdopen(readable) as result:
            times.append(float(result.read()))
        os.waitpid(pid, 0)
    return max(times)


def cpu_seconds(config: dict, jobs: int) -> float:
    """User + system CPU seconds of a full check of ``config``, its workers' included: a worker
    is counted once it is reaped, which the check does not wait for (``Workers.close``), so this
    waits until none is left."""
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    timed(config, jobs)
    while multiprocessing.active_children():  # reaps those that have ended
        time.sleep(0.001)
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))


def ceiling(config: dict, repeats: int) -> None:
    timed(config, 1)  # warm: the figures below compare warm processes
    best = {"parent": float("inf"), "child": float("inf"), "handed back": float("inf"),
            "alone": float("inf"), "pair": float("inf")}
    for _ in range(repeats):
        timed(config, 1)  # this process's pages writable again after the last round's forks
        best["parent"] = min(best["parent"], timed(config, 1)[0])
        best["child"] = min(best["child"], forked_check_seconds(config))
        best["handed back"] = min(best["handed back"], forked_check_seconds(config, True))
        forked_check_seconds(config)  # the children below start from a forked state too
        best["alone"] = min(best["alone"], forked_check_seconds(config))
        best["pair"] = min(best["pair"], side_by_side_seconds(config))
    cpu = {jobs: min(cpu_seconds(config, jobs) for _ in range(repeats)) for jobs in (1, 2)}
    print(f"\nN3, CPU of a full check (best of {repeats}): jobs 1 {cpu[1]:.3f} s, jobs 2 "
          f"{cpu[2]:.3f} s ({cpu[2] / cpu[1]:.2f}x)")
    fork, share = best["child"] / best["parent"], best["pair"] / best["alone"]
    handed = best["handed back"] / best["parent"]
    print(f"N3, one process each, best of {repeats}: in this process {best['parent']:.3f} s, "
          f"in a freshly forked child {best['child']:.3f} s ({fork:.2f}x), one that first "
          f"hands its freed pages back (as a worker does) {best['handed back']:.3f} s "
          f"({handed:.2f}x); one child alone {best['alone']:.3f} s, two children at once "
          f"{best['pair']:.3f} s ({share:.2f}x)")


if __name__ == "__main__":
    main()
