"""Course-style function pairs as a layer and as a loss, with no adapter code.

``out, cache = forward(x, *params, *args, **kwargs)`` and ``dx, *dparams = backward(dout,
cache)`` (cs231n's ``affine_forward``/``affine_backward``, ``conv_forward_naive``, ...), and
``loss, dscores = fn(scores, y)`` (``softmax_loss``). Calls go through
``gradcheck.layers.calls``: the global random state is the layer's own during a call and
restored after it, and the function gets copies of x, dout and the extra arguments.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect

import numpy as np

from gradcheck.contract import Layer, Loss
from gradcheck.errors import ConfigError, LayerError
from gradcheck.layers import calls
from gradcheck.layers.init import Init, parse_init
from gradcheck.registry import register_layer, register_loss

PARAM_KEYS = ("shape", "init", "fan_in", "fan_out")
TARGET_KINDS = ("labels", "values")


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """A parameter drawn at build: ``init`` over ``shape`` with the given fans."""

    shape: tuple[int, ...]
    init: Init
    fan_in: int
    fan_out: int


def default_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape``, as cs231n lays weights out.

    (n,): n and n (a bias or a scale). (in, out): in and out (``affine_forward``'s w is (D, M)).
    (filters, channels, *kernel): channels * prod(kernel) and filters * prod(kernel)
    (``conv_forward_naive``'s w is (F, C, HH, WW)).
    """
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def parse_params(params, layer: str) -> dict[str, ParamSpec | np.ndarray]:
    """``params:`` as name -> ParamSpec, in the order given (the order forward takes them).

    Each value is ``{shape: [...], init: ..., fan_in: n, fan_out: n}`` (YAML; only ``shape`` is
    required, init defaults to he) or an array used as it is (the Python API).
    """
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError(f"{layer} option 'params' must map each parameter's name to "
                          f"{{shape: [...], init: ...}}, got {calls.describe(params)}.",
                          hint="e.g. params: {w: {shape: [4, 3]}, b: {shape: [3], init: zeros}}")
    specs: dict[str, ParamSpec | np.ndarray] = {}
    for name, spec in params.items():
        option = f"params.{name}"
        if not isinstance(name, str) or not name.isidentifier() or name == "input":
            raise ConfigError(f"{layer} option 'params': parameter name {name!r} must be an "
                              "identifier other than 'input' (the name of dL/dx in reports).")
        specs[name] = spec if isinstance(spec, np.ndarray) else _param_spec(spec, option, layer)
    return specs


