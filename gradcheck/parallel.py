"""Worker processes for ``--jobs``: forked copies of the checking process that evaluate work
items and send the results back, in the order the items were given.

Forked, not spawned: a worker starts with everything the parent holds — the built network, its
plugins, the clean pass — so nothing is rebuilt or pickled on the way in, and the library API
(``check_layer`` on an instance, ``check_function`` on closures) works as the CLI does. A unit
that holds an operating-system resource that cannot be shared (an ``external`` layer's child
process) gets its ``reopen()`` called in each worker first (see ``gradcheck.contract``). Every
worker is stopped, and closes its units, when the work ends or fails: no process outlives it.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import threading
import time
import traceback

from gradcheck.usercode import invoke

# How long a worker may take to finish its current item and close its units once told to stop,
# before it is killed.
STOP_SECONDS = 10.0
# Items sent to a worker ahead of its results: with two, it starts the next the moment it has
# sent one (measured on N3 with 2 jobs: one item each left the workers idle a third of the time,
# waiting for the caller to ask for the next result).
IN_FLIGHT = 2
# How far, in items per process computing them (each worker, and the caller when it helps), the
# work may run ahead of the caller: results wait in this process until the caller takes them, so
# this bounds the memory they hold (a few targets' passes for a check; measured on N3 with 2 jobs:
# with 8, the caller filled the window with small passes while the worker computed a large one,
# then waited for it).
AHEAD_PER_PROCESS = 16
# How often the thread that feeds the workers looks up from waiting, to see whether it must end.
POLL_SECONDS = 0.05


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


class Workers:
    """``count`` forked processes, each running ``work(item)`` on the items it is sent.

    ``units``: the network's units, reopened in each worker (``reopen()``) before any work and
    closed (``close()``) when it stops. Use as a context manager.
    """

    def __init__(self, count: int, work, units=()):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._conns, self._procs = [], []
        self._pump = None
        # Frozen objects are never visited by a collection: a worker's garbage collector leaves
        # the pages it shares with this process alone instead of copying all of them.
        gc.freeze()
        try:
            for _ in range(count):
                ours, theirs = context.Pipe()
                proc = context.Process(target=_serve, args=(theirs, work, list(units)),
                                       daemon=True)
                proc.start()
                theirs.close()
                self._conns.append(ours)
                self._procs.append(proc)
        finally:
            gc.unfreeze()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def map(self, items, stop=None, helper=None):
        """Yield ``(item, work(item))`` in the order of ``items``, as soon as each and all before
        it are done. ``stop()``, when it returns True, ends the dispatch of new items; what was
        already sent still arrives. A worker's exception is raised here, in its item's turn (an
        exception of a later item never hides the results before it).

        Items are sent and results received by a thread of their own (``_Pump``), not when the
        caller asks for the next result: a caller busy with one result (judging a target) never
        leaves a worker idle, and each worker holds IN_FLIGHT items, so it starts the next the
        moment it sends a result.

        ``helper(item)``, when given, is this process's share of the work: instead of waiting
        for a result a worker is still computing, this process computes the next item no worker
        was sent (its exception, too, is raised in its item's turn): this process and N - 1
        workers keep N cores busy, where N workers and a waiting caller would share them."""
        items = list(items)
        self._pump = pump = _Pump(self._conns, self._procs, items, stop,
                                  helping=helper is not None)
        for following in range(len(items)):
            got = pump.take(following, wait=helper is None)
            while got is _PENDING:
                index = pump.claim()
                if index is None:
                    got = pump.take(following)
                    break
                pump.put(index, _attempt(helper, items[index]))
                got = pump.take(following, wait=False)
            if got is None:
                return  # stopped: nothing more will come
            ok, value = got
            if not ok:
                raise value
            yield items[following], value

    def close(self) -> None:
        """Tell every worker to stop; kill any that does not within STOP_SECONDS. What a worker
        still sends (the item it was computing) is read and dropped, so that none waits on a
        full pipe."""
        from multiprocessing.connection import wait

        if self._pump is not None:
            self._pump.finish()
            self._pump = None
        _tell_to_stop(self._conns)
        deadline = time.monotonic() + STOP_SECONDS
        open_conns = list(self._conns)
        while open_conns and time.monotonic() < deadline:
            for conn in wait(open_conns, timeout=max(0.0, deadline - time.monotonic())):
                try:
                    conn.recv()
                except (EOFError, OSError):
                    open_conns.remove(conn)
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []


_PENDING = object()  # ``_Pump.take``: the item is not done yet


class _Pump:
    """Sends ``items`` to the workers behind ``conns`` and receives their results, in a thread,
    up to IN_FLIGHT items per worker; ``take(i)`` waits for item i's result. The caller may
    ``claim`` the next item not yet sent and ``put`` its result itself. Ends when every item
    handed out has come back (or ``stop()`` ended the dispatch), when a worker fails outside
    any item, or at ``finish()``."""

    def __init__(self, conns, procs, items, stop, helping: bool):
        self._conns, self._procs, self._items, self._stop = conns, procs, items, stop
        self._ready = threading.Condition()
        self._done: dict[int, tuple[bool, object]] = {}
        self._ended = False
        self._failure: BaseException | None = None
        self._quit = False
        self._stopped = False  # ``stop()`` said so: nothing more is handed out
        self._next = 0  # the next item to hand out, to a worker or to the caller
        self._taken = 0  # items the caller has taken
        self._window = AHEAD_PER_PROCESS * (len(conns) + helping)
        self._thread = threading.Thread(target=self._run, name="gradcheck-workers", daemon=True)
        self._thread.start()

    def take(self, index: int, wait: bool = True):
        """(ok, value) of item ``index``, once it has come; None if it was never handed out;
        ``_PENDING`` if it has not come and ``wait`` is false."""
        with self._ready:
            while index not in self._done and not self._ended and wait:
                self._ready.wait()
            if index in self._done:
                self._taken = index + 1
                self._ready.notify_all()
                return self._done.pop(index)
            if not self._ended:
                return _PENDING
            if self._failure is not None:
                raise self._failure
            return None

    def claim(self) -> int | None:
        """The index of the next item, now the caller's to compute and ``put``; None when every
        item is handed out, the caller is a window behind, or ``stop()`` ended the dispatch."""
        with self._ready:
            return self._hand_out()

    def put(self, index: int, result: tuple[bool, object]) -> None:
        with self._ready:
            self._done[index] = result
            self._ready.notify_all()

    def finish(self) -> None:
        """Stop sending and receiving (what workers still send is for ``Workers.close``)."""
        self._quit = True
        self._thread.join()

    def _hand_out(self) -> int | None:
        """The next item's index, handed out (call holding ``_ready``); None if there is none
        to hand out now."""
        if self._stopped or self._next >= min(len(self._items), self._taken + self._window):
            return None
        if self._stop is not None and self._stop():
            self._stopped = True
            self._ready.notify_all()
            return None
        self._next += 1
        return self._next - 1

    def _run(self) -> None:
        from multiprocessing.connection import wait

        outstanding = {conn: [] for conn in self._conns}  # indices sent, in the order sent
        failure = None
        try:
            while not self._quit:
                while True:
                    conn = min(outstanding, key=lambda c: len(outstanding[c]))
                    if len(outstanding[conn]) >= IN_FLIGHT:
                        break
                    with self._ready:
                        index = self._hand_out()
                    if index is None:
                        break
                    outstanding[conn].append(index)
                    try:
                        conn.send((index, self._items[index]))
                    except OSError:  # its end of the pipe closed: it is gone
                        raise self._died(conn, outstanding[conn]) from None
                busy = [conn for conn, sent in outstanding.items() if sent]
                if not busy:
                    with self._ready:
                        finished = self._stopped or self._next == len(self._items)
                        # Else the caller is a window behind: wait until it takes one.
                        while (not finished and self._next >= self._taken + self._window
                               and not self._quit and not self._stopped):
                            self._ready.wait(POLL_SECONDS)
                    if finished:
                        # Nothing more for the workers: they end (closing their units) while
                        # the caller finishes with the results.
                        _tell_to_stop(self._conns)
                        break
                    continue
                # A timeout, so that ``finish`` is seen while a worker computes.
                for conn in wait(busy, timeout=POLL_SECONDS):
                    try:
                        index, ok, value = conn.recv()
                    except (EOFError, OSError):  # its end of the pipe closed: it is gone
                        raise self._died(conn, outstanding[conn]) from None
                    if index < 0:  # the worker failed outside any item (reopening its units)
                        raise value
                    outstanding[conn].remove(index)
                    self.put(index, (ok, value))
        except BaseException as exc:  # raised in the caller, after the results before it
            failure = exc
        with self._ready:
            self._ended, self._failure = True, failure
            self._ready.notify_all()


    def _died(self, conn, computing: list[int]) -> WorkerDied:
        """The failure of the worker behind ``conn``, which ended while ``computing`` those
        items (the first is the one it was on)."""
        proc = self._procs[self._conns.index(conn)]
        proc.join(STOP_SECONDS)
        code = proc.exitcode
        if code is not None and code < 0:
            how = f"killed by signal {signal.Signals(-code).name}"
        else:
            how = f"exit status {code}" if code is not None else "still running"
        return WorkerDied(how, self._items[computing[0]] if computing else None)


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


def _serve(conn, work, units) -> None:
    """A worker's life: reopen the units, evaluate items until told to stop, close the units."""
    status = 0
    try:
        for unit in units:
            reopen = getattr(unit, "reopen", None)
            if callable(reopen):
                invoke(unit, "reopen", reopen)
        while True:
            message = conn.recv()
            if message is None:
                break
            index, item = message
            try:
                conn.send((index, True, work(item)))
            except BaseException as exc:  # sent back, raised in the parent
                conn.send((index, False, _portable(exc)))
    except (EOFError, KeyboardInterrupt):
        status = 1
    except BaseException as exc:
        status = 1
        try:
            conn.send((-1, False, _portable(exc)))
        except (OSError, ValueError):
            pass
    finally:
        for unit in units:
            close = getattr(unit, "close", None)
            if callable(close):
                try:
                    close()
                except BaseException:
                    status = 1
        conn.close()
        # No interpreter shutdown: the parent's atexit handlers and finalizers (its external
        # children among them) belong to the parent.
        os._exit(status)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (gradcheck's errors do), else its traceback as text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return WorkerFailed("".join(traceback.format_exception(exc)).rstrip())
