"""gradcheck: check hand-written backpropagation against finite differences, layer by layer.

Write a layer::

    @gradcheck.register_layer("my_dense")
    class MyDense(gradcheck.Layer):
        ...

and check a network with ``gradcheck.check_network("net.yaml")`` (or a dict), or one layer with
``gradcheck.check_layer("dense", (4,), units=3)``, or a course-style pair of functions with
``gradcheck.check_function(affine_forward, affine_backward, x, [w, b])``; each returns a Report.
``gradcheck.testing.assert_gradients`` turns a failing check into a readable pytest failure.
"""

from gradcheck.api import check_function, check_layer
from gradcheck.check import check_network, run_check
from gradcheck.config import load_config
from gradcheck.errors import ConfigError, DataError, GradcheckError, LayerError, PluginError
from gradcheck.contract import Layer, Loss
from gradcheck.build import build_network
from gradcheck.registry import layer_class, loss_class, register_layer, register_loss
from gradcheck.report import Report

__all__ = [
    "ConfigError", "DataError", "GradcheckError", "Layer", "LayerError", "Loss", "PluginError",
    "Report", "build_network", "check_function", "check_layer", "check_network", "layer_class",
    "load_config", "loss_class", "register_layer", "register_loss", "run_check",
]
