"""Contract cases for the dense layer."""

from hypothesis import strategies as st

from layer_cases import LayerCase

LAYER_CASES = {
    "dense": st.builds(
        lambda units, fan_in, batch, bias: LayerCase({"units": units, "bias": bias}, (fan_in,), batch),
        st.integers(1, 5), st.integers(1, 6), st.integers(1, 4), st.booleans()),
}
