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
from gradcheck import wiring
from gradcheck.errors import ConfigError
from gradcheck.yamlsource import Source, _child, read_yaml_file

TOP_KEYS = ("name", "seed", "dtype", "plugins", "input", "inputs", "layers", "loss", "target",
            "check", "train")
INPUT_KEYS = ("shape", "batch", "data", "mean", "std", "low", "high", "file", "key", "dtype",
              "vocab")
# What a network input holds: real values (the network's float dtype) or integer token ids.
INPUT_DTYPES = ("float", "int")
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
    # Targets only: integer labels (``dtype: int``) of ``vocab`` classes.
    dtype: str | None = None
    vocab: int | None = None


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One network input: its name, per-sample shape (no batch axis) and batch size (``None``
    when taken from a file), where its values come from, and whether it holds real values
    (``dtype`` "float") or integer ids in [0, ``vocab``) ("int")."""

    name: str
    shape: tuple[int, ...] | None
    batch: int | None
    source: DataSpec
    dtype: str = "float"
    vocab: int | None = None
    path: str = "input"


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One ``layers:`` entry (or the ``loss:``): registered type, unique name, constructor options."""

    type: str
    name: str
    options: dict[str, Any]
    path: str
    # The tensors the layer reads (network inputs, layer names, ``layer.k`` for the k-th output
    # of a layer with several); None: the previous layer (the last layer, for the loss).
    inputs: tuple[str, ...] | None = None
    # Parameters taken from another layer: name -> (layer, parameter, transposed).
    share: dict[str, tuple[str, str, bool]] = dataclasses.field(default_factory=dict)


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
    inputs: tuple[InputSpec, ...]
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
    if "input" in doc and "inputs" in doc:
        r.fail("inputs", "'input:' and 'inputs:' cannot both be given.",
               "one input: 'input:'; several, by name: 'inputs: {left: {...}, right: {...}}'")
    for required in ("input", "layers", "loss"):
        if required not in doc and not (required == "input" and "inputs" in doc):
            r.fail("", f"missing required key {required!r}.",
                   "a network needs 'input:' (or 'inputs:'), 'layers:' and 'loss:'; see "
                   "'gradcheck init'")

    name = r.string(doc["name"], "name") if "name" in doc else (
        Path(source.filename).stem if source.filename else "network")
    seed = r.integer(doc.get("seed", 0), "seed", minimum=0)
    dtype = r.choice(doc.get("dtype", "float64"), "dtype", DTYPES)
    plugins = _plugins(r, doc.get("plugins", []))
    inputs = (_inputs(r, doc["inputs"], base_dir) if "inputs" in doc
              else (_input(r, doc["input"], base_dir, "input", "input"),))
    layers = _layers(r, doc["layers"])
    loss = _layer_entry(r, doc["loss"], "loss", "loss", is_loss=True)
    if loss.name == loss.type:
        loss = dataclasses.replace(loss, name="loss")
    target = (_data(r, doc["target"], "target", base_dir, extra=("dtype", "vocab"))
              if "target" in doc else None)
    check = _check(r, doc.get("check", {}))
    train = _train(r, doc["train"]) if "train" in doc else None
    spec = NetworkSpec(name, seed, dtype, plugins, inputs, layers, loss, target, check, train,
                       base_dir, source)
    wiring.resolve(spec)  # unknown names and cycles are errors here, before anything is built
    return spec


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
    if "dtype" in block or "vocab" in block:
        return _labels(r, block, path, base_dir)
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


def _labels(r: _Reader, block: dict, path: str, base_dir: Path) -> DataSpec:
    """A target block for integer labels: ``{dtype: int, vocab: V}``, or a file of them."""
    dtype = r.choice(block.get("dtype", "int"), _child(path, "dtype"), INPUT_DTYPES)
    if dtype != "int":
        r.fail(_child(path, "dtype"), "'dtype:' in a target only says labels are integer ids "
               "('dtype: int'); values take the network's dtype.")
    for key in ("data", "mean", "std", "low", "high"):
        if key in block:
            r.fail(_child(path, key), f"{key!r} does not apply to integer labels: they are drawn "
                   "uniformly over the classes.", "load them with 'file:' to choose them")
    vocab = r.integer(block["vocab"], _child(path, "vocab"), minimum=1) if "vocab" in block \
        else None
    file = base_dir / r.string(block["file"], _child(path, "file")) if "file" in block else None
    key = r.string(block["key"], _child(path, "key")) if "key" in block else None
    return DataSpec(file=file, key=key, path=path, dtype="int", vocab=vocab)


