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
import time
import traceback

from gradcheck.usercode import invoke

# How long a worker may take to finish its current item and close its units once told to stop,
# before it is killed.
STOP_SECONDS = 10.0


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


class Workers:
    """``count`` forked processes, each running ``work(item)`` on the items it is sent.

    ``units``: the network's units, reopened in each worker (``reopen()``) before any work and
    closed (``close()``) when it stops. Use as a context manager.
    """

    def __init__(self, count: int, work, units=()):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._conns, self._procs = [], []
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

    def map(self, items, stop=None):
        """Yield ``(item, work(item))`` in the order of ``items``, as soon as each and all before
        it are done. ``stop()``, when it returns True, ends the dispatch of new items; what was
        already sent still arrives. A worker's exception is raised here, in its item's turn (an
        exception of a later item never hides the results before it)."""
        from multiprocessing.connection import wait

        items = list(items)
        done: dict[int, tuple[bool, object]] = {}
        idle, busy = list(self._conns), {}
        sent = following = 0
        while following < len(items):
            while idle and sent < len(items) and not (stop is not None and stop()):
                conn = idle.pop()
                conn.send((sent, items[sent]))
                busy[conn] = sent
                sent += 1
            if not busy:
                return  # stopped: nothing more will come
            for conn in wait(list(busy)):
                try:
                    index, ok, value = conn.recv()
                except EOFError:
                    raise WorkerFailed("a worker process ended unexpectedly") from None
                if index < 0:  # the worker failed outside any item (reopening its units)
                    raise value
                del busy[conn]
                idle.append(conn)
                done[index] = ok, value
            while following in done:
                ok, value = done.pop(following)
                if not ok:
                    raise value
                yield items[following], value
                following += 1

    def close(self) -> None:
        """Tell every worker to stop; kill any that does not within STOP_SECONDS. What a worker
        still sends (the item it was computing) is read and dropped, so that none waits on a
        full pipe."""
        from multiprocessing.connection import wait

        for conn in self._conns:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
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
