"""The layer and loss contract. Built-in layers use exactly this contract, like any plugin."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from gradcheck.usercode import seed_rng


class Layer:
    """A differentiable map with parameters, written forward/backward by hand.

    **What a layer needs** (three methods; everything else has a safe default):

    - ``__init__(**options)``: YAML keys other than ``type``/``name`` arrive as keyword
      arguments. Call ``super().__init__()``, validate the options and raise
      ``gradcheck.LayerError`` with a clear message.
    - ``build(input_shape, rng) -> output_shape``: shapes are per sample (no batch axis). Create
      ``self.params[name]`` arrays from ``rng`` (a ``np.random.Generator``); raise ``LayerError``
      for an input shape the layer cannot take.
    - ``forward(x) -> y``: ``x`` has shape ``(batch, *input_shape)``. Deterministic: two calls on
      the same input must agree bit for bit (the check verifies it first). ``self.training``
      says whether the layer is in training mode.
    - ``backward(grad_out) -> grad_in``: ``grad_out`` is dL/dy for the most recent ``forward``;
      return dL/dx and store dL/dparam in ``self.grads[name]`` (same shape as the parameter).
      Calling it twice with the same ``grad_out`` must give the same results (the check
      verifies that too), and it must not write into ``grad_out``.

    **Several inputs or outputs** (merges, attention with its token ids, split): ``forward(a,
    b)`` takes one argument per tensor named in the layer's YAML ``inputs:``; ``build`` then gets
    a list of their shapes. A layer with several outputs returns a tuple from ``forward`` and a
    list of shapes from ``build``, and ``backward(g0, g1)`` gets one upstream gradient per
    output. ``backward`` returns one gradient per input (a tuple), ``None`` in the slot of an
    integer input (token ids: never perturbed, no gradient).

    **State and randomness.**

    - ``self.buffers``: non-trainable array state (running statistics), by name. Never
      perturbed, never reported as a parameter, cast to the network's dtype like params, and
      put back as it was when a check ends (a forward that updates it is told under -v).
    - ``uses_rng = True`` (class attribute): the layer is random on purpose (dropout). It gets
      ``self.rng``, a ``np.random.Generator`` from the config's seed that the engine rewinds to
      the same state before every call it makes, so every forward draws the same numbers: draw
      all randomness from it, never from ``np.random`` directly.
    - ``branch_state()``: the discrete branch state of the most recent ``forward`` (ReLU sign
      mask, max-pool argmax, ...) as an array whose first axis is the batch axis, or None. When
      the state differs between x+h and x-h the finite difference straddles a kink and is not a
      failure.
    - ``mixes_batch = True`` (class attribute): one sample's output depends on other samples
      (batch normalisation in training mode).
    - ``close()``: release what the layer holds outside Python (a child process, a file). Called
      once when the check is over, also after an error; must be safe to call more than once.
    - ``reopen()``: called in each worker process of ``--jobs`` (a fork of the checking process)
      before the layer is used there: open your own copy of what cannot be shared between
      processes (a child process, a socket). What the layer holds from before the fork belongs
      to the parent: stop using it, but do not stop it. ``close()`` follows in the worker.
    - ``axis_names``: what each axis of the layer's gradients means, so that an explanation says
      "errors only in time steps 0-14 of 16" and a heat map "rows: input feature, columns: unit"
      instead of "axis 1": a dict from ``"input"`` and parameter names to tuples of names, one
      per axis, the input's without the batch axis (always ``"sample"``, a reserved name). E.g.
      dense: ``{"input": ("input feature",), "W": ("input feature", "unit"), "b": ("unit",)}``.
      A class attribute, or set in ``build`` when the layout depends on the input shape;
      targets left out get generic names ("axis 1", ...). Checked after ``build``: one name per
      axis (names of parameters the layer did not create are ignored). A layer with several
      inputs gives one ``"input"`` tuple that fits each.

    **What diagnose reads.** ``gradcheck diagnose`` learns what a layer does by probing its
    forward and backward; one optional method tells it what it cannot see from outside:

    - ``attention_weights()``: for an attention layer, the attention weights of the most recent
      ``forward``, an array (batch, heads, queries, keys) whose rows are each a distribution over
      the keys that query sees -- or a pair ``(weights, allowed)``, with ``allowed`` a boolean
      array broadcastable to the weights, False where a mask hides a key from a query (causal or
      padding masks). The diagnosis compares each head's entropy with log(keys it sees) to find
      attention that has collapsed onto single keys at initialisation. The default returns None:
      not an attention layer.

    **Context the network provides** (set after ``__init__``, before ``build``):

    - ``self.base_dir``: the folder of the YAML file (``None`` when built without one), so that a
      layer can resolve relative paths among its options the way ``plugins:`` and ``input.file``
      are.
    - ``self.input_names``: the names of the tensors the layer reads, in order (``None`` when
      built without a network), so that an error can say which input is wrong.

    **Optional speed-ups.** A check perturbs every element and needs the layer's output for
    each copy; by default it calls ``forward`` once per copy (and, for a layer that does not mix
    samples, on many perturbed rows stacked into one batch — an optimisation the layer need not
    know about: if the stacked result differs from ``forward`` on the real batch, or raises, the
    engine stops stacking that layer). A layer may offer faster ways to compute the copies. None
    is ever trusted on its own: the engine's verifier compares each one with ``forward`` on the
    real batch at a spread sample of the elements it serves, at +h and -h, and on any
    disagreement stops using it for the rest of the check and says so in the report. A speed-up
    inherited from a class above the one that defines ``forward`` is never used.

    - ``objective_changes(x, grad_out, name, flat_indices, values)``: for a layer with one input
      and one output, the change of ``sum(grad_out * forward(x))`` when element
      ``flat_indices[k]`` of ``name`` (``"input"`` or a parameter) becomes ``values[k]``, for
      each k, without building the copies: a tuple ``(changes, magnitudes, branches)``.
      ``changes`` and ``magnitudes`` have shape (k,); ``magnitudes[k]`` is the sum of
      ``|grad_out * y|`` over the output elements that changed (the round-off scale of the
      change); ``branches`` is None, or for a layer with ``branch_state`` an int array (k,)
      naming the branch the changed outputs took (its kink claims are verified too). Return
      None for a target the layer offers no shortcut for. The fastest route: an elementwise
      layer computes each change from one element, batchnorm from its channel's sums.
    - ``perturbed_outputs(x, name, flat_indices, values)``: ``forward(x)`` with
      ``params[name].flat[flat_indices[k]] = values[k]``, for each k: shape (k, batch, *output).
      A layer affine in a parameter returns the clean output plus a rank-one change.
    - ``perturbed_input_rows(x, flat_indices, values)``: for a layer that does not mix the batch,
      row ``flat_indices[k] // (x.size // batch)`` of ``forward(x)`` with
      ``x.flat[flat_indices[k]] = values[k]``, for each k: shape (k, *output).
    - ``forward_replaced_rows(x, rows, new_rows)``: for a layer that mixes the batch,
      ``forward(x)`` with row ``rows[k]`` replaced by ``new_rows[k]``, for each k: shape
      (k, batch, *output).
    - ``forward_groups(x, group_size)``: for a layer that mixes the batch, ``forward`` applied
      to each consecutive block of ``group_size`` rows as a separate batch.

    No backward follows any of them.
    """

    mixes_batch: ClassVar[bool] = False
    uses_rng: ClassVar[bool] = False
    # Replaced (never mutated) by layers that declare their layout; see the class docstring.
    axis_names: dict[str, tuple[str, ...]] = {}

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training: bool = True
        # Set by the network when it is built from a config; plugins need not touch them.
        self.name: str = type(self).__name__
        self.yaml_path: str | None = None
        self.yaml_where: str | None = None
        self.base_dir: Path | None = None
        self.input_names: list[str] | None = None
        if self.uses_rng:
            # Reseeded from the config's seed when a network is built; rewound before each call.
            seed_rng(self, np.random.SeedSequence(0))

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
        """Create parameters for ``input_shape`` (per sample) and return the per-sample output shape."""
        return tuple(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Map ``x`` of shape (batch, *input_shape) to (batch, *output_shape)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return dL/dx for dL/dy = ``grad_out``; store dL/dparam in ``self.grads``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def branch_state(self) -> np.ndarray | None:
        """Discrete branch state of the last forward (first axis = batch), or None if smooth."""
        return None

    def attention_weights(self):
        """The attention weights of the last forward, (batch, heads, queries, keys), or a pair
        (weights, allowed mask); None (the default) for a layer that does not attend."""
        return None

    def close(self) -> None:
        """Release external resources (processes, files); the default holds none."""


class Loss:
    """A scalar objective of the network output and a target.

    - ``target_kind``: ``"values"`` (regression: targets shaped like the output, drawn uniform [0, 1)
      by default) or ``"labels"`` (classification: integer labels in [0, C), by default one per
      sample; ``label_shape`` says otherwise).
    - ``label_shape(input_shape) -> (label shape, C)`` (labels losses): the labels a sample has.
    - ``build(input_shape)``: validate the per-sample output shape it is given (raise ``LayerError``).
    - ``forward(pred, target) -> float`` and ``backward() -> dL/dpred`` for the most recent forward.
    - ``forward_many(preds, target) -> (n,)`` (optional speed-up, verified like a layer's): the
      loss of n stacked batches at once.
    """

    target_kind: ClassVar[str] = "values"
    mixes_batch: ClassVar[bool] = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}  # as a layer's: state, never perturbed
        self.training: bool = True
        # Set by the network when it is built from a config; plugins need not touch them.
        self.name: str = type(self).__name__
        self.yaml_path: str | None = None
        self.yaml_where: str | None = None
        self.base_dir: Path | None = None

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Check that the network output shape (per sample) suits this loss."""

    def label_shape(self, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        """For a ``"labels"`` loss: (per-sample label shape, number of classes C) when the
        network output has per-sample shape ``input_shape``. The network draws labels of shape
        (batch, *label shape) uniformly from [0, C), and requires that shape of labels loaded
        from a file. The default, one label per sample among all outputs, is ((), prod(shape));
        a loss with a label per time step (T, V) returns ((T,), V)."""
        return (), int(np.prod(input_shape))

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        """Return the scalar loss for predictions ``pred`` (batch, *shape) and ``target``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self) -> np.ndarray:
        """Return dL/dpred for the most recent forward."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def forward_many(self, preds: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The loss of each of n whole batches ``preds`` (n, batch, *shape) against the same
        ``target``, as an (n,) array.

        The engine evaluates many perturbed copies at once through this. The default is one
        ``forward`` per copy; a loss may override it with a vectorised version, which must return
        what those forwards return (to rounding): the engine's verifier compares them and stops
        using an override that disagrees. ``backward`` is never called after it.
        """
        return np.array([float(self.forward(pred, target)) for pred in preds], dtype=np.float64)

    def branch_state(self) -> np.ndarray | None:
        """Discrete branch state of the last forward (first axis = batch), or None if smooth."""
        return None

    def close(self) -> None:
        """Release external resources (processes, files); the default holds none."""
