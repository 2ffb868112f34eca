"""gradcheck's pytest plugin, which pytest loads wherever gradcheck is installed (entry point
``pytest11``; disable it with ``-p no:gradcheck``). It adds two fixtures:

``gradcheck_registry``: the test runs in its own ``gradcheck.registry_scope()``; the layers and
losses it registers (by decorator, plugin file or a YAML file's ``plugins:``) are forgotten after
it, so two tests can give one type name to a correct and a buggy class.

``assert_gradients``: ``gradcheck.testing.assert_gradients`` in such a scope, so a test needs no
import to check a layer::

    def test_my_dense(assert_gradients):
        assert_gradients(MyDense, input_shape=(4,), units=3)

Loading the plugin imports nothing but this module: gradcheck loads when a fixture is used.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def gradcheck_registry():
    """Run the test in a registry scope: what it registers is forgotten after it."""
    from gradcheck.registry import registry_scope

    with registry_scope():
        yield


@pytest.fixture
def assert_gradients(gradcheck_registry):
    """``gradcheck.testing.assert_gradients``, with the test in a registry scope."""
    from gradcheck.testing import assert_gradients as check

    return check
