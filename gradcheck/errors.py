"""Errors a user can cause. The CLI turns each into a one-paragraph message and exit code 2."""

from __future__ import annotations


class GradcheckError(Exception):
    """A problem with the user's input (config, data, plugin), never a bug in gradcheck itself.

    ``where`` locates it (``net.yaml:12:5``), ``path`` is the YAML path (``layers[3].kernel``),
    ``hint`` says what to do about it.
    """

    def __init__(self, message: str, *, path: str | None = None, where: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        prefix = ""
        if self.where:
            prefix += f"{self.where}: "
        if self.path:
            prefix += f"{self.path}: "
        text = prefix + self.message
        if self.hint:
            text += f" Hint: {self.hint}"
        return text


class ConfigError(GradcheckError):
    """The YAML network description is malformed or inconsistent."""


class LayerError(GradcheckError):
    """A layer rejected its options or its input shape, or raised while running."""


class PluginError(GradcheckError):
    """A plugin file or module could not be loaded or breaks the layer contract."""


class DataError(GradcheckError):
    """Input or target data is missing, corrupt, non-finite or of the wrong shape."""
