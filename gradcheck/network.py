"""The network: a directed acyclic graph of layers ending in a loss, and its forward and backward
passes (``gradcheck.assemble`` builds one from a spec).

Tensors are named (``gradcheck.wiring``): the network inputs, each layer's output (``name``, or
``name.k`` for a layer with several outputs). Units — the layers in the order they run, then the
loss — read tensors; a tensor read by several units gets the sum of their gradients, which this
module adds up (never the layers). Every call into a layer goes through
``gradcheck.usercode.invoke``. ``Network.run`` is the one validating forward/backward pass: the
checker's (which refuses NaN/Inf) and the diagnosis's (which records where they start).
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from gradcheck.contract import Layer, Loss
from gradcheck.errors import GradcheckError, LayerError
from gradcheck.usercode import close_unit, invoke, type_name


@dataclasses.dataclass
class Batch:
    """The data a check runs on: the network input(s) and the loss's target. ``x`` is the only
    input, or a dict of named inputs (integer arrays for token ids)."""

    x: np.ndarray | dict[str, np.ndarray]
    target: np.ndarray


@dataclasses.dataclass
class Pass:
    """One forward and backward.

    ``args[k]``: every input unit k received (the loss is unit ``len(layers)``), ``inputs[k]``
    the first of them; ``arg_grads[k]``: unit k's own dL/d(each input), None for integer ids,
    ``grad_in[k]`` the first; ``upstream[k]``: dL/d(each output of layer k), summed over its
    readers; ``grads[(k, name)]``: unit k's own dL/dparam; ``tensors``: every tensor's value.
    A pass that allowed non-finite values stops where they start: ``inputs`` is then shorter,
    ``loss`` NaN, and ``loss_error`` holds the loss's complaint when it refused the predictions.
    """

    inputs: list[np.ndarray]
    loss: float
    grad_in: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    grads: dict[tuple[int, str], np.ndarray] = dataclasses.field(default_factory=dict)
    loss_error: str | None = None
    args: list[list[np.ndarray]] = dataclasses.field(default_factory=list)
    arg_grads: dict[int, list] = dataclasses.field(default_factory=dict)
    upstream: dict[int, list[np.ndarray]] = dataclasses.field(default_factory=dict)
    tensors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def pred(self) -> np.ndarray:
        return self.inputs[-1]


class Network:
    """Layers in the order they run, then the loss.

    ``sources[k]``: the tensors unit k reads; ``outputs[k]``: the tensors layer k makes;
    ``tensor_shapes``: per-sample shapes; ``integer``: the network inputs holding integer ids.
    ``shapes[k]`` is the per-sample shape of unit k's first input (for a chain: layer k's input,
    and ``shapes[-1]`` the output the loss sees).
    """

    def __init__(self, name: str, layers: list[Layer], loss: Loss, dtype, *,
                 sources: list[list[str]], outputs: list[list[str]],
                 tensor_shapes: dict[str, tuple[int, ...]], input_names: list[str],
                 integer: frozenset = frozenset(), paths: list[str] | None = None):
        self.name = name
        self.layers = layers
        self.loss = loss
        self.dtype = np.dtype(dtype)
        self.sources = sources
        self.outputs = outputs
        self.tensor_shapes = tensor_shapes
        self.input_names = input_names
        self.integer = integer
        self.paths = paths or [""] * (len(layers) + 1)
        # (unit, parameter) -> (owner unit, its parameter, transposed): ``share:``, by assemble.
        self.shared: dict[tuple[int, str], tuple[int, str, bool]] = {}
        # Said about the wiring (an output nothing reads), for the report.
        self.warnings: list[str] = []

    @classmethod
    def chain(cls, name: str, layers: list[Layer], loss: Loss, shapes: list[tuple[int, ...]],
              dtype) -> Network:
        """A chain: layer k reads layer k-1 (the first reads ``x``), the loss reads the last."""
        names = ["x", *(f"{i}" for i in range(len(layers)))]
        return cls(name, layers, loss, dtype, sources=[[names[k]] for k in range(len(layers) + 1)],
                   outputs=[[names[k + 1]] for k in range(len(layers))],
                   tensor_shapes=dict(zip(names, map(tuple, shapes))), input_names=["x"])

    @property
    def units(self) -> list[Layer | Loss]:
        """Layers followed by the loss."""
        return [*self.layers, self.loss]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [self.tensor_shapes[s[0]] for s in self.sources]

    def is_chain(self) -> bool:
        """Whether every unit reads exactly the one tensor the previous unit made."""
        return len(self.input_names) == 1 and all(
            src == ([self.input_names[0]] if k == 0 else self.outputs[k - 1])
            for k, src in enumerate(self.sources))

    def shared_name(self, k: int, name: str) -> str | None:
        """What parameter ``name`` of unit k shares, as written (``encoder.W.T``), or None."""
        if (k, name) not in self.shared:
            return None
        owner, owned, transposed = self.shared[(k, name)]
        return f"{self.units[owner].name}.{owned}{'.T' if transposed else ''}"

    def parameters(self, grads: dict) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every distinct parameter array with its total gradient: a shared array once, with
        the gradients of all its uses summed (a transposed use transposed back)."""
        return [(array, total) for _, _, array, total in self.named_parameters(grads)]

    def named_parameters(self, grads: dict | None = None) -> list[tuple[int, str, np.ndarray,
                                                                        np.ndarray | None]]:
        """``(owner unit, name, array, total gradient)`` of every distinct parameter array, in
        the order ``parameters`` gives them: a shared array once, under the unit that owns it,
        with the gradients of all its uses in ``grads`` summed (None without ``grads``)."""
        totals: dict[tuple[int, str], list] = {}
        for k, unit in enumerate(self.units):
            for name in unit.params:
                owner, owned, transposed = self.shared.get((k, name), (k, name, False))
                entry = totals.setdefault((owner, owned), [self.units[owner].params[owned], 0.0])
                if grads is not None:
                    grad = grads[(k, name)].T if transposed else grads[(k, name)]
                    entry[1] = entry[1] + grad
        return [(owner, owned, array, np.asarray(total, dtype=np.float64) if grads is not None
                 else None) for (owner, owned), (array, total) in totals.items()]

    def readers(self, tensor: str) -> list[tuple[int, int]]:
        """(unit, slot) of every unit input that reads ``tensor``."""
        return [(k, j) for k, src in enumerate(self.sources) for j, t in enumerate(src)
                if t == tensor]

    def descendants(self, k: int) -> list[int]:
        """Unit k and every unit that depends on its outputs, in the order they run."""
        reached = {k}
        for later in range(k + 1, len(self.sources)):
            made = {t for i in reached if i < len(self.layers) for t in self.outputs[i]}
            if made & set(self.sources[later]):
                reached.add(later)
        return sorted(reached)

    def ancestors(self, k: int) -> list[int]:
        """Every unit whose outputs unit k depends on."""
        found: set[int] = set()
        frontier = [k]
        while frontier:
            unit = frontier.pop()
            for t in self.sources[unit]:
                maker = next((i for i, outs in enumerate(self.outputs) if t in outs), None)
                if maker is not None and maker not in found:
                    found.add(maker)
                    frontier.append(maker)
        return sorted(found)

    def close(self) -> None:
        """Release what any unit holds outside Python (external layers' child processes)."""
        for unit in self.units:
            close_unit(unit)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def buffer_state(self) -> dict[tuple[int, str], np.ndarray]:
        """Copies of every unit's buffers, for ``restore_buffers``."""
        return {(k, name): np.array(value, copy=True) for k, unit in enumerate(self.units)
                for name, value in unit.buffers.items()}

    def restore_buffers(self, state: dict[tuple[int, str], np.ndarray]) -> list[str]:
        """Put back the buffers of ``state`` in place; return 'unit.buffer' for each that had
        changed (a forward that updates its running statistics)."""
        changed = []
        for (k, name), saved in state.items():
            unit = self.units[k]
            current = unit.buffers.get(name)
            if current is None or current.shape != saved.shape or not np.array_equal(
                    current, saved, equal_nan=np.issubdtype(saved.dtype, np.floating)):
                changed.append(f"{unit.name}.{name}")
            unit.buffers[name] = saved
        return changed

    def set_training(self, training: bool) -> None:
        """Put every layer in training (default) or evaluation mode."""
        for unit in self.units:
            unit.training = training

    def named_inputs(self, x) -> dict[str, np.ndarray]:
        """A batch's input(s) as a dict by name."""
        return dict(x) if isinstance(x, dict) else {self.input_names[0]: x}

    def run_units(self, tensors: dict, units, overrides: dict | None = None) -> dict:
        """Run ``units`` (layer indices, in order) on ``tensors``, adding their outputs (a new
        dict); ``overrides[(k, j)]`` replaces what unit k reads in slot j."""
        tensors = dict(tensors)
        for k in units:
            layer = self.layers[k]
            args = [(overrides or {}).get((k, j), tensors[t]) for j, t in enumerate(self.sources[k])]
            out = invoke(layer, "forward", layer.forward, *args)
            outs = out if len(self.outputs[k]) > 1 else (out,)
            tensors.update(zip(self.outputs[k], outs))
        return tensors

    def forward(self, x: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A chain only: run layers ``start`` up to ``stop`` (exclusive; default: all) on ``x``,
        the input of layer ``start``."""
        for layer in self.layers[start:stop]:
            x = invoke(layer, "forward", layer.forward, x)
        return x

    def loss_value(self, pred: np.ndarray, target: np.ndarray) -> float:
        """The scalar loss of ``pred`` against ``target``."""
        return float(invoke(self.loss, "forward", self.loss.forward, pred, target))

    def run(self, batch: Batch, allow_nonfinite: bool = False, backward: bool = True) -> Pass:
        """Forward and backward through every unit, validating what each returns (shapes, float
        dtypes, a gradient for every parameter and for every float input).

        Non-finite values are a LayerError naming the first unit that produced them, unless
        ``allow_nonfinite``: then the pass stops there (see ``Pass``), so a diagnosis can say
        where they start. ``backward`` False stops after the loss (a forward-only pass).
        """
        n = len(self.layers)
        tensors = self.named_inputs(batch.x)
        rows = next(iter(tensors.values())).shape[0]
        result = Pass([], float("nan"), tensors=tensors)
        # A diagnosis expects overflow and reports it; the checker refuses it below.
        with np.errstate(all="ignore") if allow_nonfinite else contextlib.nullcontext():
            for k, layer in enumerate(self.layers):
                args = [tensors[t] for t in self.sources[k]]
                result.args.append(args)
                result.inputs.append(args[0])
                out = invoke(layer, "forward", layer.forward, *args)
                outs = self._outputs_of(k, out)
                for name, y in zip(self.outputs[k], outs):
                    _expect_array(layer, "forward", y, (rows, *self.tensor_shapes[name]),
                                  allow_nonfinite)
                    tensors[name] = y
                if not all(np.all(np.isfinite(y)) for y in outs):
                    result.inputs.append(outs[0])
                    return result
            pred = tensors[self.sources[n][0]]
            result.args.append([pred])
            result.inputs.append(pred)
            try:
                result.loss = self.loss_value(pred, batch.target)
            except GradcheckError as exc:
                if not allow_nonfinite:
                    raise
                result.loss_error = exc.message
                return result
            if not np.isfinite(result.loss):
                if allow_nonfinite:
                    return result
                raise LayerError(f"the loss {self.loss.name!r} is {result.loss} on the check's "
                                 "data.", hint="run 'gradcheck diagnose' to find the first layer "
                                 "producing NaN/Inf")
            if backward:
                self._backward(result, allow_nonfinite)
        return result

    def _outputs_of(self, k: int, out) -> list[np.ndarray]:
        if len(self.outputs[k]) == 1:
            return [out]
        if not isinstance(out, tuple) or len(out) != len(self.outputs[k]):
            raise _unit_error(self.layers[k], f"layer {self.layers[k].name!r}: forward returned "
                              f"{type(out).__name__}, expected a tuple of "
                              f"{len(self.outputs[k])} outputs (build declared them).")
        return list(out)

    def _backward(self, result: Pass, allow_nonfinite: bool) -> None:
        """Each unit's backward in reverse order, from the sum of its outputs' gradients."""
        n = len(self.layers)
        acc: dict[str, np.ndarray] = {}
        grad = invoke(self.loss, "backward", self.loss.backward)
        _expect_array(self.loss, "backward", grad, result.pred.shape, allow_nonfinite)
        self._record(n, self.loss, [grad], result, acc, allow_nonfinite)
        for k in range(n - 1, -1, -1):
            layer = self.layers[k]
            upstream = [acc[t] if t in acc else np.zeros_like(result.tensors[t])
                        for t in self.outputs[k]]
            result.upstream[k] = [np.array(g, dtype=np.float64) for g in upstream]
            # The layer's own dtype: a float32 network's layers get float32 gradients.
            got = invoke(layer, "backward", layer.backward,
                         *[g.astype(result.tensors[t].dtype, copy=False)
                           for g, t in zip(upstream, self.outputs[k])])
            several = len(self.sources[k]) > 1
            if several and (not isinstance(got, tuple) or len(got) != len(self.sources[k])):
                raise _unit_error(layer, f"layer {layer.name!r}: backward returned "
                                  f"{type(got).__name__}, expected a tuple of "
                                  f"{len(self.sources[k])} input gradients, one per input.")
            self._record(k, layer, list(got) if several else [got], result, acc, allow_nonfinite)

    def _record(self, k: int, unit, grads: list, result: Pass, acc: dict,
                allow_nonfinite: bool) -> None:
        own = []
        for j, (grad, t) in enumerate(zip(grads, self.sources[k])):
            if t in self.integer:
                own.append(None)  # token ids have no gradient: whatever backward says is unused
                continue
            _expect_array(unit, "backward", grad, result.args[k][j].shape, allow_nonfinite)
            own.append(np.array(grad, dtype=np.float64))
            acc[t] = acc[t] + grad if t in acc else np.array(grad, copy=True)
        result.arg_grads[k] = own
        result.grad_in[k] = own[0]
        missing = [name for name in unit.params if name not in unit.grads]
        if missing:
            raise _unit_error(unit, f"layer {unit.name!r}: backward set no gradient for "
                              f"parameter(s) {', '.join(map(repr, missing))}.",
                              hint="store dL/dparam in self.grads[name]")
        for name, param in unit.params.items():
            value = unit.grads[name]
            if not isinstance(value, np.ndarray) or value.shape != param.shape:
                raise _unit_error(unit, f"layer {unit.name!r}: grads[{name!r}] has shape "
                                  f"{np.shape(value)}, expected the parameter's shape "
                                  f"{param.shape}.")
            if not allow_nonfinite and not np.all(np.isfinite(value)):
                raise _unit_error(unit, f"layer {unit.name!r}: grads[{name!r}] holds NaN/Inf "
                                  "values.")
            result.grads[(k, name)] = np.array(value, dtype=np.float64)


def _unit_error(unit, message: str, hint: str | None = None) -> LayerError:
    """A LayerError located at the unit's YAML entry (when it was built from a config)."""
    return LayerError(message, hint=hint, path=getattr(unit, "yaml_path", None),
                      where=getattr(unit, "yaml_where", None))


def _expect_array(unit, phase: str, value, shape, allow_nonfinite: bool) -> None:
    where = f"layer {unit.name!r} ({type_name(unit)})"
    if not isinstance(value, np.ndarray):
        raise _unit_error(unit, f"{where}: {phase} returned {type(value).__name__}, expected a "
                          "numpy array.")
    if value.shape != tuple(shape):
        hint = ("backward must return dL/dx with the shape of the forward input"
                if phase == "backward" else "build must return the shape forward produces")
        raise _unit_error(unit, f"{where}: {phase} returned shape {value.shape}, expected "
                          f"{tuple(shape)}.", hint=hint)
    if not np.issubdtype(value.dtype, np.floating):
        raise _unit_error(unit, f"{where}: {phase} returned dtype {value.dtype}, expected a "
                          "float array.")
    if not allow_nonfinite and not np.all(np.isfinite(value)):
        raise _unit_error(unit, f"{where}: {phase} produced NaN/Inf values.",
                          hint="run 'gradcheck diagnose' for the first layer that goes "
                               "non-finite")
