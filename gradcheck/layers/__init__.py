"""Built-in layer families. Importing this package registers them, exactly as a plugin would."""

from gradcheck.layers import dense  # noqa: F401
