"""The layer and loss contract. Built-in layers use exactly this contract, like any plugin."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np


class Layer:
    """A differentiable map with parameters, written forward/backward by hand.

    Subclasses implement ``build``, ``forward`` and ``backward``:

    - ``__init__(**options)``: YAML keys other than ``type``/``name`` arrive as keyword arguments.
      Validate them here and raise ``gradcheck.LayerError`` with a clear message.
    - ``build(input_shape, rng) -> output_shape``: shapes are per sample (no batch axis). Create
      ``self.params[name]`` arrays from ``rng`` (a ``np.random.Generator``); raise ``LayerError`` for
      an input shape the layer cannot take.
    - ``forward(x) -> y``: ``x`` has shape ``(batch, *input_shape)``. Deterministic: any randomness
      must be fixed at build time. ``self.training`` says whether the layer is in training mode.
    - ``backward(grad_out) -> grad_in``: ``grad_out`` is dL/dy for the most recent ``forward``; return
      dL/dx and store dL/dparam in ``self.grads[name]`` (same shape as ``self.params[name]``).

    Optional refinements (defaults are safe):

    - ``mixes_batch``: set to True when one sample's output depends on other samples (batch
      normalisation in training mode); the engine then never evaluates samples independently.
      Otherwise the engine may call ``forward`` on k copies of the batch stacked into k*B rows, or
      on single rows placed so that row p of the stack stands for row p mod B of the batch: a
      layer that depends on the batch position (dropout's mask) must treat row p as row p mod B.
    - ``forward_groups(x, group_size)``: for a layer that mixes the batch, forward applied to each
      consecutive block of ``group_size`` rows as a separate batch (no backward follows it). The
      engine then evaluates many perturbed copies of the batch in one call instead of one call
      per copy; without it, it loops.
    - ``forward_replaced_rows(x, rows, new_rows)``: for a layer that mixes the batch,
      ``forward(x)`` with row ``rows[k]`` replaced by ``new_rows[k]``, for each k: shape
      (k, batch, *output). A perturbation upstream of such a layer changes one sample's row, so a
      layer that can update its output from the clean batch (batchnorm: statistics plus one row's
      change) saves building and normalising every copy. Confirmed against ``forward`` once per
      target; no backward follows it.
    - ``perturbed_outputs(x, name, flat_indices, values)``: ``forward(x)`` with
      ``params[name].flat[flat_indices[k]] = values[k]``, for each k: shape (k, batch, *output).
      A layer affine in a parameter can return the clean output plus a rank-one change instead of
      running a forward per perturbed element. The engine confirms it against ``forward`` once per
      target.
    - ``perturbed_input_rows(x, flat_indices, values)``: for a layer that does not mix the batch,
      row ``flat_indices[k] // (x.size // batch)`` of ``forward(x)`` with
      ``x.flat[flat_indices[k]] = values[k]``, for each k: shape (k, *output). A layer affine in
      its input can return the clean output row plus the change times one column of its weights
      instead of running a forward per perturbed element (only that sample's row changes, so only
      it is returned). Confirmed against ``forward`` the same way.
    - ``branch_state()``: the discrete branch state of the most recent ``forward`` (ReLU sign mask,
      max-pool argmax, ...) as an array whose first axis is the batch axis, or None. When the state
      differs between x+h and x-h the finite difference straddles a kink and is not a failure.
    - ``close()``: release what the layer holds outside Python (a child process, a file). Called
      once when the check is over, also after an error; must be safe to call more than once.

    Context the network provides (set after ``__init__``, before ``build``):

    - ``self.base_dir``: the folder of the YAML file (``None`` when built without one), so that a
      layer can resolve relative paths among its options the way ``plugins:`` and ``input.file`` are.
    - ``self.input_names``: the names of the tensors the layer reads, in order (``None`` when
      built without a network), so that an error can say which input is wrong.
    """

    mixes_batch: ClassVar[bool] = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        # Non-trainable state (running statistics): never perturbed, never reported as a parameter.
        self.buffers: dict[str, np.ndarray] = {}
        self.training: bool = True
        # Set by the network when it is built from a config; plugins need not touch them.
        self.name: str = type(self).__name__
        self.yaml_path: str | None = None
        self.yaml_where: str | None = None
        self.base_dir: Path | None = None
        self.input_names: list[str] | None = None

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
    - ``forward_many(preds, target) -> (n,)`` (optional): the loss of n stacked batches at once.
    """

    target_kind: ClassVar[str] = "values"
    mixes_batch: ClassVar[bool] = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
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

        The engine evaluates thousands of perturbed copies at once through this. The default is
        one ``forward`` per copy; a loss may override it with a vectorised version, which must
        return what those forwards return (to rounding). ``backward`` is never called after it.
        """
        return np.array([float(self.forward(pred, target)) for pred in preds], dtype=np.float64)

    def branch_state(self) -> np.ndarray | None:
        """Discrete branch state of the last forward (first axis = batch), or None if smooth."""
        return None

    def close(self) -> None:
        """Release external resources (processes, files); the default holds none."""
