"""pytest-friendly assertions: a failed gradient check fails the test with the readable report.

::

    from gradcheck.testing import assert_gradients

    def test_my_dense():
        assert_gradients(MyDense, input_shape=(4,), units=3)

or, with gradcheck's pytest plugin (loaded by pytest wherever gradcheck is installed), the
``assert_gradients`` fixture, which also forgets the layers the test registers afterwards::

    def test_my_dense(assert_gradients):
        assert_gradients(MyDense, input_shape=(4,), units=3)
"""

from __future__ import annotations

import io
from pathlib import Path

from gradcheck.api import check_layer
from gradcheck.check import check_network
from gradcheck.console import make_console
from gradcheck.contract import Layer
from gradcheck.render.text import render_text
from gradcheck.report import Report

__all__ = ["assert_gradients", "report_text"]


def report_text(report: Report) -> str:
    """The text report without colour, as the CLI prints it to a file."""
    stream = io.StringIO()
    make_console(stream, "never").print(render_text(report))
    return stream.getvalue()


def assert_gradients(subject: str | Path | dict | type | Layer | Report, input_shape=None,
                     **options) -> Report:
    """Check gradients and raise ``AssertionError`` with the full text report if any disagree.

    ``subject`` is one of: a YAML path or a config dict (checked like ``gradcheck check``), a
    layer name, ``gradcheck.Layer`` subclass or instance together with ``input_shape`` (checked
    with ``gradcheck.check_layer``), or a Report already computed. ``options`` go to
    ``check_network`` (mode, eps, rtol, atol, samples) or ``check_layer`` (also batch, seed,
    dtype and the layer's own options). Kinks and inconclusive elements do not fail the
    assertion, exactly as they do not fail the command. Returns the Report when it passes.
    """
    # pytest then starts the failure with the report, not with this helper's source.
    __tracebackhide__ = True
    if isinstance(subject, Report):
        report = subject
    elif input_shape is not None:
        report = check_layer(subject, input_shape, **options)
    elif isinstance(subject, (str, Path, dict)):
        report = check_network(subject, **options)
    else:
        raise TypeError("assert_gradients needs input_shape=... to check a single layer "
                        f"({subject!r}).")
    if not report.passed:
        # pytest shows the message verbatim: the same table the command line prints.
        raise AssertionError("gradients disagree with finite differences\n\n" + report_text(report))
    return report
