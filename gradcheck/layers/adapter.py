"""The ``adapter:`` mapping of an ``object`` layer: which methods and attributes of an existing
class play the layer contract's parts. Parsed and validated here, before any user code runs.

::

    forward: forward            # method names (these are the defaults)
    backward: backward
    params: parameters          # one attribute holding a dict (name -> array) or a list of arrays
    grads: gradients            # their gradients, in the same form (dicts by name, lists by
                                #   position)
    names: [W, b]               # names for a list of params in reports (default: params0, ...)
    params: {W: W, b: b}        # or one attribute per parameter (name -> attribute)
    grads: {W: dW, b: db}
    returns: [dx, W, b]         # what backward returns (default: dx alone), instead of grads:
    flush: flush_gradients      # a method called before every forward (clears what accumulates)
    mode: {attribute: train_flg, train: true, eval: false}   # how train/eval is set, or
    mode: {argument: train_flg}                              # a keyword argument of forward, or
    mode: {methods: {train: unfreeze, eval: freeze}}         # a method for each
"""

from __future__ import annotations

import dataclasses
import difflib

from gradcheck.errors import ConfigError

KEYS = ("forward", "backward", "params", "grads", "names", "returns", "flush", "mode")
MODE_FORMS = ("attribute", "argument", "methods")
DX = "dx"
_WHAT = "object option"


@dataclasses.dataclass(frozen=True)
class Place:
    """Where named arrays live on the object: in one attribute holding a dict or a list
    (``attribute``), or each in its own attribute (``each``: (name, attribute) pairs)."""

    attribute: str | None = None
    each: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Mode:
    """How train/eval is set: an attribute or a forward keyword argument set to the ``train`` /
    ``eval`` value, or (``form`` = methods) the method named ``train`` / ``eval`` called."""

    form: str
    name: str | None
    train: object
    eval: object


@dataclasses.dataclass(frozen=True)
class Adapter:
    """A validated ``adapter:`` mapping (see the module docstring)."""

    forward: str = "forward"
    backward: str = "backward"
    params: Place | None = None
    grads: Place | None = None
    names: tuple[str, ...] | None = None
    returns: tuple[str, ...] = (DX,)
    flush: str | None = None
    mode: Mode | None = None

    @property
    def returned_params(self) -> tuple[str, ...]:
        """The parameters whose gradients backward returns (after dx), in its order."""
        return tuple(slot for slot in self.returns if slot != DX)


def _fail(key: str, message: str, hint: str | None = None):
    raise ConfigError(f"{_WHAT} 'adapter.{key}' {message}", hint=hint)


def _identifier(value, key: str, what: str) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        _fail(key, f"must be {what} (an identifier), got {value!r}.")
    return value


def parse_adapter(value) -> Adapter:
    """Validate an ``adapter:`` mapping (``None``: every default) into an Adapter."""
    if value is None:
        return Adapter()
    if not isinstance(value, dict):
        raise ConfigError(f"{_WHAT} 'adapter' must be a mapping such as {{params: parameters, "
                          f"grads: gradients}}, got {value!r}.", hint=f"keys: {', '.join(KEYS)}")
    for key in value:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            raise ConfigError(f"{_WHAT} 'adapter': unknown key {key!r}.",
                              hint=f"did you mean {close[0]!r}?" if close else
                              f"adapter keys: {', '.join(KEYS)}")
    methods = {key: _identifier(value[key], key, "a method name")
               for key in ("forward", "backward", "flush") if key in value}
    params = _place(value["params"], "params") if "params" in value else None
    grads = _place(value["grads"], "grads") if "grads" in value else None
    adapter = Adapter(**methods, params=params, grads=grads, names=_names(value, params),
                      returns=_returns(value.get("returns", DX)),
                      mode=_mode(value["mode"]) if "mode" in value else None)
    _check_gradient_source(adapter)
    return adapter


def _place(value, key: str) -> Place:
    if isinstance(value, str):
        return Place(attribute=_identifier(value, key, "an attribute name"))
    if isinstance(value, dict) and value:
        for name, attribute in value.items():
            if not isinstance(name, str) or not name.isidentifier() or name == "input":
                _fail(key, f"names parameter {name!r}: a name must be an identifier other than "
                      "'input' (the name of dL/dx in reports).")
            _identifier(attribute, f"{key}.{name}", "an attribute name")
        return Place(each=tuple(value.items()))
    _fail(key, f"must be an attribute name (holding a dict or list of arrays) or a mapping from "
          f"parameter name to attribute, got {value!r}.",
          hint=f"e.g. {key}: parameters, or {key}: {{W: W, b: b}}")


