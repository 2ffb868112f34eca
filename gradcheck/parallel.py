"""Worker processes for ``--jobs``: forked copies of the checking process that evaluate work
items and send the results back; the caller gets them in the order of the items.

Forked, not spawned: a worker starts with everything the parent holds — the built network, its
plugins, the clean pass — so nothing is rebuilt or pickled on the way in, and the library API
(``check_layer`` on an instance, ``check_function`` on closures) works as the CLI does. A unit
that holds an operating-system resource that cannot be shared (an ``external`` layer's child
process) gets its ``reopen()`` called in each worker first (see ``gradcheck.contract``). Every
worker closes its units and ends once no work is left for it, or when the work fails: none
outlives the map (one that does not end within STOP_SECONDS of being told is killed).

Items are claimed, not sent: each process (every worker, and the caller when it helps) takes the
next item from a counter they share (``_Board``), so a worker starts its next item the moment it
has sent a result, with no round trip to the caller. The caller needs no thread to feed the
workers: such a thread needs the interpreter lock, which the caller holds while it computes
(measured on N3 with 2 jobs, with a feeding thread: the worker waited 6 ms of a 0.15 s check for
its next item).
"""

from __future__ import annotations

import gc
import itertools
import mmap
import os
import pickle
import signal
import time
import traceback

from gradcheck.resources import hand_back_freed_pages
from gradcheck.usercode import invoke

# How long a worker may take to finish its current item and close its units once told to stop,
# before it is killed.
STOP_SECONDS = 10.0
# How far the work may run ahead of the caller, in items per process computing them (each
# worker, and the caller when it helps), unless ``map`` is given sizes: results wait in the
# caller's process until it takes them, so this bounds the memory they hold.
AHEAD_PER_PROCESS = 16
# What a worker's end of its pipe may hold unread (the system caps it: net.core.wmem_max on
# Linux). Measured on N3 with 2 jobs: with the default (about 200 KiB), the worker waited 5-7 ms
# in the middle of sending while the caller judged a large target; its results there take
# 0.03-0.13 MiB each.
SEND_BUFFER_BYTES = 4 * 2**20
# How often a caller waiting for a result looks up to ask ``stop()``.
POLL_SECONDS = 0.05
# How often a worker a window ahead of the caller looks whether it may claim again.
FULL_WINDOW_POLL_SECONDS = 0.002


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    """Whether worker processes can be forked here (POSIX); elsewhere a check runs in one."""
    # What multiprocessing's "fork" start method needs, without importing multiprocessing
    # (about 0.02 s): a check that never starts a worker does not pay for it.
    return hasattr(os, "fork")


class WorkerFailed(Exception):
    """A worker raised something that could not be sent back as it was: its traceback."""


class WorkerDied(WorkerFailed):
    """A worker ended without sending a result: ``how`` (its exit status or signal), and
    ``item``, the item it was computing (None if it was computing none)."""

    def __init__(self, how: str, item=None):
        super().__init__(f"a worker process ended unexpectedly ({how})")
        self.how = how
        self.item = item


_FULL = object()  # ``_Board.claim``: the window is full; claim again once the caller takes one
_FINISHED = (-2, True, None)  # a worker's last message: its units are closed, it ends
_FIRST = -3  # the index the result of map's ``first`` comes under
# The board's cells: the next item to claim, the items the caller has taken, whether the
# dispatch stopped, how many items there are, the window; then the item each worker claimed last.
_NEXT, _TAKEN, _STOPPED, _TOTAL, _WINDOW, _CLAIMED = range(6)


