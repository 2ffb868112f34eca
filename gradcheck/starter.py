"""``gradcheck init``: commented starter network files, shipped in the package (gradcheck/examples)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from gradcheck.errors import GradcheckError

STARTER = "starter"


def _folder():
    return resources.files("gradcheck").joinpath("examples")


def example_names() -> list[str]:
    """Names accepted by ``gradcheck init --from-example``."""
    return sorted(p.name[:-5] for p in _folder().iterdir()
                  if p.name.endswith(".yaml") and p.name[:-5] != STARTER)


def starter_text(example: str | None = None) -> str:
    """The commented starter file, or the example ``example``."""
    name = example or STARTER
    if name != STARTER and name not in example_names():
        raise GradcheckError(f"there is no example {name!r}.",
                             hint=f"examples: {', '.join(example_names())}")
    return _folder().joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def write_starter(path: Path, example: str | None = None, force: bool = False) -> None:
    """Write the starter (or an example) to ``path``; refuse to replace a file unless ``force``."""
    if path.exists() and not force:
        raise GradcheckError(f"{str(path)!r} already exists; not overwriting it.",
                             hint="pass --force to replace it, or -o to choose another file")
    text = starter_text(example)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise GradcheckError(f"cannot write {str(path)!r}: {exc.strerror}.") from None
