"""The ``external`` layer: forward and backward run in a child process written in any language.

The child speaks the protocol of docs/external-protocol.md on its stdin/stdout. It is started once,
in ``build``, and serves every evaluation of the check; ``close`` (or garbage collection, or the
interpreter's exit) stops it. The child keeps no state between requests: every ``forward`` and
``backward`` request carries the input and the current parameters, because the engine perturbs
parameters in place between evaluations.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gradcheck.errors import LayerError
from gradcheck.contract import Layer
from gradcheck.registry import register_layer

# The protocol (and subprocess, select, tempfile with it) is imported by the functions that use
# it, when an external layer is configured: every check imports this module, few run a child.
if TYPE_CHECKING:
    from gradcheck.external_protocol import Child

DEFAULT_TIMEOUT = 30.0
# Parameter arrays a child may declare in build: 2**27 float64 values is 1 GiB.
_MAX_PARAM_VALUES = 1 << 27


@register_layer("external")
class External(Layer):
    """A layer computed by a separate program (C, C++, Fortran, Octave, ...) over a pipe.

    ``command``: the program and its arguments, a list (``[./myconv, --fast]``) or one string split
    like a shell would. A program path containing ``/`` is relative to the YAML file's folder, which
    is also the child's working directory; a bare name (``python3``) is looked up on PATH.
    ``options``: a mapping sent to the child's ``build`` request (numbers, booleans, strings, lists
    of numbers). ``timeout``: seconds the child may take to answer one request.
    Protocol: docs/external-protocol.md. Arrays: x (batch, *input_shape) -> y (batch, *output_shape).
    """

    def __init__(self, command, options: dict | None = None, timeout: float = DEFAULT_TIMEOUT):
        super().__init__()
        self.command = _parse_command(command)
        self.options = _parse_options(options)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise LayerError(f"timeout must be a positive number of seconds, got {timeout!r}.",
                             hint=f"the default is {DEFAULT_TIMEOUT:g} s per request")
        self.timeout = float(timeout)
        self._child: Child | None = None
        self._seed = 0  # the build request's, sent again by reopen
        self._input_shape: tuple[int, ...] = ()
        self._output_shape: tuple[int, ...] = ()
        self._x: np.ndarray | None = None
        self._state: np.ndarray | None = None

    # -- the Layer contract -------------------------------------------------------------------

    def build(self, input_shape, rng):
        self.close()
        self._input_shape = tuple(int(d) for d in input_shape)
        self._seed = int(rng.integers(0, 2**31 - 1))
        reply = self._start()
        self._output_shape = self._reply_shape(reply.fields, "output_shape")
        self.mixes_batch = reply.fields.get("mixes_batch", ["0"]) == ["1"]
        self.params = {name: np.array(value) for name, value in reply.arrays.items()}
        return self._output_shape

    def reopen(self):
        """In a worker process of ``--jobs``: a child of its own, built as the parent's was (its
        parameters are sent with every request, so the ones it draws are not used)."""
        if self._child is not None:
            self._child.detach()
            self._child = None
            self._start()

    def _start(self):
        """Start the child and send it the build request; return its reply."""
        from gradcheck.external_protocol import Child

        argv, cwd = self._resolve_command()
        with self._protocol("start"):
            self._child = Child(argv, cwd, self.timeout)
        fields = [("seed", str(self._seed)), ("input_shape", _dims(self._input_shape))]
        fields += [("option", f"{name} {value}") for name, value in self.options.items()]
        with self._protocol("build"):
            return self._child.request("build", fields, [], self._expect_build)

    def forward(self, x):
        from gradcheck.external_protocol import ProtocolError

        self._x = x
        batch = x.shape[0]
        out_shape = (batch, *self._output_shape)

        def expect(name, shape):
            if name not in ("y", "state"):
                raise ProtocolError("garbage", f"forward reply has an unknown array {name!r}; "
                                    "expected 'y' (and optionally 'state').")
            _expect_shape(f"forward reply array {name!r}", shape, out_shape,
                          f"batch {batch} x output_shape {self._output_shape} from build",
                          "the batch size varies between requests: read it from the first "
                          "dimension of x")

        with self._protocol("forward"):
            reply = self._child_or_fail().request(
                "forward", [("training", "1" if self.training else "0")],
                [("x", x), *self.params.items()], expect, optional=frozenset({"state"}))
        _require(reply.arrays, ["y"], "forward")
        self._state = reply.arrays.get("state")
        return reply.arrays["y"].astype(_float_dtype(x), copy=False)

    def backward(self, grad_out):
        from gradcheck.external_protocol import ProtocolError

        if self._x is None:
            raise LayerError("backward was called before forward.")
        x = self._x
        wanted = {"grad_x": x.shape, **{name: p.shape for name, p in self.params.items()}}

        def expect(name, shape):
            if name not in wanted:
                raise ProtocolError("garbage", f"backward reply has an unknown array {name!r}; "
                                    f"expected {', '.join(map(repr, wanted))}.")
            what = "the shape of the input x" if name == "grad_x" else f"the shape of parameter {name!r}"
            _expect_shape(f"backward reply array {name!r}", shape, wanted[name], what,
                          "a gradient has the shape of what it differentiates")

        with self._protocol("backward"):
            reply = self._child_or_fail().request(
                "backward", [("training", "1" if self.training else "0")],
                [("x", x), *self.params.items(), ("grad_out", grad_out)], expect)
        _require(reply.arrays, list(wanted), "backward")
        self.grads = {name: reply.arrays[name].astype(p.dtype, copy=False)
                      for name, p in self.params.items()}
        return reply.arrays["grad_x"].astype(_float_dtype(grad_out), copy=False)

    def branch_state(self):
        return self._state

    def close(self):
        if self._child is not None:
            self._child.close()
            self._child = None

    # -- helpers ------------------------------------------------------------------------------

    def _resolve_command(self) -> tuple[list[str], str]:
        """argv with the program made absolute, and the working directory (the YAML's folder)."""
        import shutil  # only an external layer needs it (2 ms of every check's start-up)

        base = Path(self.base_dir) if self.base_dir is not None else Path.cwd()
        program, rest = self.command[0], self.command[1:]
        if "/" in program or (os.sep != "/" and os.sep in program):
            path = Path(program).expanduser()
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise LayerError(f"command {program!r} does not start: {path} does not exist.",
                                 hint="a program path is relative to the YAML file's folder; build "
                                 "the program first (for the examples: make -C examples/external)")
            if not os.access(path, os.X_OK):
                raise LayerError(f"command {program!r} does not start: {path} is not executable.",
                                 hint=f"chmod +x {path}, or run it through its interpreter, e.g. "
                                 f"[python3, {program}]")
            return [str(path), *rest], str(base)
        found = shutil.which(program)
        if found is None:
            raise LayerError(f"command {program!r} does not start: no such program on PATH.",
                             hint="install it, or give a path such as ./myprog (relative to the "
                             "YAML file's folder)")
        return [found, *rest], str(base)

    def _child_or_fail(self) -> Child:
        if self._child is None:
            raise LayerError("the layer is not built or was closed: build starts its child process.")
        return self._child

    def _protocol(self, phase: str):
        return _ProtocolErrors(self, phase)

    def _expect_build(self, name: str, shape: tuple[int, ...]) -> None:
        from gradcheck.external_protocol import RESERVED_NAMES, ProtocolError

        if not name.isidentifier() or name in RESERVED_NAMES:
            raise ProtocolError("garbage", f"build reply declares parameter {name!r}: parameter names "
                                "must be identifiers other than " + ", ".join(sorted(RESERVED_NAMES)) + ".")
        if int(np.prod(shape, dtype=np.int64)) > _MAX_PARAM_VALUES:
            raise ProtocolError("shape", f"build reply declares parameter {name!r} of shape {shape}, "
                                f"more than {_MAX_PARAM_VALUES} values.")

    def _reply_shape(self, fields: dict, key: str) -> tuple[int, ...]:
        tokens = fields.get(key)
        try:
            if tokens is None:
                raise ValueError
            ndim, dims = int(tokens[0]), tuple(int(t) for t in tokens[1:])
            if ndim != len(dims) or ndim == 0 or any(d < 1 for d in dims):
                raise ValueError
        except (ValueError, IndexError):
            self.close()
            found = " ".join(tokens or []) or "nothing"
            raise LayerError(f"the child's build reply needs '{key} NDIM D1 .. Dn' with positive "
                             f"sizes (per sample, no batch axis), got {found!r}.",
                             hint="see docs/external-protocol.md, 'build'") from None
        return dims


class _ProtocolErrors:
    """Context manager: a ProtocolError becomes a LayerError naming the command and the phase."""

    def __init__(self, layer: External, phase: str):
        self.layer = layer
        self.phase = phase

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        from gradcheck.external_protocol import ProtocolError

        if exc is None or not isinstance(exc, ProtocolError):
            return False
        if exc.kind != "child":
            self.layer.close()
        command = " ".join(shlex.quote(a) for a in self.layer.command)
        raise LayerError(f"external command `{command}`: {exc.message}",
                         hint=exc.hint) from None


def _parse_command(command) -> list[str]:
    if isinstance(command, str):
        try:
            parts = shlex.split(command)
        except ValueError as exc:
            raise LayerError(f"command {command!r} cannot be split into words: {exc}.") from None
    elif isinstance(command, (list, tuple)) and all(isinstance(a, (str, int, float)) and
                                                     not isinstance(a, bool) for a in command):
        parts = [str(a) for a in command]
    else:
        raise LayerError(f"command must be a list of strings such as [./myconv, --fast], got "
                         f"{command!r}.")
    if not parts or not parts[0]:
        raise LayerError("command is empty: name the program to run, e.g. [./myconv].")
    return parts


def _parse_options(options) -> dict[str, str]:
    from gradcheck.external_protocol import format_value

    """The options as protocol text, validated now so that a bad value is a config error."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise LayerError(f"options must be a mapping such as {{filters: 4}}, got {options!r}.")
    parsed = {}
    for name, value in options.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise LayerError(f"option name {name!r} must be an identifier.")
        scalar = (bool, int, float, str)
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise LayerError(f"option {name!r}: a list may hold only numbers, got {value!r}.")
        elif not isinstance(value, scalar):
            raise LayerError(f"option {name!r} must be a number, boolean, string or list of numbers, "
                             f"got {type(value).__name__}.")
        text = format_value(value)
        if "\n" in text or "\r" in text:
            raise LayerError(f"option {name!r} must fit on one line.")
        parsed[name] = text
    return parsed


def _dims(shape: tuple[int, ...]) -> str:
    return " ".join(str(d) for d in (len(shape), *shape))


def _expect_shape(what: str, shape: tuple[int, ...], expected: tuple[int, ...], why: str,
                  hint: str) -> None:
    from gradcheck.external_protocol import ProtocolError

    if tuple(shape) != tuple(expected):
        raise ProtocolError("shape", f"{what} has shape {tuple(shape)}, expected {tuple(expected)} "
                            f"({why}).", hint=hint)


def _require(arrays: dict, names: list[str], verb: str) -> None:
    missing = [n for n in names if n not in arrays]
    if missing:
        raise LayerError(f"the child's {verb} reply lacks array(s) {', '.join(map(repr, missing))}.",
                         hint="see docs/external-protocol.md")


def _float_dtype(array: np.ndarray) -> np.dtype:
    return array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float64)
