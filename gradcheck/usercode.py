"""The boundary to user code: every call into a layer, loss or plugin goes through ``invoke``, so a
raising or misbehaving unit becomes a LayerError that names it, its YAML path and the phase."""

from __future__ import annotations

from typing import Any, Callable

from gradcheck.errors import GradcheckError, LayerError


def type_name(unit) -> str:
    """The registered type name of ``unit`` (its class name when it is not registered)."""
    return getattr(type(unit), "registered_name", type(unit).__name__)


def invoke(unit, phase: str, fn: Callable, *args) -> Any:
    """Call ``fn`` (a method of ``unit``) and turn any exception into a LayerError naming it."""
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
