"""What a page of memory costs this process after a fork: the tax ``--jobs`` pays on top of the
work it shares out (README, "Where the rest goes").

    .venv/bin/python bench/page_costs.py [--pages N] [--repeats R]

Writes one byte into each of N private anonymous pages (4,000 by default, about what one process
of a 2-job N3 check writes after its fork) and prints microseconds a page, the best and the
median of R rounds, for each state the page can be in:

- already written, no fork since (the one-process case);
- after a fork whose child has ended (the page is this process's alone again, but the fork
  made it read-only: one fault, no copy);
- after a fork whose child still maps it (one fault and a 4 KiB copy);
- after a fork of a page marked ``MADV_WIPEONFORK`` (the child gets zeros, this process keeps
  its page writable: no fault);
- a page handed back to the system (``MADV_DONTNEED``; the next write gets a fresh zeroed page:
  what a worker pays for memory its ``malloc_trim`` handed back);
- the same in a region advised ``MADV_HUGEPAGE``, where the system may fault in 2 MiB at once
  (transparent huge pages; the line says how much of the region they backed);
- a handed-back page, and a page a live child still maps, each faulted in ahead by one
  ``MADV_POPULATE_WRITE`` call for the whole region (Linux 5.14): the same work as the faults
  without a trap per page. The time includes that call.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import statistics
import sys
import time

import numpy as np

PAGE = mmap.PAGESIZE
# linux/mman.h: MADV_WIPEONFORK and MADV_KEEPONFORK (Linux 4.14); Python's mmap does not name them.
MADV_WIPEONFORK, MADV_KEEPONFORK = 18, 19
MADV_POPULATE_WRITE = 23  # linux/mman.h, Linux 5.14
HUGE_PAGE = 2 * 2**20


def _timed_write(pages: np.ndarray, value: int) -> float:
    started = time.perf_counter()
    pages[::PAGE] = value
    return time.perf_counter() - started


def _with_child(pages: np.ndarray, value: int, child_ends_first: bool,
                write=_timed_write) -> float:
    """Fork a child that waits; time this process's writes (``write``) before or after the
    child ends."""
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(readable, 1)
        os._exit(0)
    if child_ends_first:
        os.write(writable, b"x")
        os.waitpid(pid, 0)
        seconds = write(pages, value)
    else:
        seconds = write(pages, value)
        os.write(writable, b"x")
        os.waitpid(pid, 0)
    os.close(readable)
    os.close(writable)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("page_costs.py measures Linux's fork and madvise; this is " + sys.platform)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    size = args.pages * PAGE
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    pages = np.frombuffer(region, dtype=np.uint8)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    _timed_write(pages, 1)

    def wiped_on_fork(value: int) -> float:
        if libc.madvise(address, size, MADV_WIPEONFORK) != 0:
            return float("nan")  # a kernel before 4.14
        try:
            return _with_child(pages, value, child_ends_first=False)
        finally:
            libc.madvise(address, size, MADV_KEEPONFORK)

    def handed_back(value: int) -> float:
        region.madvise(mmap.MADV_DONTNEED)
        return _timed_write(pages, value)

    def populated_write(pages: np.ndarray, value: int) -> float:
        started = time.perf_counter()
        if libc.madvise(address, size, MADV_POPULATE_WRITE) != 0:
            return float("nan")  # a kernel before 5.14
        return time.perf_counter() - started + _timed_write(pages, value)

    def handed_back_populated(value: int) -> float:
        region.madvise(mmap.MADV_DONTNEED)
        return populated_write(pages, value)

    huge_size = -(-size // HUGE_PAGE) * HUGE_PAGE
    huge_region = mmap.mmap(-1, huge_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    huge_region.madvise(mmap.MADV_HUGEPAGE)
    huge_pages = np.frombuffer(huge_region, dtype=np.uint8)
    huge_backed = []

    def handed_back_huge(value: int) -> float:
        huge_region.madvise(mmap.MADV_DONTNEED)
        seconds = _timed_write(huge_pages, value) * size / huge_size
        huge_backed.append(_anon_huge_bytes() / huge_size)
        return seconds

    states = {
        "written before, no fork": lambda v: _timed_write(pages, v),
        "after a fork, child ended": lambda v: _with_child(pages, v, child_ends_first=True),
        "after a fork, child alive (copy)": lambda v: _with_child(pages, v,
                                                                  child_ends_first=False),
        "after a fork, MADV_WIPEONFORK": wiped_on_fork,
        "handed back (fresh page)": handed_back,
        "handed back, MADV_HUGEPAGE region": handed_back_huge,
        "handed back, populated in one call": handed_back_populated,
        "after a fork, child alive, populated in one call": lambda v: _with_child(
            pages, v, child_ends_first=False, write=populated_write),
    }
    seconds = {name: [] for name in states}
    for round_ in range(args.repeats):
        for name, write in states.items():  # interleaved: load falls on every state alike
            seconds[name].append(write(2 + round_ % 100))
    print(f"{args.pages} pages of {PAGE} bytes, best and median of {args.repeats} rounds\n")
    print("| page | µs a page, best | median |")
    print("|---|---|---|")
    for name, times in seconds.items():
        print(f"| {name} | {min(times) / args.pages * 1e6:.2f} | "
              f"{statistics.median(times) / args.pages * 1e6:.2f} |")
    print(f"\nhuge pages backed {statistics.median(huge_backed):.0%} of the MADV_HUGEPAGE region "
          "(median of the rounds)")


def _anon_huge_bytes() -> int:
    """This process's memory backed by transparent huge pages."""
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    main()
