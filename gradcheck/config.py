"""Load and validate a network description (YAML file or dict) into a NetworkSpec.

Every key is checked: unknown keys, wrong types and bad values raise ConfigError naming the
YAML path, the file position and a did-you-mean, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from gradcheck import settings as check_settings
from gradcheck.errors import ConfigError
from gradcheck.yamlsource import Source, _child, read_yaml_file

TOP_KEYS = ("name", "seed", "dtype", "plugins", "input", "layers", "loss", "target", "check", "train")
DTYPES = check_settings.DTYPES
OPTIMIZERS = ("sgd", "adam")
DATA_KINDS = ("normal", "uniform")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where input or target values come from: generated (``data``) or loaded (``file``/``key``)."""

    data: str | None = None
    mean: float = 0.0
    std: float = 1.0
    low: float = 0.0
    high: float = 1.0
    file: Path | None = None
    key: str | None = None
    path: str = ""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Per-sample input shape (no batch axis) and batch size; ``None`` when taken from a file."""

    shape: tuple[int, ...] | None
    batch: int | None
    source: DataSpec


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One ``layers:`` entry (or the ``loss:``): registered type, unique name, constructor options."""

    type: str
    name: str
    options: dict[str, Any]
    path: str


@dataclasses.dataclass(frozen=True)
class CheckSpec:
    """The ``check:`` block; ``None`` means "use the tolerance policy's default for the dtype"."""

    mode: str | None = None
    eps: float | None = None
    rtol: float | None = None
    atol: float | None = None
    samples: int | None = None
    directions: int | None = None
    max_seconds: float | None = None
    nondet_tol: float | None = None


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """The ``train:`` block: the optimizer settings the user trains with."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    steps: int = 200


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """A validated network description, ready to be built."""

    name: str
    seed: int
    dtype: str
    plugins: tuple[str, ...]
    input: InputSpec
    layers: tuple[LayerSpec, ...]
    loss: LayerSpec
    target: DataSpec | None
    check: CheckSpec
    train: TrainSpec | None
    base_dir: Path
    source: Source

    def error(self, message: str, path: str | None = None, hint: str | None = None,
              cls: type = ConfigError) -> Exception:
        """A user error located at ``path`` in this spec's YAML."""
        return cls(message, path=path or None, where=self.source.where(path), hint=hint)


