"""Contract cases for the function and object layers and the function loss: the shipped
course-style pairs (examples/course/layers.py) and adapter classes (examples/adapter/)."""

from hypothesis import strategies as st

from conftest import ROOT
from cases_activations import away_from_zero
from cases_conv import distinct_values
from layer_cases import LayerCase, LossCase

COURSE = str(ROOT / "examples" / "course" / "layers.py")
ADAPTER = ROOT / "examples" / "adapter"


def pair(name: str, suffix: str = "", **options) -> dict:
    """The options of a function layer running COURSE's ``name``_forward``suffix`` and
    ``name``_backward``suffix``."""
    return {"forward": f"{COURSE}:{name}_forward{suffix}",
            "backward": f"{COURSE}:{name}_backward{suffix}", **options}


def _affine(in_shape, units, batch):
    fan_in = 1
    for d in in_shape:
        fan_in *= d
    bias = {"shape": [units], "init": {"normal": {"std": 1.0}}}
    return LayerCase(pair("affine", params={"w": {"shape": [fan_in, units]}, "b": bias},
                          mixes_batch=False), tuple(in_shape), batch)


def _conv(channels, size, filters, kernel, stride, pad, batch):
    weight = {"shape": [filters, channels, kernel, kernel]}
    return LayerCase(pair("conv", "_naive", params={"w": weight, "b": {"shape": [filters]}},
                          args=[{"stride": stride, "pad": pad}], mixes_batch=False),
                     (channels, size + kernel, size + kernel), batch)


def _pool(channels, size, stride, batch):
    return LayerCase(pair("max_pool", "_naive", args=[{"pool_height": 2, "pool_width": 2,
                                             "stride": stride}], mixes_batch=False),
                     (channels, size + 2, size + 2), batch, make_input=distinct_values)


def _batchnorm(features, batch):
    return LayerCase(pair("batchnorm", params={"gamma": {"shape": [features], "init": "ones"},
                                               "beta": {"shape": [features], "init": "zeros"}},
                          args=[{"mode": "train"}]), (features,), batch)


FUNCTION_CASES = st.one_of(
    st.builds(_affine, st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(1, 4),
              st.integers(1, 3)),
    st.builds(_conv, st.integers(1, 2), st.integers(0, 3), st.integers(1, 3), st.integers(1, 3),
              st.integers(1, 2), st.integers(0, 2), st.integers(1, 2)),
    st.builds(_pool, st.integers(1, 2), st.integers(0, 3), st.integers(1, 2), st.integers(1, 2)),
    st.builds(lambda shape, batch: LayerCase(pair("relu", mixes_batch=False), shape, batch,
                                             make_input=away_from_zero),
              st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple), st.integers(1, 3)),
    st.builds(_batchnorm, st.integers(1, 4), st.integers(2, 5)),
    st.builds(lambda rate, seed, features, batch: LayerCase(
        pair("dropout", args=[{"rate": rate, "mode": "train", "seed": seed}]), (features,), batch),
        st.sampled_from([0.0, 0.25, 0.5]), st.integers(0, 9), st.integers(1, 5),
        st.integers(1, 3)),
)


def _dict_dense(units, fan_in, batch):
    return LayerCase({"constructor": f"{ADAPTER / 'dict_style.py'}:FullyConnected",
                      "kwargs": {"n_out": units}, "mixes_batch": False,
                      "adapter": {"params": "parameters", "grads": "gradients",
                                  "flush": "flush_gradients"}}, (fan_in,), batch)


def _dict_batchnorm(features, batch):
    return LayerCase({"constructor": f"{ADAPTER / 'dict_style.py'}:BatchNorm1D",
                      "adapter": {"params": "parameters", "grads": "gradients",
                                  "flush": "flush_gradients",
                                  "mode": {"methods": {"train": "unfreeze", "eval": "freeze"}}}},
                     (features,), batch)


def _tuple_linear(units, fan_in, batch):
    return LayerCase({"constructor": f"{ADAPTER / 'tuple_style.py'}:Linear",
                      "args": [fan_in, units], "mixes_batch": False,
                      "adapter": {"params": {"W": "W", "b": "b"}, "returns": ["dx", "W", "b"]}},
                     (fan_in,), batch)


def _list_affine(units, fan_in, batch):
    return LayerCase({"constructor": f"{ADAPTER / 'list_style.py'}:make_affine",
                      "args": [fan_in, units],
                      "adapter": {"params": "params", "grads": "grads", "names": ["W", "b"]}},
                     (fan_in,), batch)


def _list_dropout(ratio, features, batch):
    return LayerCase({"constructor": f"{ADAPTER / 'list_style.py'}:Dropout",
                      "kwargs": {"dropout_ratio": ratio},
                      "adapter": {"mode": {"attribute": "train_flg"}}}, (features,), batch)


SIZES = (st.integers(1, 4), st.integers(1, 5), st.integers(1, 4))
OBJECT_CASES = st.one_of(
    st.builds(_dict_dense, *SIZES),
    st.builds(_dict_batchnorm, st.integers(1, 4), st.integers(2, 5)),
    st.builds(_tuple_linear, *SIZES),
    st.builds(_list_affine, *SIZES),
    st.builds(_list_dropout, st.sampled_from([0.0, 0.3]), st.integers(1, 5), st.integers(1, 3)),
)

LAYER_CASES = {"function": FUNCTION_CASES, "object": OBJECT_CASES}

LOSS_CASES = {
    "function": st.builds(lambda classes, batch: LossCase({"fn": f"{COURSE}:softmax_loss"},
                                                          (classes,), batch),
                          st.integers(2, 5), st.integers(1, 4)),
}
