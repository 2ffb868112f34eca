"""The networks around the buggy zoo and the tricky-but-correct layers (tests/plugins/), shared
by the verdict tests and bench/detection.py. Each case is a config dict; buggy cases name
the layer that must be blamed. Also the sensitivity sweep's networks: correct layers at every
scale (``scale_case``) and bugs of a chosen relative size (``graded_case``)."""

from __future__ import annotations

from pathlib import Path

PLUGINS = Path(__file__).resolve().parent / "plugins"
ZOO, TRICKY = str(PLUGINS / "buggy_zoo.py"), str(PLUGINS / "tricky_ok.py")
VERDICT_BUGS = str(PLUGINS / "verdict_bugs.py")


def _net(plugin: str, shape, layers, loss="mse", **extra) -> dict:
    return {"seed": 3, "plugins": [plugin], "input": {"shape": list(shape), "batch": 4},
            "layers": layers, "loss": loss, **extra}


def _vector(culprit: dict, loss="mse", **extra) -> dict:
    layers = [{"type": "dense", "name": "first", "units": 6}, {**culprit, "name": "culprit"},
              {"type": "dense", "name": "last", "units": 3}]
    return _net(ZOO, [6], layers, loss, **extra)


def _image(culprit: dict, before: list | None = None) -> dict:
    layers = [*(before or []), {**culprit, "name": "culprit"}, {"type": "flatten"},
              {"type": "dense", "name": "last", "units": 3}]
    return _net(ZOO, [2, 4, 4], layers)


def _loss(loss: str) -> dict:
    layers = [{"type": "dense", "name": "first", "units": 5}, {"type": "tanh"},
              {"type": "dense", "name": "last", "units": 3}]
    return _net(ZOO, [6], layers, {"type": loss, "name": "loss"})


CONV_FIRST = [{"type": "conv2d", "name": "conv", "filters": 2, "kernel": 3, "padding": 1}]

# case name -> (config, the layer to blame)
BUGGY = {
    **{name: (_vector({"type": f"zoo_{name}"}), "culprit") for name in (
        "dense_bias_mean", "dense_bias_first_sample", "dense_square_transposed",
        "dense_dx_untransposed", "dense_loop_bound", "dense_batch_loop", "sigmoid_on_input",
        "tanh_one_minus_y", "leaky_relu_slope_forgotten", "elu_missing_alpha", "abs_no_sign",
        "clip_passes_everything", "softmax_diagonal_only", "layernorm_no_mean_term",
        "batchnorm_constant_variance", "scale_gamma_unweighted", "scale_first_feature_skipped",
        "dropout_unscaled")},
    "dense_weight_decay_inside": (_vector({"type": "zoo_dense_weight_decay_inside"},
                                          train={"weight_decay": 1.0e-3}), "culprit"),
    **{name: (_image({"type": f"zoo_{name}"}), "culprit") for name in (
        "conv_padding_offset", "conv_flipped_kernel_grad", "conv_bias_last_row_missed")},
    **{name: (_image({"type": f"zoo_{name}"}, CONV_FIRST), "culprit") for name in (
        "maxpool_route_first", "avgpool_divides_by_side")},
    "mse_sign_flipped": (_loss("zoo_mse_sign_flipped"), "loss"),
    "mse_wrong_mean": (_loss("zoo_mse_wrong_mean"), "loss"),
}


def _ok(layers: list, shape=(6,), loss="mse", **extra) -> dict:
    return _net(TRICKY, shape, layers, loss, **extra)


DENSE = {"type": "dense", "units": 6}
LAST = {"type": "dense", "name": "last", "units": 3}