def _names(value: dict, params: Place | None) -> tuple[str, ...] | None:
    if "names" not in value:
        return None
    names = value["names"]
    if params is None or params.attribute is None:
        _fail("names", "names the entries of a list of params, so it needs 'params:' to be one "
              "attribute.", hint="with params: {W: W, b: b} the names are already given")
    if (not isinstance(names, list) or not names or len(set(map(str, names))) != len(names)
            or not all(isinstance(n, str) and n.isidentifier() and n != "input" for n in names)):
        _fail("names", f"must be a list of distinct identifiers such as [W, b], got {names!r}.")
    return tuple(names)


def _returns(value) -> tuple[str, ...]:
    slots = [value] if isinstance(value, str) else value
    if (not isinstance(slots, list) or not all(isinstance(s, str) and s.isidentifier()
                                               for s in slots)
            or slots.count(DX) != 1 or len(set(slots)) != len(slots)):
        _fail("returns", f"must be dx (backward returns dL/dx alone) or a list naming each value "
              f"backward returns, with dx once, such as [dx, W, b]; got {value!r}.")
    return tuple(slots)


def _mode(value) -> Mode:
    forms = [form for form in MODE_FORMS if isinstance(value, dict) and form in value]
    if len(forms) != 1:
        _fail("mode", f"must have exactly one of {', '.join(MODE_FORMS)}, got {value!r}.",
              hint="{attribute: train_flg}, {argument: train_flg} or {methods: {train: "
              "unfreeze, eval: freeze}}")
    (form,) = forms
    if form == "methods":
        methods = value["methods"]
        if set(value) != {"methods"} or not (isinstance(methods, dict)
                                             and set(methods) == {"train", "eval"}):
            _fail("mode", f"with methods takes only {{methods: {{train: NAME, eval: NAME}}}}, "
                  f"got {value!r}.")
        return Mode(form, None, _identifier(methods["train"], "mode.methods.train",
                                            "a method name"),
                    _identifier(methods["eval"], "mode.methods.eval", "a method name"))
    extra = [key for key in value if key not in (form, "train", "eval")]
    if extra:
        _fail("mode", f"with {form} takes train: and eval: values besides, not {extra[0]!r}.")
    return Mode(form, _identifier(value[form], f"mode.{form}", f"an {form} name"),
                value.get("train", True), value.get("eval", False))


def _check_gradient_source(adapter: Adapter) -> None:
    """Every parameter needs exactly one source of its gradient: ``grads:`` or ``returns:``."""
    returned = adapter.returned_params
    if returned and adapter.grads is not None:
        _fail("grads", "and 'returns:' both say where gradients are: give one.",
              hint="returns: [dx, W, b] when backward returns them, grads: when it stores them")
    if returned and adapter.params is None:
        _fail("returns", f"names gradients of {', '.join(returned)}, but 'params:' does not say "
              "where those parameters live.", hint="e.g. params: {W: W, b: b}")
    if adapter.params is not None and not returned and adapter.grads is None:
        _fail("params", "is given, but not where their gradients are.",
              hint="add grads: (where backward stores them) or returns: [dx, ...] (when "
              "backward returns them)")
    if adapter.grads is not None and adapter.params is None:
        _fail("grads", "is given without 'params:'.", hint="say where the parameters live")
    params, grads = adapter.params, adapter.grads
    if params is not None and params.each:
        names = [name for name, _ in params.each]
        if returned and set(returned) != set(names):
            _fail("returns", f"must name each parameter of params: ({', '.join(names)}) once, "
                  f"got {list(adapter.returns)}.")
        if grads is not None and grads.each and {n for n, _ in grads.each} != set(names):
            _fail("grads", f"must name the same parameters as params: ({', '.join(names)}).")
    elif params is not None and grads is not None and grads.each:
        _fail("grads", "is one attribute per parameter but params: is one attribute: give "
              "both in the same form.")
