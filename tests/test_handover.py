"""A worker hands a pass's values over through shared memory (gradcheck.handover): what arrives is
what was computed, bit for bit, wherever an item's place falls (also across the end of the
memory); no two items a worker may compute at once share memory; and a check whose places wrap
around again and again gives the report one process gives."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck
from conftest import CONFIGS
from gradcheck import fanout, handover, parallel
from gradcheck.engine.base import Perturbed
from gradcheck.handover import Placed, SharedValues
from gradcheck.render.json import render_json


def _values(count: int, seed: int) -> Perturbed:
    rng = np.random.default_rng(seed)
    return Perturbed(rng.normal(size=count), rng.normal(size=count), None,
                     rng.random(count) < 0.5, rng.random(count))


def _same(a: Perturbed, b: Perturbed) -> bool:
    return all(np.array_equal(getattr(a, name), getattr(b, name))
               for name in ("plus", "minus", "kinked", "scale")) and b.step is None


@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=30),
       capacity=st.integers(1, 120), seed=st.integers(0, 9))
@settings(max_examples=60, deadline=None)
def test_values_arrive_bit_for_bit_wherever_their_place_falls(sizes, capacity, seed):
    shared = SharedValues(sizes, capacity)
    for index, count in enumerate(sizes):
        values = _values(count, seed * 1000 + index)
        sent = shared.put(index, values)
        if count > shared.capacity:
            assert sent is values, "an item larger than the memory travels down the pipe"
        else:
            assert isinstance(sent, Placed) and _same(values, shared.take(sent))


def test_a_place_that_runs_past_the_end_continues_at_the_start():
    shared = SharedValues([7, 6], 10)
    shared.put(0, _values(7, 0))
    placed = shared.put(1, _values(6, 1))  # elements 7..12: 7, 8, 9 then 0, 1, 2
    assert placed == Placed(7, 6) and _same(_values(6, 1), shared.take(placed))


def test_values_of_another_dtype_or_shape_travel_as_they_are():
    shared = SharedValues([4, 4], 64)
    odd = Perturbed(np.zeros(4, np.float32), np.zeros(4), None, np.zeros(4, bool), np.zeros(4))
    assert shared.put(0, odd) is odd
    two_d = Perturbed(np.zeros(4), np.zeros(4), None, np.zeros((4, 1), bool), np.zeros(4))
    assert shared.put(1, two_d) is two_d


@given(sizes=st.lists(st.integers(1, 50), min_size=2, max_size=40), ahead=st.integers(1, 90),
       processes=st.integers(1, 3), order=st.randoms(use_true_random=False))
@settings(max_examples=80, deadline=None)
def test_no_two_items_in_flight_ever_share_memory(sizes, ahead, processes, order):
    # The claim rule of parallel's board, driven by a caller that takes results in order at
    # random moments: whatever is claimed and not yet taken never overlaps in the memory.
    window = ahead * processes
    shared = SharedValues(sizes, window)
    board = parallel._Board(__import__("multiprocessing").get_context("fork"), 1)
    before = list(np.cumsum([0, *sizes]))
    board.start(len(sizes), window, before)
    taken, claimed = 0, []
    while taken < len(sizes):
        if order.random() < 0.6:
            index = board.claim(0)
            if isinstance(index, int):
                claimed.append(index)
                live = [i for i in claimed if i >= taken]
                cells = [set(range(shared.capacity)).intersection(
                    (int(before[i]) + k) % shared.capacity for k in range(sizes[i]))
                    for i in live if sizes[i] <= shared.capacity]
                assert sum(map(len, cells)) == len(set().union(*cells)), (live, sizes, window)
                continue
        if taken in claimed:
            taken += 1
            board.took(taken)


@pytest.mark.skipif(not parallel.can_fork(), reason="worker processes need fork")
@pytest.mark.parametrize("config", ["lenet.yaml", "broken/plugin_buggy.yaml"])
def test_a_check_whose_places_wrap_around_again_and_again_gives_one_process_report(
        monkeypatch, config):
    # 300 elements a process: lenet's passes (up to 4096 elements) are placed round the memory
    # many times over, and the larger ones travel down the pipe.
    path = CONFIGS / config
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    one = render_json(gradcheck.check_network(path, mode="full", jobs=1, seed=3))
    monkeypatch.setattr(fanout, "AHEAD_ELEMENTS", 300)
    assert render_json(gradcheck.check_network(path, mode="full", jobs=2, seed=3)) == one


def test_the_kept_memory_serves_one_map_at_a_time():
    # Kept for the next map, never lent twice: two maps at once (two checks in two threads)
    # must not write into the same memory; and one memory is kept, however many were lent.
    first, second = SharedValues([100], 100), SharedValues([100], 100)
    assert first._memory is not second._memory
    lent = first._memory
    first.release()
    second.release()
    assert len(handover._kept) == 1
    third = SharedValues([50], 50)
    assert third._memory is lent and not handover._kept
    third.put(0, _values(50, 3))
    assert _same(_values(50, 3), third.take(Placed(0, 50)))
    third.release()
    assert handover._kept == [lent]