class _Board:
    """The counters every process of a ``Workers`` shares (memory mapped before the fork), under
    one lock: which item is claimed next, and how far the caller has taken the results."""

    def __init__(self, context, workers: int):
        self._memory = mmap.mmap(-1, 8 * (_CLAIMED + workers))  # shared: MAP_SHARED
        self._cells = memoryview(self._memory).cast("q")
        self._lock = context.Lock()

    def start(self, total: int, window: int, before: list[int]) -> None:
        """A map of ``total`` items; ``before[i]``: the sizes of the items before item i, whose
        results may wait in the caller at once up to ``window`` (one item always may)."""
        self.follow(before)
        with self._lock:
            cells = self._cells
            cells[_NEXT] = cells[_TAKEN] = cells[_STOPPED] = 0
            cells[_TOTAL], cells[_WINDOW] = total, window
            for slot in range(_CLAIMED, len(cells)):
                cells[slot] = -1

    def follow(self, before: list[int]) -> None:
        """In each process claiming items: ``before`` of the map (see ``start``)."""
        self._before = before

    def claim(self, worker: int | None = None):
        """The index of the next item, now the claimer's; ``_FULL`` when the claimer must wait
        for the caller to take a result; None when every item is claimed or the dispatch
        stopped."""
        with self._lock:
            cells = self._cells
            index = cells[_NEXT]
            if cells[_STOPPED] or index >= cells[_TOTAL]:
                return None
            taken = cells[_TAKEN]
            if index > taken and self._before[index + 1] - self._before[taken] > cells[_WINDOW]:
                return _FULL
            cells[_NEXT] = index + 1
            if worker is not None:
                cells[_CLAIMED + worker] = index
            return index

    def took(self, count: int) -> None:
        """The caller has taken the results of the first ``count`` items."""
        with self._lock:
            self._cells[_TAKEN] = count

    def stop(self) -> int:
        """End the dispatch; returns how many items were claimed (all that will be computed)."""
        with self._lock:
            self._cells[_STOPPED] = 1
            return self._cells[_NEXT]

    def claimed_by(self, worker: int) -> int:
        """The item worker ``worker`` claimed last (-1: none; ``_FIRST``: map's ``first``)."""
        with self._lock:
            return self._cells[_CLAIMED + worker]

    def computing_first(self, worker: int) -> None:
        """Worker ``worker`` computes map's ``first`` item (``claimed_by`` says so if it dies)."""
        with self._lock:
            self._cells[_CLAIMED + worker] = _FIRST