class _Reader:
    """Typed accessors over the parsed document that raise located ConfigErrors."""

    def __init__(self, source: Source):
        self.source = source

    def fail(self, path: str, message: str, hint: str | None = None):
        raise ConfigError(message, path=path or None, where=self.source.where(path), hint=hint)

    def mapping(self, value, path: str, allowed: tuple[str, ...], what: str) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"{what} must be a mapping, found {_describe(value)}.")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
                self.fail(_child(path, key), f"unknown key {key!r} in {what}.", hint)
        return value

    def integer(self, value, path: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, found {_describe(value)}.")
        if minimum is not None and value < minimum:
            self.fail(path, f"expected an integer >= {minimum}, found {value}.")
        return value

    def number(self, value, path: str, positive: bool = False, nonnegative: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            self.fail(path, f"expected a number, found {_describe(value)}.",
                      "write floats like 1.0e-6 (YAML reads 1e-6 without a dot as a string)"
                      if isinstance(value, str) else None)
        if positive and not value > 0:
            self.fail(path, f"expected a number > 0, found {value}.")
        if nonnegative and value < 0:
            self.fail(path, f"expected a number >= 0, found {value}.")
        return float(value)

    def choice(self, value, path: str, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
            self.fail(path, f"expected one of {', '.join(choices)}; found {_describe(value)}.", hint)
        return value

    def string(self, value, path: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(path, f"expected a non-empty string, found {_describe(value)}.")
        return value


def _describe(value) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"


def load_config(source: str | Path | dict, base_dir: str | Path | None = None) -> NetworkSpec:
    """Validate a network description given as a YAML file path, or as an already-parsed dict.

    ``base_dir`` resolves relative plugin and data paths (default: the YAML file's folder, or the
    current directory for a dict).
    """
    if isinstance(source, dict):
        parsed = Source(source, {}, None)
        folder = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(source)
        parsed = read_yaml_file(path)
        folder = Path(base_dir) if base_dir is not None else path.resolve().parent
    return _validate(parsed, folder)


def _validate(source: Source, base_dir: Path) -> NetworkSpec:
    r = _Reader(source)
    doc = source.data
    if doc is None:
        r.fail("", "the file is empty; a network needs at least 'input:', 'layers:' and 'loss:'.",
               "run 'gradcheck init' to write a commented starter file")
    doc = r.mapping(doc, "", TOP_KEYS, "the network description")
    for required in ("input", "layers", "loss"):
        if required not in doc:
            r.fail("", f"missing required key {required!r}.",
                   "a network needs 'input:', 'layers:' and 'loss:'; see 'gradcheck init'")

    name = r.string(doc["name"], "name") if "name" in doc else (
        Path(source.filename).stem if source.filename else "network")
    seed = r.integer(doc.get("seed", 0), "seed", minimum=0)
    dtype = r.choice(doc.get("dtype", "float64"), "dtype", DTYPES)
    plugins = _plugins(r, doc.get("plugins", []))
    input_spec = _input(r, doc["input"], base_dir)
    layers = _layers(r, doc["layers"])
    loss = _layer_entry(r, doc["loss"], "loss", "loss")
    if loss.name == loss.type:
        loss = dataclasses.replace(loss, name="loss")
    target = _data(r, doc["target"], "target", base_dir) if "target" in doc else None
    check = _check(r, doc.get("check", {}))
    train = _train(r, doc["train"]) if "train" in doc else None
    return NetworkSpec(name, seed, dtype, plugins, input_spec, layers, loss, target, check, train,
                       base_dir, source)


def _plugins(r: _Reader, value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        r.fail("plugins", f"expected a list of plugin files or module names, found {_describe(value)}.")
    return tuple(r.string(item, f"plugins[{i}]") for i, item in enumerate(value))


def _shape(r: _Reader, value, path: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        r.fail(path, f"expected a per-sample shape such as [1, 28, 28], found {_describe(value)}.",
               "give the shape of one sample without the batch axis")
    return tuple(r.integer(d, f"{path}[{i}]", minimum=1) for i, d in enumerate(value))


def _data(r: _Reader, value, path: str, base_dir: Path, extra: tuple[str, ...] = ()) -> DataSpec:
    keys = ("data", "mean", "std", "low", "high", "file", "key") + extra
    block = r.mapping(value, path, keys, f"the {path!r} block")
    if "file" in block:
        for key in ("data", "mean", "std", "low", "high"):
            if key in block:
                r.fail(_child(path, key), f"{key!r} cannot be combined with 'file:'.",
                       "either load the values from a file or generate them, not both")
        file = base_dir / r.string(block["file"], _child(path, "file"))
        key = r.string(block["key"], _child(path, "key")) if "key" in block else None
        return DataSpec(file=file, key=key, path=path)
    if "key" in block:
        r.fail(_child(path, "key"), "'key:' needs 'file:' beside it.")
    kind = r.choice(block.get("data", "normal"), _child(path, "data"), DATA_KINDS)
    for key in ("mean", "std", "low", "high"):
        if key in block:
            r.number(block[key], _child(path, key))
    allowed = ("mean", "std") if kind == "normal" else ("low", "high")
    for key in ("mean", "std", "low", "high"):
        if key in block and key not in allowed:
            r.fail(_child(path, key), f"{key!r} does not apply to data: {kind}.",
                   f"data: {kind} takes {' and '.join(allowed)}")
    spec = DataSpec(data=kind, path=path, **{k: float(block[k]) for k in allowed if k in block})
    if kind == "normal" and spec.std < 0:
        r.fail(_child(path, "std"), f"std must be >= 0, found {spec.std}.")
    if kind == "uniform" and not spec.low < spec.high:
        r.fail(path, f"uniform data needs low < high, found low={spec.low}, high={spec.high}.")
    return spec


def _input(r: _Reader, value, base_dir: Path) -> InputSpec:
    block = r.mapping(value, "input", ("shape", "batch", "data", "mean", "std", "low", "high",
                                       "file", "key"), "the 'input' block")
    source = _data(r, {k: v for k, v in block.items() if k not in ("shape", "batch")},
                   "input", base_dir)
    if source.file is not None:
        for key in ("shape", "batch"):
            if key in block:
                r.fail(f"input.{key}", f"{key!r} is taken from the data file; do not set it too.")
        return InputSpec(None, None, source)
    if "shape" not in block:
        r.fail("input", "missing 'shape:' (the per-sample input shape, e.g. [1, 28, 28]).",
               "or load inputs with 'file:' and 'key:'")
    shape = _shape(r, block["shape"], "input.shape")
    batch = r.integer(block.get("batch", 8), "input.batch", minimum=1)
    return InputSpec(shape, batch, source)


def _layer_entry(r: _Reader, entry, path: str, default_name: str) -> LayerSpec:
    if isinstance(entry, str):
        return LayerSpec(entry, default_name, {}, path)
    if not isinstance(entry, dict):
        r.fail(path, f"expected a layer type name or a mapping with 'type:', found {_describe(entry)}.")
    if "type" not in entry:
        r.fail(path, "missing 'type:'.", "write e.g. {type: dense, units: 10}")
    kind = r.string(entry["type"], _child(path, "type"))
    name = r.string(entry["name"], _child(path, "name")) if "name" in entry else default_name
    options = {k: v for k, v in entry.items() if k not in ("type", "name")}
    for key in options:
        if not isinstance(key, str) or not key.isidentifier():
            r.fail(_child(path, key), f"option name {key!r} is not a valid identifier.")
    return LayerSpec(kind, name, options, path)


def _layers(r: _Reader, value) -> tuple[LayerSpec, ...]:
    if not isinstance(value, list) or not value:
        r.fail("layers", f"expected a non-empty list of layers, found {_describe(value)}.")
    counts: dict[str, int] = {}
    specs = []
    for i, entry in enumerate(value):
        kind = entry if isinstance(entry, str) else entry.get("type") if isinstance(entry, dict) else None
        counts[str(kind)] = counts.get(str(kind), 0) + 1
        specs.append(_layer_entry(r, entry, f"layers[{i}]", f"{kind}_{counts[str(kind)]}"))
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            r.fail(_child(spec.path, "name"), f"layer name {spec.name!r} is used twice "
                   f"(also at {seen[spec.name]}).", "give every layer a unique name")
        seen[spec.name] = spec.path
    return tuple(specs)


def _check(r: _Reader, value) -> CheckSpec:
    block = r.mapping(value, "check", check_settings.CHECK_KEYS, "the 'check' block")
    values = {}
    for key, raw in block.items():
        try:
            values[key] = check_settings.validate(key, raw)
        except ConfigError as exc:
            r.fail(_child("check", key), exc.message, exc.hint)
    return CheckSpec(**values)


def _train(r: _Reader, value) -> TrainSpec:
    block = r.mapping(value, "train", ("optimizer", "lr", "momentum", "weight_decay", "steps"),
                      "the 'train' block")
    momentum = r.number(block.get("momentum", 0.0), "train.momentum", nonnegative=True)
    if momentum >= 1:
        r.fail("train.momentum", f"momentum must be in [0, 1), found {momentum}.")
    return TrainSpec(
        optimizer=r.choice(block.get("optimizer", "sgd"), "train.optimizer", OPTIMIZERS),
        lr=r.number(block.get("lr", 0.01), "train.lr", positive=True),
        momentum=momentum,
        weight_decay=r.number(block.get("weight_decay", 0.0), "train.weight_decay", nonnegative=True),
        steps=r.integer(block.get("steps", 200), "train.steps", minimum=1),
    )
