"""The boundary to user code: every call into a layer, loss or plugin goes through ``invoke``, so a
raising or misbehaving unit becomes a LayerError that names it, its YAML path and the phase."""

from __future__ import annotations

import weakref
from typing import Any, Callable

import numpy as np

from gradcheck.errors import GradcheckError, LayerError

# The state every random unit's ``rng`` is rewound to before each call (see ``seed_rng``).
_RNG_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def type_name(unit) -> str:
    """The registered type name of ``unit`` (its class name when it is not registered)."""
    return getattr(type(unit), "registered_name", type(unit).__name__)


def seed_rng(unit, seed: np.random.SeedSequence) -> None:
    """Give a unit that declares ``uses_rng`` its generator ``unit.rng``, rewound to the same
    state before every call through ``invoke``: a layer random on purpose (dropout) draws the
    same numbers on every call, so finite differences compare one function, not two draws."""
    if getattr(unit, "uses_rng", False):
        unit.rng = np.random.default_rng(seed)
        _RNG_STATES[unit] = unit.rng.bit_generator.state


def rewind(unit) -> None:
    """Rewind ``unit.rng`` to its seeded state (nothing for a unit that is not random)."""
    state = _RNG_STATES.get(unit)
    if state is not None:
        unit.rng.bit_generator.state = state


def invoke(unit, phase: str, fn: Callable, *args) -> Any:
    """Call ``fn`` (a method of ``unit``, its ``rng`` rewound) and turn any exception into a
    LayerError naming it."""
    rewind(unit)
    try:
        return fn(*args)
    except GradcheckError as exc:
        if not exc.message.startswith("layer "):
            exc.message = f"layer {unit.name!r} ({type_name(unit)}) in {phase}: {exc.message}"
        exc.path = exc.path or getattr(unit, "yaml_path", None)
        exc.where = exc.where or getattr(unit, "yaml_where", None)
        raise
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - user layer code may raise anything
        raise LayerError(f"layer {unit.name!r} ({type_name(unit)}) raised {type(exc).__name__} "
                         f"in {phase}: {exc}", path=getattr(unit, "yaml_path", None),
                         where=getattr(unit, "yaml_where", None)) from exc


def close_unit(unit) -> None:
    """Call ``unit.close()`` if it has one; a failing close must not hide the error being raised."""
    close = getattr(unit, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - best effort clean-up of user code
            pass
