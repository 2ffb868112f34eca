"""gradcheck: check hand-written backpropagation against finite differences, layer by layer.

Write a layer::

    @gradcheck.register_layer("my_dense")
    class MyDense(gradcheck.Layer):
        ...

and check a network with ``gradcheck.check_network("net.yaml")`` (or a dict), or one layer with
``gradcheck.check_layer("dense", (4,), units=3)``, or a course-style pair of functions with
``gradcheck.check_function(affine_forward, affine_backward, x, [w, b])``; each returns a Report.
``gradcheck.testing.assert_gradients`` turns a failing check into a readable pytest failure, and
``gradcheck.registry_scope()`` forgets the layers registered inside it.

Importing this package loads nothing else: each name below is imported on first use (PEP 562),
so ``gradcheck --version`` and ``import gradcheck`` in a test stay fast.
"""

from __future__ import annotations

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
    "check_function": "gradcheck.api", "check_layer": "gradcheck.api",
    "check_network": "gradcheck.check", "run_check": "gradcheck.check",
    "load_config": "gradcheck.config", "build_network": "gradcheck.build",
    "ConfigError": "gradcheck.errors", "DataError": "gradcheck.errors",
    "GradcheckError": "gradcheck.errors", "LayerError": "gradcheck.errors",
    "PluginError": "gradcheck.errors",
    "Layer": "gradcheck.contract", "Loss": "gradcheck.contract",
    "layer_class": "gradcheck.registry", "loss_class": "gradcheck.registry",
    "register_layer": "gradcheck.registry", "register_loss": "gradcheck.registry",
    "registry_scope": "gradcheck.registry",
    "Report": "gradcheck.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