class Workers:
    """``count`` forked processes, each running ``work(item)`` on the items it claims.

    ``units``: the network's units, reopened in each worker (``reopen()``) before any work and
    closed (``close()``) when it stops. ``receive(value)``: what this process makes of each
    value a worker sends, as it arrives (default: the value itself); a value may refer to memory
    the worker writes again once the caller has taken it, which ``receive`` copies out. Use as a
    context manager.
    """

    def __init__(self, count: int, work, units=(), receive=None):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._board = _Board(context, count)
        self._receive_value = receive or (lambda value: value)
        self._conns, self._procs = [], []
        self._mapped = False
        # Frozen objects are never visited by a collection: a worker's garbage collector leaves
        # the pages it shares with this process alone instead of copying all of them.
        gc.freeze()
        try:
            for worker in range(count):
                ours, theirs = context.Pipe()
                _widen_send_buffer(theirs)
                proc = context.Process(target=_serve,
                                       args=(theirs, work, list(units), self._board, worker),
                                       daemon=True)
                proc.start()
                theirs.close()
                self._conns.append(ours)
                self._procs.append(proc)
        finally:
            gc.unfreeze()
        self._working = list(self._conns)  # the workers that have not sent _FINISHED
        self._items, self._first_item = [], None  # what ``map`` was given
        self._done: dict[int, tuple[bool, object]] = {}  # results not yet taken, by index
        self._first: tuple[bool, object] | None = None  # the result of ``first``
        self._dead: tuple[int | None, WorkerDied] | None = None  # see ``_died``

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def map(self, items, stop=None, helper=None, first=None, sizes=None,
            ahead=AHEAD_PER_PROCESS):
        """Yield ``(item, work(item))`` in the order of ``items``, as soon as each and all before
        it are done (once per ``Workers``). ``stop()``, when it returns True, ends the dispatch of
        new items; what was already claimed still arrives. A worker's exception is raised here,
        in its item's turn (an exception of a later item never hides the results before it).

        ``helper(item)``, when given, is this process's share of the work: instead of waiting
        for a result a worker is still computing, this process claims and computes the next item
        itself (its exception, too, is raised in its item's turn): this process and N - 1
        workers keep N cores busy, where N workers and a waiting caller would share them.

        ``first``, when given, is an item the first worker computes before it claims any:
        outside the order, so that the results of the others are taken while it is computed
        (a long item in the order holds every result after it back: they wait in this process,
        and the window fills). Its result: ``first_result``.

        ``sizes``: each item's share of the window of results that may wait in this process,
        ``ahead`` per process computing items (default: 1 per item, AHEAD_PER_PROCESS)."""
        if self._mapped:
            raise RuntimeError("Workers.map runs once per Workers")
        self._mapped = True
        items = list(items)
        board = self._board
        before = list(itertools.accumulate(sizes or [1] * len(items), initial=0))
        board.start(len(items), ahead * (len(self._conns) + (helper is not None)), before)
        for worker, conn in enumerate(self._conns):
            conn.send((items, first if worker == 0 else None, before))
        self._items, self._first_item = items, first
        done = self._done
        end = None  # once the dispatch stopped: how many items were claimed
        for following in range(len(items)):
            while following not in done:
                self._raise_death(following)
                if end is None and stop is not None and stop():
                    end = board.stop()
                if end is not None and following >= end:
                    return  # stopped: nothing more will come
                index = board.claim() if helper is not None and end is None else None
                if isinstance(index, int):
                    done[index] = _attempt(helper, items[index])
                    self._receive(0.0, following)
                elif self._receive(POLL_SECONDS, following):
                    end = board.stop()
            ok, value = done.pop(following)
            board.took(following + 1)
            if not ok:
                raise value
            yield items[following], value

    def first_result(self) -> tuple[bool, object]:
        """(True, the value) of map's ``first`` item, or (False, the exception it raised),
        waiting for it; WorkerDied if the worker computing it ended instead."""
        if self._first_item is None or not self._conns:
            raise RuntimeError("no worker was given a first item")
        while self._first is None:
            self._raise_death(len(self._items))
            self._receive(POLL_SECONDS, len(self._items))
        return self._first

    def _raise_death(self, following: int) -> None:
        """Raise a dead worker's failure once the caller needs what it was computing: item
        ``following``, or anything, if it was computing no item of the order."""
        if self._dead is not None and self._dead[0] in (None, following):
            raise self._dead[1]

    def _receive(self, wait_seconds: float, following: int) -> bool:
        """Store every result the workers have sent, waiting up to ``wait_seconds`` for one;
        True if a worker was found dead instead (``_dead``), the first since ``following`` was
        taken. A worker's failure outside any item is raised."""
        from multiprocessing.connection import wait

        for conn in wait(self._working, timeout=wait_seconds):
            try:
                while True:
                    index, ok, value = conn.recv()
                    if index == _FINISHED[0]:
                        self._working.remove(conn)
                        break
                    if index < 0 and index != _FIRST:
                        raise value  # it failed outside any item (reopening its units)
                    if ok:
                        value = self._receive_value(value)
                    if index == _FIRST:
                        self._first = (ok, value)
                    else:
                        self._done[index] = (ok, value)
                    if not conn.poll():
                        break
            except (EOFError, OSError):  # its end of the pipe closed: it is gone
                self._working.remove(conn)
                if self._dead is None:
                    self._dead = self._died(conn, following)
                    return True
        return False

    def close(self) -> None:
        """Tell every worker to stop; kill any that does not within STOP_SECONDS. What a worker
        still sends (the item it was computing) is read and dropped, so that none waits on a
        full pipe. A worker that said it finished has closed its units and is exiting: it is
        reaped without waiting for the system to take its memory down (about 3 ms a worker on
        this project's VM), here if it has exited, else by the next worker start or at exit."""
        from multiprocessing.connection import wait

        self._board.stop()
        finished = [conn not in self._working for conn in self._conns]
        busy = [conn for conn, done in zip(self._conns, finished) if not done]
        _tell_to_stop(busy)
        deadline = time.monotonic() + STOP_SECONDS
        while busy and time.monotonic() < deadline:
            for conn in wait(busy, timeout=max(0.0, deadline - time.monotonic())):
                try:
                    if conn.recv()[0] == _FINISHED[0]:
                        busy.remove(conn)
                except (EOFError, OSError):
                    busy.remove(conn)
        for proc, done in zip(self._procs, finished):
            proc.join(0.0 if done else max(0.0, deadline - time.monotonic()))
            if not done and proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs, self._working = [], [], []

    def _died(self, conn, following: int) -> tuple[int | None, WorkerDied]:
        """The worker behind ``conn`` ended: (the index of the item of the order it was
        computing, or None; its WorkerDied, naming the item, ``first`` included)."""
        worker = self._conns.index(conn)
        proc = self._procs[worker]
        proc.join(STOP_SECONDS)
        code = proc.exitcode
        if code is not None and code < 0:
            how = f"killed by signal {signal.Signals(-code).name}"
        else:
            how = f"exit status {code}" if code is not None else "still running"
        index = self._board.claimed_by(worker)
        if index == _FIRST and self._first is None:
            return None, WorkerDied(how, self._first_item)
        if index >= following and index not in self._done:
            return index, WorkerDied(how, self._items[index])
        return None, WorkerDied(how)


