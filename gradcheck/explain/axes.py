"""The names of a target's axes: declared by its layer (``Layer.axis_names``), or generic.

A pattern that says "errors only in time steps 0-14 of 16" and a heat map that says "rows: unit"
need to know what each axis of a gradient means. Only the layer knows its layout, so it declares
it; a target it declares nothing for gets "axis 0", "axis 1", ... (a 1-D parameter: "element"),
never a guess from the number of axes. The batch axis of an input is always ``BATCH``.
"""

from __future__ import annotations

from collections.abc import Mapping

BATCH = "sample"
INPUT = "input"
# Irregular nouns: an axis called "time" counts time steps.
_NOUNS = {"time": ("time step", "time steps"), "index": ("index", "indices")}


def default_axis_names(shape: tuple[int, ...], is_input: bool) -> tuple[str, ...]:
    """Generic names for a target of ``shape`` whose layer declares none: ("sample", "axis 1",
    ...) for an input (batch first), ("element",) for a 1-D parameter, else ("axis 0", ...)."""
    ndim = len(shape)
    if is_input:
        return (BATCH, *(f"axis {i}" for i in range(1, ndim)))
    if ndim == 1:
        return ("element",)
    return tuple(f"axis {i}" for i in range(ndim))


def target_axis_names(layer, target: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """The axis names of ``target`` (``"input"`` or a parameter name) of ``layer``, whose array
    has ``shape`` (an input's with the batch axis first): the layer's declaration, else generic."""
    declared = (getattr(layer, "axis_names", None) or {}).get(target)
    if declared is None:
        return default_axis_names(shape, target == INPUT)
    return (BATCH, *declared) if target == INPUT else tuple(declared)


def declaration_problem(layer, input_shape) -> str | None:
    """What is wrong with ``layer.axis_names`` once ``layer`` is built for ``input_shape`` (per
    sample; a list of shapes for a layer with several inputs), or None when it is usable."""
    declared = getattr(layer, "axis_names", None)
    if declared is None or (isinstance(declared, Mapping) and not declared):
        return None
    if not isinstance(declared, Mapping):
        return f"axis_names must be a dict, found {type(declared).__name__}"
    several = isinstance(input_shape, list) and all(isinstance(s, (list, tuple))
                                                    for s in input_shape)
    ranks = {INPUT: {len(s) for s in input_shape} if several else {len(input_shape)}}
    ranks.update({name: {value.ndim} for name, value in layer.params.items()})
    for target, names in declared.items():
        if target not in ranks:
            continue  # an optional parameter this layer did not create (dense with bias: false)
        if not (isinstance(names, (tuple, list)) and
                all(isinstance(n, str) and n.strip() for n in names)):
            return f"axis_names[{target!r}] must be a tuple of non-empty strings, found {names!r}"
        if BATCH in names:
            return (f"axis_names[{target!r}] uses {BATCH!r}, the name reserved for the batch axis "
                    "(leave the batch axis out of the input's names)")
        if ranks[target] != {len(names)}:
            what = "the per-sample input" if target == INPUT else f"params[{target!r}]"
            return (f"axis_names[{target!r}] gives {len(names)} name(s) {tuple(names)}, but "
                    f"{what} has {' or '.join(map(str, sorted(ranks[target])))} axes")
    return None


def is_generic(name: str) -> bool:
    """Whether ``name`` is a generic "axis i" name (no layout declared)."""
    return name.startswith("axis ") and name[5:].isdigit()


def noun(name: str, count: int) -> str:
    """What one index along an axis called ``name`` is, in the singular or plural: "row",
    "time steps", and "index"/"indices" for a generic axis."""
    base = "index" if is_generic(name) else name
    if base in _NOUNS:
        singular, plural = _NOUNS[base]
    elif base.endswith(("s", "x", "ch", "sh")):
        singular, plural = base, base + "es"
    elif base.endswith("y") and base[-2:-1] not in ("a", "e", "o", "u"):
        singular, plural = base, base[:-1] + "ies"
    else:
        singular, plural = base, base + "s"
    return singular if count == 1 else plural


def axis_note(name: str, axis: int, size: int | None = None) -> str:
    """Where an axis is: " (axis 2, size 6)" for a named axis, " along axis 2 (size 6)" for a
    generic one (whose noun, "index", does not say which axis)."""
    sized = f", size {size}" if size is not None else ""
    if is_generic(name):
        return f" along axis {axis}" + (f" (size {size})" if size is not None else "")
    return f" (axis {axis}{sized})"
