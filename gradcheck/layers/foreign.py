"""The ``object`` layer: an instance of an existing layer class, checked through ``adapter:``.

Parameters stay where the class keeps them: the layer's ``params`` hold the very arrays the
object holds (the engine perturbs them in place), and before every call the arrays in
``params`` are put back where the adapter says, since the network may have converted them to its
dtype. A params dict entry with no gradient is a buffer (numpy-ml keeps BatchNorm's running
statistics in ``parameters``): it is snapshotted once and restored before every forward, so a
train-mode forward that updates it cannot make two evaluations differ.
"""

from __future__ import annotations

import copy

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import ConfigError, LayerError
from gradcheck.layers import calls
from gradcheck.registry import register_layer


@register_layer("object")
class ObjectLayer(Layer):
    """An object of an existing class, its methods and attributes named by ``adapter:``.

    ``constructor``: ``file.py:Class`` or ``module:Class`` (or a factory function), called with
    ``args``/``kwargs`` (its global random draws come from the config's seed). ``adapter``: see
    ``gradcheck.layers.adapter`` and the README (params/grads as dicts, lists paired by position
    or one attribute each; backward returning dx or ``[dx, W, b]``; ``flush`` before every
    forward; train/eval by attribute, forward argument or methods). ``mixes_batch``: as for
    ``function``. x: (batch, *input_shape); the output shape is found at build.
    """

    def __init__(self, constructor, adapter=None, args=None, kwargs=None,
                 mixes_batch: bool = True):
        # The adapter's parser is imported by the layer that uses it: 2 ms of every check's
        # start-up otherwise (registering this layer must not cost it).
        from gradcheck.layers.adapter import parse_adapter

        super().__init__()
        self.constructor_ref = constructor
        self.adapter = parse_adapter(adapter)
        self.args, self.kwargs = calls.extra_arguments(args, kwargs, "object")
        self.mixes_batch = calls.check_mixes_batch(mixes_batch, "object")
        self.instance = None
        self._seed = 0
        self._keys: dict[str, object] = {}  # parameter -> its dict key, list index or attribute
        self._applied_training: bool | None = None
        self._x_shape: tuple[int, ...] | None = None

    # -- the Layer contract -------------------------------------------------------------------

    def build(self, input_shape, rng):
        factory = calls.resolve(self.constructor_ref, "constructor", self)
        self._seed = int(rng.integers(2**32))
        self.params, self.buffers, self._keys = {}, {}, {}
        self._applied_training = None
        self.instance = calls.call(f"constructor {self._label}", self._seed, factory,
                                      *copy.deepcopy(self.args), **copy.deepcopy(self.kwargs))
        for key in ("forward", "backward", "flush"):
            self._method(getattr(self.adapter, key), key)
        if self.adapter.mode is not None and self.adapter.mode.form == "methods":
            self._method(self.adapter.mode.train, "mode.methods.train")
            self._method(self.adapter.mode.eval, "mode.methods.eval")
        x = rng.standard_normal((calls.PROBE_BATCH, *input_shape))
        grad_out = rng.standard_normal(self.forward(x).shape)
        # Classes create parameters lazily (numpy-ml, on the first forward) and gradient entries
        # in the first backward: only after both is it known which dict entries have gradients.
        self.backward(grad_out)
        self._bind_params()
        out = self.forward(x)
        self.backward(rng.standard_normal(out.shape))
        if not self.mixes_batch:
            calls.check_independent(self, input_shape, rng)
        return tuple(int(d) for d in out.shape[1:])

    def forward(self, x):
        with calls.saved_rng():
            return self._forward(x)

    def forward_groups(self, x, group_size):
        """``forward`` on each block of ``group_size`` rows as its own batch, sharing one save
        and restore of the global random state (the engine's copies of a batch-mixing layer)."""
        with calls.saved_rng():
            return np.concatenate([self._forward(x[start:start + group_size])
                                   for start in range(0, len(x), group_size)])

    def _forward(self, x):
        self._put_back()
        adapter = self.adapter
        keywords = {}
        if adapter.mode is not None:
            keywords = self._apply_mode()
        if adapter.flush is not None:
            self._call(adapter.flush)
        out = self._call(adapter.forward, np.array(x, copy=True), **keywords)
        self._x_shape = x.shape
        return calls.expect_batch(out, f"the output of {self._label}.{adapter.forward}",
                                     x.shape[0]).astype(x.dtype)

    def backward(self, grad_out):
        from gradcheck.layers.adapter import DX

        if self._x_shape is None:
            raise LayerError("backward was called before forward.")
        self._put_back(buffers=False)
        self._zero_stored_grads()
        adapter = self.adapter
        label = f"{self._label}.{adapter.backward}"
        with calls.saved_rng():
            result = self._call(adapter.backward, np.array(grad_out, copy=True))
        if adapter.returns == (DX,) and isinstance(result, list) and adapter.flush is None:
            raise LayerError(f"{label} returned {calls.describe(result)}, expected dx.",
                             hint="a class that keeps every forward's input (numpy-ml) returns "
                             "one dx per stored input: name the method that clears them in "
                             "adapter.flush")
        if adapter.returns == (DX,):
            returned = {DX: result}
        elif isinstance(result, (tuple, list)) and len(result) == len(adapter.returns):
            returned = dict(zip(adapter.returns, result))
        else:
            raise LayerError(f"{label} returned {calls.describe(result)}; adapter.returns "
                             f"expects {len(adapter.returns)} values {list(adapter.returns)}.",
                             hint="list in returns: what backward returns, in its order")
        dx = calls.expect_array(returned[DX], f"dx from {label}", self._x_shape,
                                   "the shape of x")
        for name, param in self.params.items():
            grad = returned[name] if name in returned else self._stored_grad(name)
            grad = calls.expect_array(grad, f"the gradient of {name!r} from {label}",
                                         param.shape, f"the shape of parameter {name!r}")
            self.grads[name] = grad.astype(param.dtype)
        return dx.astype(grad_out.dtype)

    # -- where the arrays live ----------------------------------------------------------------

    @property
    def _label(self) -> str:
        return calls.label_of(self.constructor_ref)

    def _config_error(self, key: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"adapter.{key}: {message}",
                           path=calls.option_path(self, f"adapter.{key}"),
                           where=self.yaml_where, hint=hint)

    def _method(self, name: str | None, key: str):
        if name is None:
            return None
        method = getattr(self.instance, name, None)
        if not callable(method):
            public = [n for n in dir(self.instance) if not n.startswith("_")
                      and callable(getattr(self.instance, n, None))]
            raise self._config_error(key, f"{self._label} has no method {name!r}.",
                                     hint=f"its methods: {', '.join(public) or 'none'}")
        return method

    def _call(self, name: str, *args, **kwargs):
        return calls.call_seeded(f"{self._label}.{name}", self._seed,
                                    self._method(name, name), *args, **kwargs)

    def _attribute(self, attribute: str, key: str):
        if not hasattr(self.instance, attribute):
            raise self._config_error(key, f"{self._label} has no attribute {attribute!r}.")
        return getattr(self.instance, attribute)

    def _bind_params(self) -> None:
        """Find the parameters (and a params dict's buffers) where the adapter says."""
        place = self.adapter.params
        if place is None:
            return
        if place.each:
            found = {name: self._attribute(attribute, f"params.{name}")
                     for name, attribute in place.each}
            self._keys = {name: attribute for name, attribute in place.each}
        else:
            held = self._attribute(place.attribute, "params")
            if isinstance(held, dict):
                if self.adapter.names is not None:
                    raise self._config_error("names", f"names a list of params, but "
                                             f"{place.attribute} is a dict: its keys are the "
                                             "names.", hint="remove names:")
                names = self._dict_param_names(held)
                # Arrays only: a number kept among the parameters is a setting, not a state.
                self.buffers = {key: np.array(value, copy=True) for key, value in held.items()
                                if key not in names and isinstance(value, np.ndarray)}
                self._keys = {name: name for name in names}
                found = {name: held[name] for name in names}
            elif isinstance(held, (list, tuple)):
                names = self.adapter.names or [f"{place.attribute}{i}" for i in range(len(held))]
                if len(names) != len(held):
                    raise self._config_error("names", f"gives {len(names)} names for the "
                                             f"{len(held)} arrays in {place.attribute}.")
                self._keys = {name: i for i, name in enumerate(names)}
                found = dict(zip(names, held))
            else:
                raise self._config_error("params", f"attribute {place.attribute!r} holds "
                                         f"{calls.describe(held)}, not a dict or list.")
        for name, value in found.items():
            if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
                raise LayerError(f"parameter {name!r} of {self._label} is "
                                 f"{calls.describe(value)}, expected a float numpy array.")
        self.params = found

    def _dict_param_names(self, held: dict) -> list[str]:
        """A params dict's parameters: the entries backward returns, or those with a gradient
        entry; the others are buffers."""
        returned = self.adapter.returned_params
        if returned:
            missing = [name for name in returned if name not in held]
            if missing:
                raise self._config_error("returns", f"names {missing[0]!r}, which is not in "
                                         f"{self.adapter.params.attribute} "
                                         f"(keys: {', '.join(map(str, held))}).")
            return list(returned)
        grads = self._attribute(self.adapter.grads.attribute, "grads") \
            if self.adapter.grads.attribute else dict(self.adapter.grads.each)
        if not isinstance(grads, dict):
            raise self._config_error("grads", "must be a dict when params is a dict: dicts pair "
                                     "by name, lists by position.")
        return [key for key in held if key in grads]

    def _put_back(self, buffers: bool = True) -> None:
        """Put the arrays of ``params`` (and copies of the buffers) where the object reads them."""
        place = self.adapter.params
        if place is None or not self._keys:
            return  # no parameters, or not found yet (the probe calls of build)
        if place.each:
            for name, array in self.params.items():
                if getattr(self.instance, self._keys[name]) is not array:
                    setattr(self.instance, self._keys[name], array)
            return
        held = getattr(self.instance, place.attribute)
        if isinstance(held, tuple):
            held = list(held)
            setattr(self.instance, place.attribute, held)
        for name, array in self.params.items():
            if held[self._keys[name]] is not array:
                held[self._keys[name]] = array
        if buffers:
            for name, value in self.buffers.items():
                held[name] = value.copy()

    def _stored_grad(self, name: str):
        grads = self.adapter.grads
        if grads.each:
            return self._attribute(dict(grads.each)[name], f"grads.{name}")
        held = self._attribute(grads.attribute, "grads")
        if isinstance(held, dict):
            if name not in held:
                raise LayerError(f"{self._label}.{self.adapter.backward} stored no gradient for "
                                 f"{name!r} in {grads.attribute}.")
            return held[name]
        if isinstance(held, (list, tuple)) and len(held) == len(self.params):
            return held[list(self.params).index(name)]
        raise self._config_error("grads", f"attribute {grads.attribute!r} holds "
                                 f"{calls.describe(held)}; expected a list of "
                                 f"{len(self.params)} gradients, paired with params by position.")

    def _zero_stored_grads(self) -> None:
        """Zero stored gradients in place before backward: a class that accumulates (+=) then
        gives this backward's gradient alone, and one that overwrites is unaffected."""
        if self.adapter.grads is None:
            return
        for name in self.params:
            grad = self._stored_grad(name)
            if isinstance(grad, np.ndarray) and grad.flags.writeable:
                grad[...] = 0

    def _apply_mode(self) -> dict:
        """Set train/eval on the object as ``self.training`` says; forward's keyword arguments."""
        mode = self.adapter.mode
        value = mode.train if self.training else mode.eval
        if mode.form == "argument":
            return {mode.name: value}
        if mode.form == "attribute":
            setattr(self.instance, mode.name, value)
        elif self._applied_training is not self.training:
            self._call(value)
        self._applied_training = self.training
        return {}
