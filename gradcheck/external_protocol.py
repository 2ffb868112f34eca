"""The external-layer protocol (version 1): message framing, array encodings and the child process.

The specification every client implements is docs/external-protocol.md. This module knows nothing
about layers: gradcheck/layers/external.py maps the Layer contract onto ``Child.request``.

A message is a verb line, field lines, and ``end``; a field line ``array NAME NDIM D1 .. Dn`` is
followed by the array's values (raw little-endian float64, or one line of decimal numbers).
Reads and writes go through non-blocking pipes under ``select`` so that every request has a
deadline: a child that hangs is reported, never waited on forever. POSIX only.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import subprocess
import tempfile
import time
import weakref

import numpy as np

PROTOCOL_VERSION = 1
MAGIC = "gradcheck-external"
ENCODINGS = ("binary", "text")
# Array names with a fixed meaning in requests and replies; parameters may not use them.
RESERVED_NAMES = frozenset({"x", "y", "grad_out", "grad_x", "state"})
MAX_HEADER_LINE = 4096
# A float64 in text needs at most 24 characters plus a separator.
_TEXT_BYTES_PER_VALUE = 26
_LE_FLOAT64 = np.dtype("<f8")
_QUIT_GRACE_SECONDS = 1.0


class ProtocolError(Exception):
    """The child broke the protocol. ``kind`` is one of: start, exit, garbage, timeout, version,
    shape, child (the child answered ``error``). ``hint`` says what the user can do about it."""

    def __init__(self, kind: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint


@dataclasses.dataclass
class Reply:
    """A child's answer: ``fields`` maps a field name to its tokens, ``arrays`` name -> array."""

    fields: dict[str, list[str]]
    arrays: dict[str, np.ndarray]