def _widen_send_buffer(conn) -> None:
    """Let ``conn`` hold SEND_BUFFER_BYTES unread (as far as the system allows): a worker sends
    on while the caller is busy, instead of waiting in the middle of a send."""
    import socket

    with socket.socket(fileno=os.dup(conn.fileno())) as end:
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


def _tell_to_stop(conns) -> None:
    """Ask each worker to stop once it has sent what it computes (it may have stopped)."""
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass


def _attempt(work, item) -> tuple[bool, object]:
    """``work(item)`` in this process, as a worker reports it: (True, value) or (False, the
    exception), to be raised in the item's turn."""
    try:
        return True, work(item)
    except Exception as exc:
        return False, exc


def _serve(conn, work, units, board: _Board, worker: int) -> None:
    """A worker's life: reopen the units; claim and evaluate the items of the map, sending each
    result; once no item is left to claim (or when told to stop), close the units, say so
    (``_FINISHED``) and end."""
    hand_back_freed_pages()
    status = 0
    try:
        for unit in units:
            reopen = getattr(unit, "reopen", None)
            if callable(reopen):
                invoke(unit, "reopen", reopen)
        message = conn.recv()
        if message is not None:
            items, first, before = message
            board.follow(before)
            if first is not None:
                board.computing_first(worker)
                _compute_and_send(conn, work, _FIRST, first)
            _claim_and_compute(conn, work, board, worker, items)
    except (EOFError, KeyboardInterrupt):
        status = 1
    except BaseException as exc:
        status = 1
        try:
            conn.send((-1, False, _portable(exc)))
        except (OSError, ValueError):
            pass
    # Ending at once, not when told to: the caller finishes its last results meanwhile, instead
    # of waiting for this process to close its units.
    for unit in units:
        close = getattr(unit, "close", None)
        if callable(close):
            try:
                close()
            except BaseException:
                status = 1
    try:
        conn.send(_FINISHED)
    except (OSError, ValueError):
        pass
    conn.close()
    # No interpreter shutdown: the parent's atexit handlers and finalizers (its external
    # children among them) belong to the parent.
    os._exit(status)


def _claim_and_compute(conn, work, board: _Board, worker: int, items: list) -> None:
    """Compute items of ``items`` while there are any to claim; a window ahead of the caller,
    wait for it (or for the message to stop)."""
    while True:
        index = board.claim(worker)
        if index is None:
            return
        if index is _FULL:
            if conn.poll(FULL_WINDOW_POLL_SECONDS):
                return  # told to stop
            continue
        _compute_and_send(conn, work, index, items[index])


def _compute_and_send(conn, work, index: int, item) -> None:
    try:
        conn.send((index, True, work(item)))
    except BaseException as exc:  # sent back, raised in the parent
        conn.send((index, False, _portable(exc)))


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (gradcheck's errors do), else its traceback as text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return WorkerFailed("".join(traceback.format_exception(exc)).rstrip())