TRICKY_OK = {
    "relu_at_exact_zero": _ok([DENSE, {"type": "ok_zero_mask"}, {"type": "ok_relu"}, LAST]),
    "abs_at_exact_zero": _ok([DENSE, {"type": "ok_zero_mask"}, {"type": "ok_abs"}, LAST]),
    "clip_at_its_bound": _ok([DENSE, {"type": "ok_zero_mask"}, {"type": "ok_clip01"}, LAST]),
    "maxpool_exact_ties": _ok([{"type": "ok_upsample2"}, {"type": "ok_maxpool2"},
                               {"type": "flatten"}, LAST], shape=(2, 3, 3)),
    "max_over_duplicates": _ok([{"type": "ok_duplicate"}, {"type": "ok_feature_max"},
                                {"type": "dense", "units": 2}]),
    "huge_weights": _ok([{"type": "ok_scaled_dense", "scale": 1.0e3}, {"type": "ok_softplus"},
                         LAST]),
    "tiny_weights": _ok([{"type": "ok_scaled_dense", "scale": 1.0e-6}, {"type": "tanh"}, LAST]),
    "shared_parameter": _ok([{"type": "ok_shared_square"}, {"type": "tanh"}, LAST]),
    "mostly_zero_gradients": _ok([DENSE, {"type": "ok_zero_mask", "keep": 0.1}, LAST]),
    "float32_inside_float64": _ok([DENSE, {"type": "ok_tanh_float32"}, LAST]),
    "float32_network": _ok([DENSE, {"type": "ok_relu"}, LAST], loss="cross_entropy",
                           dtype="float32"),
    "large_loss_regression": _ok([DENSE, {"type": "tanh"}, LAST],
                                 target={"data": "normal", "mean": 1000.0, "std": 10.0}),
    "builtin_relu_maxpool_lenet": _ok([{"type": "conv2d", "filters": 2, "kernel": 3, "padding": 1},
                                       {"type": "relu"}, {"type": "maxpool2d"}, {"type": "flatten"},
                                       LAST], shape=(1, 6, 6)),
    # A learned scale of ~1e-4 on inputs of ~1e4 before a tanh: an absolute step of 1e-6 would
    # be 1% of the scale (the report).
    "small_scale_on_large_inputs": {**_ok([{"type": "ok_scale_tanh", "scale": 1.0e-4}, LAST]),
                                    "input": {"shape": [6], "batch": 4, "data": "normal",
                                              "std": 1.0e4}},
    # Inputs of 1e4 varying by 1, normalised with E[x^2] - E[x]^2: eight digits cancel.
    "cancelling_layernorm": {**_ok([{"type": "ok_naive_layernorm"}, LAST]),
                             "input": {"shape": [6], "batch": 4, "data": "normal",
                                       "mean": 1.0e4, "std": 1.0}},
    "tanh_rounded_to_float32": _ok([DENSE, {"type": "ok_rounded_tanh", "bits": 24}, LAST]),
}

SCALES = (1.0e-6, 1.0e-3, 1.0, 1.0e3, 1.0e6)


def scale_case(param_scale: float, activation_scale: float, dtype: str = "float64") -> dict:
    """A correct network with parameters and activations at the given scales: inputs of
    ``activation_scale`` into a tanh scaled by 1/activation_scale, a dense layer with weights of
    ``param_scale``, a tanh scaled by 1/param_scale; every scale from both ends appears as a
    parameter and as an activation, and no tanh saturates."""
    layers = [{"type": "ok_scale_tanh", "scale": 1.0 / activation_scale},
              {"type": "ok_scaled_dense", "scale": param_scale},
              {"type": "ok_scale_tanh", "scale": 1.0 / param_scale}, LAST]
    return {**_ok(layers, dtype=dtype), "input": {"shape": [6], "batch": 4, "data": "normal",
                                                  "std": activation_scale}}


GRADED = ("graded_factor", "graded_few")


def graded_case(kind: str, rel: float, dtype: str = "float64") -> tuple[dict, str]:
    """A network around a ``kind`` bug (tests/plugins/verdict_bugs.py) of relative size ``rel``,
    and the layer to blame."""
    layers = [{"type": "dense", "name": "first", "units": 6},
              {"type": kind, "name": "culprit", "rel": rel}, LAST]
    return _net(VERDICT_BUGS, [6], layers, dtype=dtype), "culprit"
