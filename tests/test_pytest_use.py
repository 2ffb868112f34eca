"""gradcheck inside a user's pytest run: a failing assert_gradients starts its failure with the
report (not with the helper's source), as a function or as the plugin's fixture."""

from __future__ import annotations

import subprocess
import sys

import pytest

HALF_GRADIENT = '''
import gradcheck
{imports}

class HalfGrad(gradcheck.Layer):
    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(size=(input_shape[0], 2))
        return (2,)
    def forward(self, x):
        self.x = x
        return x @ self.params["W"]
    def backward(self, grad_out):
        self.grads["W"] = 0.5 * (self.x.T @ grad_out)
        return grad_out @ self.params["W"].T


def test_half({fixture}):
    assert_gradients(HalfGrad, input_shape=(3,))
'''
STYLES = {"import": ("from gradcheck.testing import assert_gradients", ""),
          "fixture": ("", "assert_gradients")}


def _pytest(tmp_path, style: str, *flags: str) -> str:
    imports, fixture = STYLES[style]
    (tmp_path / "test_user.py").write_text(HALF_GRADIENT.format(imports=imports, fixture=fixture))
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *flags,
                             "test_user.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout.split("___ test_half ___", 1)[1]


@pytest.mark.parametrize("style", STYLES)
def test_a_failing_assert_gradients_leads_with_the_report(tmp_path, style):
    failure = _pytest(tmp_path, style)
    lines = failure.splitlines()
    first_error = next(i for i, line in enumerate(lines) if line.startswith("E "))
    assert lines[first_error - 1].startswith(">       assert_gradients(HalfGrad")  # the test's line
    assert lines[first_error].split(None, 1)[1] == (
        "AssertionError: gradients disagree with finite differences")
    report = "\n".join(lines[first_error:])
    assert "HalfGrad" in report and "root cause" in report and "missing factor 2" in report
    for helper in ("__tracebackhide__", "raise AssertionError", "gradcheck/testing.py"):
        assert helper not in failure, helper


def test_the_helper_frame_is_there_to_hide(tmp_path):
    """The probe can fail: with pytest's --full-trace the hidden frame shows."""
    assert "raise AssertionError" in _pytest(tmp_path, "import", "--full-trace")
