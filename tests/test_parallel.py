"""Worker processes for --jobs: results in order, errors raised in the parent, a stop that
ends the dispatch, and units reopened and closed in every worker."""

from __future__ import annotations

import os
import time

import pytest

from conftest import gone
from gradcheck.errors import LayerError
from gradcheck.parallel import (AHEAD_PER_PROCESS, WorkerDied, WorkerFailed, Workers,
                                available_cores, can_fork)

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need fork")


def _square_slowly(item):
    # Later items finish first, so the order of results is the pool's doing, not the work's.
    time.sleep(0.002 * (10 - item % 10))
    return item * item, os.getpid()


def test_results_come_back_in_the_order_of_the_items_from_several_processes():
    with Workers(2, _square_slowly) as workers:
        got = list(workers.map(range(20)))
    assert [item for item, _ in got] == list(range(20))
    assert [value for _, (value, _) in got] == [i * i for i in range(20)]
    assert len({pid for _, (_, pid) in got}) == 2 and os.getpid() not in {
        pid for _, (_, pid) in got}


def _fails_at_three(item):
    if item == 3:
        raise LayerError("layer 'x': item 3 is wrong.", hint="fix it")
    return item


def test_a_workers_gradcheck_error_is_raised_in_the_parent_as_it_was():
    with Workers(2, _fails_at_three) as workers:
        with pytest.raises(LayerError) as info:
            list(workers.map(range(6)))
    assert info.value.message == "layer 'x': item 3 is wrong." and info.value.hint == "fix it"


def _late_items_fail_first(item):
    # Item 5 fails at once, while items 0-4 take a while: the failure arrives first.
    if item == 5:
        raise LayerError("layer 'x': item 5 is wrong.")
    time.sleep(0.05)
    return item


def test_a_workers_error_is_raised_in_its_items_turn_after_the_results_before_it():
    got = []
    with Workers(2, _late_items_fail_first) as workers:
        with pytest.raises(LayerError, match="item 5"):
            for item, _ in workers.map(range(8)):
                got.append(item)
    assert got == [0, 1, 2, 3, 4]


def _large(item):
    return bytes(4 * 2**20)  # far more than a pipe holds


def test_closing_reads_what_a_busy_worker_still_sends_instead_of_waiting_on_it():
    workers = Workers(2, _large)
    results = workers.map(range(6))
    next(results)  # the other worker is still sending its result when we stop
    started = time.monotonic()
    workers.close()
    assert time.monotonic() - started < 5.0


class _Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(a)


def _raises_unpicklable(item):
    raise _Unpicklable("odd", 1)


def test_an_exception_that_cannot_travel_arrives_as_its_traceback():
    with Workers(1, _raises_unpicklable) as workers:
        with pytest.raises(WorkerFailed, match="_Unpicklable: odd"):
            list(workers.map([0]))


def test_stop_ends_the_dispatch_and_keeps_what_was_done_in_order():
    started = time.monotonic()
    with Workers(2, lambda item: time.sleep(0.05) or item) as workers:
        got = [item for item, _ in workers.map(range(100),
                                               stop=lambda: time.monotonic() > started + 0.2)]
    assert 0 < len(got) < 100 and got == list(range(len(got)))


class _Resource:
    """A unit whose reopen and close leave marks in files, per process."""

    def __init__(self, folder):
        self.folder = folder

    def reopen(self):
        (self.folder / f"reopen-{os.getpid()}").touch()

    def close(self):
        (self.folder / f"close-{os.getpid()}").touch()


def test_every_worker_reopens_and_closes_the_units_and_ends(tmp_path):
    unit = _Resource(tmp_path)
    workers = Workers(2, lambda item: os.getpid(), units=[unit])
    pids = {pid for _, pid in workers.map(range(8))}
    procs = list(workers._procs)
    workers.close()
    assert all(gone(p.pid) for p in procs)
    reopened = {p.name.split("-")[1] for p in tmp_path.glob("reopen-*")}
    closed = {p.name.split("-")[1] for p in tmp_path.glob("close-*")}
    assert reopened == closed == {str(p.pid) for p in procs} and pids <= {p.pid for p in procs}


def test_available_cores_is_at_least_one():
    assert available_cores() >= 1


def _finish_time(item):
    time.sleep(0.02)
    return time.monotonic()


