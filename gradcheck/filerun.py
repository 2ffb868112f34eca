"""One command over several network files: which files the arguments name, one outcome per file
(a result, or the user error that stopped it), and the exit code of them all."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gradcheck.errors import ConfigError, GradcheckError

# Exit codes from the worst down: a config or usage error (2), a mismatch (1), an incomplete
# check (3), a pass (0). The exit code of several files is the worst of theirs.
EXIT_SEVERITY = (2, 1, 3, 0)
NETWORK_SUFFIX = ".yaml"


@dataclasses.dataclass
class FileOutcome:
    """What one network file gave: a ``result`` (a check Report or a Diagnosis) or the user
    ``error`` that stopped it, and the exit code that alone would have."""

    file: str
    network: str
    result: object | None
    error: GradcheckError | None
    exit_code: int


def network_files(arguments: list[Path]) -> list[Path]:
    """The files to check, in the order given: a file as it is, a directory as every ``*.yaml``
    below it, sorted. A file named twice (``a.yaml`` and ``dir/``) is checked once. A file that
    does not exist is kept (its check reports it); a directory without a network is an error."""
    files, seen = [], set()
    for argument in arguments:
        if argument.is_dir():
            found = sorted(argument.rglob(f"*{NETWORK_SUFFIX}"))
            if not found:
                raise ConfigError(f"directory {str(argument)!r} holds no {NETWORK_SUFFIX} file.",
                                  hint=f"name network files, or a directory with {NETWORK_SUFFIX} "
                                       "files below it")
        else:
            found = [argument]
        for path in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files


def worst_exit(codes) -> int:
    """The most severe of ``codes`` in the order of EXIT_SEVERITY (0 when there are none)."""
    present = set(codes)
    return next((code for code in EXIT_SEVERITY if code in present), 0)
