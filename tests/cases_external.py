"""Contract case for the external layer: the plain-Python reference client (no compiler needed)."""

import sys

from hypothesis import strategies as st

from conftest import ROOT
from layer_cases import LayerCase

DENSE_CLIENT = str(ROOT / "examples" / "external" / "dense_client.py")

LAYER_CASES = {
    "external": st.builds(
        lambda units, fan_in, batch: LayerCase(
            {"command": [sys.executable, DENSE_CLIENT], "options": {"units": units}}, (fan_in,), batch),
        st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
}