def test_workers_keep_working_while_the_caller_is_busy_with_a_result():
    # The caller spends 0.3 s on the first result; the workers must not wait for it to ask
    # for the next (with one item each, sent only when the caller asked, two would finish).
    with Workers(2, _finish_time) as workers:
        results = workers.map(range(40))
        next(results)
        time.sleep(0.3)
        resumed = time.monotonic()
        finished = [done for _, done in results]
    assert sum(done < resumed for done in finished) >= 10


def test_workers_run_no_further_ahead_of_a_stalled_caller_than_the_window():
    # Results wait in the caller's process: how many it holds is bounded, however long it
    # stalls (a check's passes would otherwise pile up for the whole plan).
    with Workers(2, _finish_time) as workers:
        results = workers.map(range(60))
        next(results)
        time.sleep(0.8)  # time for all 60 at 0.02 s each on two workers
        resumed = time.monotonic()
        finished = [done for _, done in results]
    assert sum(done < resumed for done in finished) <= 1 + 2 * AHEAD_PER_PROCESS


def _slow_in_a_worker(item):
    time.sleep(0.05)
    return item * item, os.getpid()


def _quick_here(item):
    time.sleep(0.005)  # ten times quicker than the worker, and not done before it starts
    return item * item, os.getpid()


def test_the_caller_computes_items_while_it_waits_and_the_order_holds():
    # One worker, slow; the caller quick: it computes most items itself, not only its turn's.
    with Workers(1, _slow_in_a_worker) as workers:
        got = list(workers.map(range(30), helper=_quick_here))
    assert [item for item, _ in got] == list(range(30))
    assert [value for _, (value, _) in got] == [i * i for i in range(30)]
    here = [item for item, (_, pid) in got if pid == os.getpid()]
    assert len(here) >= 20 and len(here) < 30, "the worker computed some, the caller most"


def test_an_error_of_the_callers_own_item_is_raised_in_its_turn():
    got = []

    def fails_at_four_here(item):
        if item == 4:
            raise LayerError("layer 'x': item 4 is wrong.")
        return item, os.getpid()

    with Workers(1, _slow_in_a_worker) as workers:
        with pytest.raises(LayerError, match="item 4"):
            for item, _ in workers.map(range(12), helper=fails_at_four_here):
                got.append(item)
    assert got == [0, 1, 2, 3]


def test_a_stop_also_ends_what_the_caller_takes_on():
    started = time.monotonic()
    computed = []

    def here(item):
        computed.append(item)
        time.sleep(0.02)
        return item

    with Workers(1, lambda item: time.sleep(0.05) or item) as workers:
        got = [item for item, _ in workers.map(
            range(200), stop=lambda: time.monotonic() > started + 0.2, helper=here)]
    assert 0 < len(got) < 200 and got == list(range(len(got)))
    assert computed and max(computed) < len(got), "nothing computed after the stop is lost"


def test_the_caller_takes_on_no_item_beyond_the_window():
    # The worker never finishes item 0: however quick the caller is, it computes at most a
    # window of items ahead of the result it waits for.
    computed = []
    with Workers(1, lambda item: time.sleep(0.6 if item == 0 else 0) or item) as workers:
        results = workers.map(range(100), helper=lambda item: computed.append(item) or item)
        next(results)
        assert len(computed) < 2 * AHEAD_PER_PROCESS  # one worker and this process
        assert [item for item, _ in results] == list(range(1, 100))


@pytest.mark.parametrize("helping", [False, True])
def test_a_worker_that_dies_mid_item_fails_the_map_in_that_items_turn(helping):
    # The worker dies on the first item it claims: whoever computes the others, the map
    # yields what came before it in order, then fails instead of waiting for it forever.
    got = []
    workers = Workers(1, lambda item: os._exit(3))
    helper = (lambda item: time.sleep(0.005) or item) if helping else None  # leaves it items
    with pytest.raises(WorkerDied, match=r"ended unexpectedly \(exit status 3\)") as info:
        for item, _ in workers.map(range(40), helper=helper):
            got.append(item)
    procs = list(workers._procs)
    workers.close()
    assert all(gone(p.pid) for p in procs)
    assert got == list(range(len(got))) and len(got) <= info.value.item < 40, \
        "the failure names the item the worker was computing, one not yielded"