def _input(r: _Reader, value, base_dir: Path, path: str, name: str) -> InputSpec:
    block = r.mapping(value, path, INPUT_KEYS, f"the {path!r} block")
    dtype = r.choice(block.get("dtype", "float"), _child(path, "dtype"), INPUT_DTYPES)
    vocab = r.integer(block["vocab"], _child(path, "vocab"), minimum=1) if "vocab" in block \
        else None
    if dtype == "float" and vocab is not None:
        r.fail(_child(path, "vocab"), "'vocab:' applies to integer inputs only.",
               "write 'dtype: int' beside it for token ids")
    if dtype == "int":
        for key in ("data", "mean", "std", "low", "high"):
            if key in block:
                r.fail(_child(path, key), f"{key!r} does not apply to integer ids: they are drawn "
                       "uniformly from [0, vocab).", "give 'vocab:', or load them with 'file:'")
        if vocab is None and "file" not in block:
            r.fail(path, "integer inputs need 'vocab:' (ids are drawn from [0, vocab)).",
                   "write e.g. {shape: [16], dtype: int, vocab: 50}")
    data = {k: v for k, v in block.items() if k not in ("shape", "batch", "dtype", "vocab")}
    source = _data(r, data, path, base_dir)
    if source.file is not None:
        for key in ("shape", "batch"):
            if key in block:
                r.fail(_child(path, key), f"{key!r} is taken from the data file; do not set it "
                       "too.")
        return InputSpec(name, None, None, source, dtype, vocab, path)
    if "shape" not in block:
        r.fail(path, "missing 'shape:' (the per-sample input shape, e.g. [1, 28, 28]).",
               "or load inputs with 'file:' and 'key:'")
    shape = _shape(r, block["shape"], _child(path, "shape"))
    batch = r.integer(block.get("batch", 8), _child(path, "batch"), minimum=1)
    return InputSpec(name, shape, batch, source, dtype, vocab, path)


def _inputs(r: _Reader, value, base_dir: Path) -> tuple[InputSpec, ...]:
    if not isinstance(value, dict) or not value:
        r.fail("inputs", f"expected a mapping of input names to input blocks, found "
               f"{_describe(value)}.", "write e.g. inputs: {left: {shape: [8]}, right: ...}")
    found = []
    for name, block in value.items():
        path = _child("inputs", name)
        if not isinstance(name, str) or not name.isidentifier():
            r.fail(path, f"input name {name!r} is not a valid identifier.")
        found.append(_input(r, block, base_dir, path, name))
    batches = {spec.batch for spec in found if spec.batch is not None}
    if len(batches) > 1:
        r.fail("inputs", f"the inputs have different batch sizes {sorted(batches)}; every input "
               "needs one row per sample of the same batch.")
    return tuple(found)


def _layer_entry(r: _Reader, entry, path: str, default_name: str,
                 is_loss: bool = False) -> LayerSpec:
    if isinstance(entry, str):
        _type_name(r, entry, path, is_loss)
        return LayerSpec(entry, default_name, {}, path)
    if not isinstance(entry, dict):
        r.fail(path, f"expected a layer type name or a mapping with 'type:', found {_describe(entry)}.")
    if "type" not in entry:
        r.fail(path, "missing 'type:'.", "write e.g. {type: dense, units: 10}")
    kind = _type_name(r, r.string(entry["type"], _child(path, "type")), _child(path, "type"),
                      is_loss)
    name = r.string(entry["name"], _child(path, "name")) if "name" in entry else default_name
    if not name.isidentifier():
        # Other layers refer to it in inputs: and share: (``layer.k`` names an output).
        r.fail(_child(path, "name"), f"layer name {name!r} is not a name other layers can "
               "refer to.", "use letters, digits and _, not starting with a digit, e.g. fc_1")
    wired = ("input",) if is_loss else ("inputs", "share")
    options = {k: v for k, v in entry.items() if k not in ("type", "name", *wired)}
    for key in options:
        if not isinstance(key, str) or not key.isidentifier():
            r.fail(_child(path, key), f"option name {key!r} is not a valid identifier.")
    inputs = wiring.read_inputs(r, entry, path, is_loss)
    share = {} if is_loss else wiring.read_share(r, entry, path)
    return LayerSpec(kind, name, options, path, inputs, share)


def _type_name(r: _Reader, kind: str, path: str, is_loss: bool) -> str:
    """``kind``, if it can name a registered type at all (registered names are identifiers)."""
    if not kind.isidentifier():
        what = "loss" if is_loss else "layer"
        r.fail(path, f"unknown {what} type {kind!r}: type names are identifiers such as "
               f"{'mse' if is_loss else 'dense'}.", "'gradcheck layers' lists them all")
    return kind


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