def format_value(value) -> str:
    """An option value as its protocol text: ints and floats in decimal (floats round-trip),
    booleans as 1/0, strings verbatim, lists of numbers space-separated."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, str):
        return value
    return " ".join(format_value(v) for v in value)


def encode_message(verb: str, fields: list[tuple[str, str]],
                   arrays: list[tuple[str, np.ndarray]], encoding: str) -> bytes:
    """The bytes of one message: verb line, ``name value`` field lines, arrays, ``end``."""
    parts = [f"{verb}\n".encode()]
    parts += [f"{name} {value}\n".encode() for name, value in fields]
    for name, array in arrays:
        array = np.asarray(array)
        dims = " ".join(str(d) for d in array.shape)
        parts.append(f"array {name} {array.ndim} {dims}".rstrip().encode() + b"\n")
        values = np.ascontiguousarray(array, dtype=_LE_FLOAT64)
        if encoding == "binary":
            parts.append(values.tobytes())
        else:
            # repr gives the shortest decimal that reads back as the same float64.
            parts.append(" ".join(map(repr, values.reshape(-1).tolist())).encode() + b"\n")
    parts.append(b"end\n")
    return b"".join(parts)


def _parse_dims(tokens: list[str], what: str) -> tuple[int, ...]:
    """``NDIM D1 .. Dn`` -> shape, or a garbage ProtocolError."""
    try:
        ndim = int(tokens[0])
        dims = tuple(int(t) for t in tokens[1:])
    except (IndexError, ValueError):
        raise ProtocolError("garbage", f"{what} needs 'NDIM D1 .. Dn', got {' '.join(tokens)!r}.") from None
    if ndim != len(dims) or any(d < 0 for d in dims):
        raise ProtocolError("garbage", f"{what} declares {ndim} dimensions but lists {list(dims)}.")
    return dims


class Child:
    """One long-lived child process speaking the protocol; use ``request`` and ``close``.

    ``argv`` is started in ``cwd`` in a session of its own (so that ``close`` can stop anything
    it started too); its stderr goes to a temporary file whose tail is quoted in error messages.
    The process is stopped by ``close``, or when the Child is garbage-collected or the
    interpreter exits, whichever comes first.
    """

    def __init__(self, argv: list[str], cwd: str, timeout: float):
        self.argv = list(argv)
        self.timeout = timeout
        self._buffer = bytearray()
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(self.argv, cwd=cwd, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr,
                                          bufsize=0, start_new_session=True)
        except OSError as exc:
            self._stderr.close()
            raise ProtocolError("start", f"{self.argv[0]} does not start: "
                                f"{exc.strerror or exc}.", hint="check that the program exists, is "
                                "executable and runs on this machine") from None
        # Shared with the finalizer: False once the stream is corrupt and 'quit' cannot be trusted.
        self._graceful = [True]
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._stderr, self._graceful)
        os.set_blocking(self._proc.stdin.fileno(), False)
        os.set_blocking(self._proc.stdout.fileno(), False)
        try:
            self.encoding = self._handshake()
        except BaseException:
            self._graceful[0] = False
            self.close()
            raise

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """Whether the child is still running and usable."""
        return self._finalizer.alive and self._proc.poll() is None

    def close(self) -> None:
        """Ask the child to quit, then stop it (and its process group) if it does not. Idempotent."""
        self._finalizer()

    def detach(self) -> None:
        """In a forked copy of the process that started the child: let go of it without stopping
        it (it belongs to the parent), closing only this process's copies of its pipes."""
        self._finalizer.detach()
        for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
            try:
                stream.close()
            except OSError:
                pass

    def _handshake(self) -> str:
        deadline = time.monotonic() + self.timeout
        self._write(f"{MAGIC} {PROTOCOL_VERSION}\n".encode(), deadline, "the handshake")
        line = self._read_line(deadline, "the handshake")
        tokens = line.split()
        if len(tokens) != 3 or tokens[0] != MAGIC:
            raise ProtocolError("garbage", f"the child answered the handshake with {line[:80]!r}, "
                                f"expected '{MAGIC} {PROTOCOL_VERSION} binary' (or 'text').",
                                hint="stdout carries the protocol: write any diagnostics to stderr")
        if tokens[1] != str(PROTOCOL_VERSION):
            raise ProtocolError("version", f"the child speaks protocol version {tokens[1]!r}; this "
                                f"gradcheck speaks version {PROTOCOL_VERSION}.",
                                hint="update the client to the protocol in docs/external-protocol.md")
        if tokens[2] not in ENCODINGS:
            raise ProtocolError("garbage", f"the child asked for array encoding {tokens[2]!r}; "
                                f"known encodings: {', '.join(ENCODINGS)}.")
        return tokens[2]

    def request(self, verb: str, fields: list[tuple[str, str]], arrays: list[tuple[str, np.ndarray]],
                expect, optional: frozenset = frozenset()) -> Reply:
        """Send one request and read the reply, all within ``timeout`` seconds.

        ``expect(name, shape)`` validates each array header before its payload is read (so a
        corrupt header never makes us read gigabytes) and raises ProtocolError; every name it
        accepts must arrive unless listed in ``optional``. Any protocol failure stops the child:
        the stream can no longer be trusted.
        """
        what = f"the {verb} request"
        deadline = time.monotonic() + self.timeout
        try:
            if not self.alive:
                if self._finalizer.alive:
                    # It ended on its own before this request: say how, with its stderr, as when
                    # it ends while answering (which of the two it is only depends on timing).
                    raise self._exited(what)
                raise ProtocolError("exit", "the child process is no longer running (it was "
                                    "stopped after an earlier error or has exited).")
            self._write(encode_message(verb, fields, arrays, self.encoding), deadline, what)
            return self._read_reply(deadline, what, expect, optional)
        except ProtocolError as exc:
            if exc.kind != "child":
                self._graceful[0] = exc.kind == "exit"
                self.close()
            raise

    def _read_reply(self, deadline: float, what: str, expect, optional: frozenset) -> Reply:
        status = self._read_line(deadline, what)
        if status.startswith("error"):
            # An error reply is that one line: the child stays ready for the next request.
            message = status[len("error"):].strip() or "(no message)"
            raise ProtocolError("child", f"the child reported an error: {message}")
        if status.strip() != "ok":
            raise ProtocolError("garbage", f"the child answered {what} with {status[:80]!r}, "
                                "expected 'ok' or 'error MESSAGE'.",
                                hint="stdout carries the protocol: write any diagnostics to stderr")
        reply = Reply({}, {})
        while True:
            line = self._read_line(deadline, what)
            tokens = line.split()
            if not tokens:
                raise ProtocolError("garbage", f"the child wrote an empty line in its reply to {what}.")
            if tokens == ["end"]:
                break
            if tokens[0] != "array":
                reply.fields[tokens[0]] = tokens[1:]
                continue
            if len(tokens) < 3:
                raise ProtocolError("garbage", f"array line {line[:80]!r} needs 'array NAME NDIM D1 .. Dn'.")
            name, shape = tokens[1], _parse_dims(tokens[2:], f"array {tokens[1]!r}")
            expect(name, shape)
            if name in reply.arrays:
                raise ProtocolError("garbage", f"the child sent array {name!r} twice in one reply.")
            reply.arrays[name] = self._read_array(shape, deadline, what, name)
        return reply

    def _read_array(self, shape: tuple[int, ...], deadline: float, what: str, name: str) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64))
        if self.encoding == "binary":
            data = self._read_exact(size * 8, deadline, what)
            return np.frombuffer(data, dtype=_LE_FLOAT64).astype(np.float64).reshape(shape)
        line = self._read_line(deadline, what, limit=size * _TEXT_BYTES_PER_VALUE + MAX_HEADER_LINE)
        try:
            values = np.array([float(t) for t in line.split()], dtype=np.float64)
        except ValueError:
            raise ProtocolError("garbage", f"array {name!r}: the values line holds something that is "
                                f"not a number: {line[:80]!r}.") from None
        if values.size != size:
            raise ProtocolError("garbage", f"array {name!r} declares shape {shape} ({size} values) "
                                f"but its values line holds {values.size}.")
        return values.reshape(shape)

    # -- pipes with deadlines -------------------------------------------------------------------

    def _write(self, data: bytes, deadline: float, what: str) -> None:
        view = memoryview(data)
        fd_in, fd_out = self._proc.stdin.fileno(), self._proc.stdout.fileno()
        while view:
            readable, writable = self._wait([fd_out], [fd_in], deadline, what)
            if readable:
                # The child may answer (say, 'error') before reading all of a long request; keep
                # its stdout drained so neither side blocks on a full pipe.
                self._fill_once(what)
            if writable:
                try:
                    view = view[os.write(fd_in, view):]
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    raise self._exited(what) from None

    def _read_line(self, deadline: float, what: str, limit: int = MAX_HEADER_LINE) -> str:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                break
            if len(self._buffer) > limit:
                raise ProtocolError("garbage", f"the child wrote {len(self._buffer)} bytes without a "
                                    f"newline in reply to {what}: {bytes(self._buffer[:60])!r}...",
                                    hint="stdout carries the protocol: write any diagnostics to stderr")
            self._wait([self._proc.stdout.fileno()], [], deadline, what)
            self._fill_once(what)
        try:
            return raw.decode("ascii").rstrip("\r")
        except UnicodeDecodeError:
            raise ProtocolError("garbage", f"the child wrote non-text bytes where a header line was "
                                f"expected in reply to {what}: {raw[:60]!r}.",
                                hint="an array's payload must be exactly as long as its shape says; "
                                "stdout carries only the protocol") from None

    def _read_exact(self, count: int, deadline: float, what: str) -> bytes:
        while len(self._buffer) < count:
            self._wait([self._proc.stdout.fileno()], [], deadline, what)
            self._fill_once(what)
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _fill_once(self, what: str) -> None:
        try:
            chunk = os.read(self._proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            raise self._exited(what)
        self._buffer += chunk

    def _wait(self, read_fds: list, write_fds: list, deadline: float, what: str):
        remaining = deadline - time.monotonic()
        if remaining > 0:
            readable, writable, _ = select.select(read_fds, write_fds, [], remaining)
            if readable or writable:
                return readable, writable
        if self._proc.poll() is not None:
            raise self._exited(what)
        raise ProtocolError("timeout", f"the child did not finish {what} within {self.timeout:g} s "
                            "and was stopped.", hint="if it is only slow, raise the layer's "
                            "'timeout' option (seconds per request)" + self.stderr_tail())

    def _exited(self, what: str) -> ProtocolError:
        try:
            code = self._proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            status = "closed its stdout"
        else:
            status = (f"was killed by signal {-code}" if code < 0 else f"exited with status {code}")
        return ProtocolError("exit", f"the child {status} during {what}.",
                             hint="a client must answer every request and exit only on 'quit' or "
                             "end of input" + self.stderr_tail())

    def stderr_tail(self, limit: int = 600) -> str:
        """'; its stderr ended with: ...' (empty when the child wrote nothing to stderr)."""
        try:
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - limit))
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; its stderr ended with: {text!r}" if text else ""


def _shutdown(proc: subprocess.Popen, stderr_file, graceful: list) -> None:
    """Stop ``proc``: 'quit' and end of input first (if ``graceful[0]``), then SIGKILL to its whole
    process group. A module-level function (not a method) so that the finalizer holds no
    reference to the Child.
    """
    try:
        if proc.poll() is None:
            try:
                # Non-blocking: a hung child with a full stdin pipe must not hang us too.
                os.write(proc.stdin.fileno(), b"quit\n")
            except (OSError, ValueError):
                pass
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=_QUIT_GRACE_SECONDS if graceful[0] else 0.0)
            except subprocess.TimeoutExpired:
                # Not reaped yet, so its pid still names its process group (start_new_session).
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
    finally:
        stderr_file.close()
