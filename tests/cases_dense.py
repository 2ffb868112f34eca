"""Contract cases for the dense layer: flat samples (F,) and sequences (T, F)."""

from hypothesis import strategies as st

from layer_cases import LayerCase

LAYER_CASES = {
    "dense": st.builds(
        lambda units, steps, fan_in, batch, bias: LayerCase(
            {"units": units, "bias": bias}, (*steps, fan_in), batch),
        st.integers(1, 5), st.lists(st.integers(1, 4), max_size=1), st.integers(1, 6),
        st.integers(1, 4), st.booleans()),
}