def _param_spec(spec, option: str, layer: str) -> ParamSpec:
    if not isinstance(spec, dict) or "shape" not in spec:
        raise ConfigError(f"{layer} option {option!r} must be a mapping with 'shape:', got "
                          f"{spec!r}.", hint="e.g. {shape: [4, 3], init: he}")
    unknown = [key for key in spec if key not in PARAM_KEYS]
    if unknown:
        raise ConfigError(f"{layer} option {option!r}: unknown key {unknown[0]!r}.",
                          hint=f"a parameter takes {', '.join(PARAM_KEYS)}")
    shape = spec["shape"]
    if (not isinstance(shape, list) or not shape or
            not all(_positive_int(d) for d in shape)):
        raise ConfigError(f"{layer} option '{option}.shape' must be a list of positive integers "
                          f"such as [4, 3], got {shape!r}.")
    shape = tuple(shape)
    fan_in, fan_out = default_fans(shape)
    for key in ("fan_in", "fan_out"):
        if key in spec and not _positive_int(spec[key]):
            raise ConfigError(f"{layer} option '{option}.{key}' must be a positive integer, got "
                              f"{spec[key]!r}.")
    init = parse_init(spec.get("init", "he"), f"{option}.init", layer)
    return ParamSpec(shape, init, spec.get("fan_in", fan_in), spec.get("fan_out", fan_out))


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@register_layer("function")
class Function(Layer):
    """A forward/backward function pair in the course style, checked as it is.

    out, cache = forward(x, *params, *args, **kwargs); dx, *dparams = backward(dout, cache).
    ``forward``/``backward``: ``file.py:name`` (relative to the YAML file) or ``module:name``.
    ``params``: name -> ``{shape, init, fan_in, fan_out}`` in the order forward takes them (init
    defaults to he; fans follow ``default_fans``). ``args``/``kwargs``: extra arguments after the
    params, copied afresh for every call, so a forward that writes into its ``bn_param`` leaves
    the next call unchanged. ``mixes_batch``: set false for a function whose output row n depends
    on input row n alone (affine, relu, conv, pooling): checks stack many copies in one call;
    build verifies it. x: (batch, *input_shape); out: (batch, *output_shape), found at build by
    calling forward on a probe batch of 3 samples.
    """

    def __init__(self, forward, backward, params=None, args=None, kwargs=None,
                 mixes_batch: bool = True):
        super().__init__()
        self.forward_ref, self.backward_ref = forward, backward
        self.specs = parse_params(params, "function")
        self.args, self.kwargs = calls.extra_arguments(args, kwargs, "function")
        self.mixes_batch = calls.check_mixes_batch(mixes_batch, "function")
        self._forward_fn = self._backward_fn = None
        self._seed = 0
        self._cache = None
        self._x_shape: tuple[int, ...] | None = None

    def build(self, input_shape, rng):
        self._forward_fn = calls.resolve(self.forward_ref, "forward", self)
        self._backward_fn = calls.resolve(self.backward_ref, "backward", self)
        self._check_signatures()
        self.params = {}
        for name, spec in self.specs.items():
            if isinstance(spec, np.ndarray):
                self.params[name] = spec
            else:
                self.params[name] = spec.init(rng, spec.shape, spec.fan_in, spec.fan_out)
        self._seed = int(rng.integers(2**32))
        x = rng.standard_normal((calls.PROBE_BATCH, *input_shape))
        out = self.forward(x)
        # Validate backward's gradients now, so a wrong count is an error of the build.
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
        label = f"forward {calls.label_of(self.forward_ref)}"
        result = calls.call_seeded(label, self._seed, self._forward_fn, np.array(x, copy=True),
                                      *self.params.values(), *copy.deepcopy(self.args),
                                      **copy.deepcopy(self.kwargs))
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise LayerError(f"{label} returned {calls.describe(result)}; expected a pair "
                             "(out, cache).", path=calls.option_path(self, "forward"),
                             hint="a course-style forward ends with 'return out, cache'; "
                             "backward receives the cache as it is")
        out, self._cache = result
        self._x_shape = x.shape
        return calls.expect_batch(out, f"the out that {label} returned",
                                     x.shape[0]).astype(x.dtype)

    def backward(self, grad_out):
        if self._x_shape is None:
            raise LayerError("backward was called before forward.")
        label = f"backward {calls.label_of(self.backward_ref)}"
        result = calls.call(label, self._seed, self._backward_fn,
                               np.array(grad_out, copy=True), self._cache)
        names = list(self.params)
        expected = ", ".join(["dx", *(f"d{name}" for name in names)])
        if not names and isinstance(result, np.ndarray):
            result = (result,)
        if not (isinstance(result, (tuple, list)) and len(result) == len(names) + 1):
            raise LayerError(f"{label} returned {calls.describe(result)}; expected "
                             f"{len(names) + 1} gradient(s) ({expected}): dx, then one per "
                             "parameter in forward's order.",
                             path=calls.option_path(self, "backward"),
                             hint="params: in the YAML lists the parameters forward takes after x")
        dx = calls.expect_array(result[0], f"dx from {label}", self._x_shape,
                                   "the shape of x")
        for name, grad in zip(names, result[1:]):
            param = self.params[name]
            grad = calls.expect_array(grad, f"d{name} from {label}", param.shape,
                                         f"the shape of parameter {name!r}")
            self.grads[name] = grad.astype(param.dtype)
        return dx.astype(grad_out.dtype)

    def _check_signatures(self) -> None:
        """Refuse, at build, a forward or backward that cannot take the arguments it will get."""
        forward_args = ["x", *self.specs, *(f"args[{i}]" for i in range(len(self.args)))]
        expected = [("forward", self.forward_ref, self._forward_fn, forward_args, self.kwargs),
                    ("backward", self.backward_ref, self._backward_fn, ["dout", "cache"], {})]
        for key, ref, fn, positional, keywords in expected:
            try:
                inspect.signature(fn).bind(*positional, **keywords)
            except ValueError:
                continue  # a builtin without a signature: its first call will tell
            except TypeError as exc:
                raise ConfigError(f"{calls.label_of(ref)}{inspect.signature(fn)} cannot be "
                                  f"called as ({', '.join([*positional, *keywords])}): {exc}.",
                                  path=calls.option_path(self, key),
                                  hint="forward takes x, then params: in their order, then "
                                  "args: and kwargs:; backward takes (dout, cache)") from None


@register_loss("function")
class FunctionLoss(Loss):
    """A loss written as one function: loss, dscores = fn(scores, y) (cs231n's softmax_loss).

    ``fn``: ``file.py:name`` or ``module:name``. ``target_kind``: ``labels`` (y: one integer
    class per sample, as softmax_loss and svm_loss take) or ``values`` (y shaped like scores).
    scores, dscores: (batch, *shape); loss: a scalar.
    """

    target_kind = "labels"

    def __init__(self, fn, target_kind: str = "labels"):
        super().__init__()
        if target_kind not in TARGET_KINDS:
            raise ConfigError(f"function loss option 'target_kind' must be labels or values, got "
                              f"{target_kind!r}.", hint="labels: one class index per sample "
                              "(softmax_loss, svm_loss); values: targets shaped like the scores")
        self.fn_ref = fn
        self.target_kind = target_kind
        self._fn = None
        self._grad: np.ndarray | None = None

    def build(self, input_shape):
        self._fn = calls.resolve(self.fn_ref, "fn", self)
        rng = np.random.default_rng(0)
        scores = rng.standard_normal((calls.PROBE_BATCH, *input_shape))
        if self.target_kind == "labels":
            target = rng.integers(0, int(np.prod(input_shape)), calls.PROBE_BATCH)
        else:
            target = rng.uniform(size=scores.shape)
        self.forward(scores, target)

    def forward(self, pred, target):
        with calls.saved_rng():
            return self._forward(pred, target)

    def forward_many(self, preds, target):
        with calls.saved_rng():
            return np.array([self._forward(pred, target) for pred in preds])

    def _forward(self, pred, target):
        label = f"loss function {calls.label_of(self.fn_ref)}"
        result = calls.call_seeded(label, 0, self._fn, np.array(pred, copy=True),
                                      np.array(target, copy=True))
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise LayerError(f"{label} returned {calls.describe(result)}; expected a pair "
                             "(loss, dscores).", hint="a course-style loss ends with 'return "
                             "loss, dx'")
        value, grad = result
        if np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype, np.number):
            raise LayerError(f"{label} returned a loss that is {calls.describe(value)}, "
                             "expected one number.")
        grad = calls.expect_array(grad, f"dscores from {label}", pred.shape,
                                     "the shape of the scores")
        self._grad = grad.astype(pred.dtype)
        return float(value)

    def backward(self):
        if self._grad is None:
            raise LayerError("backward was called before forward.")
        return self._grad
