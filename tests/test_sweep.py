"""The step sweep and the verdict rules (gradcheck.sweep, gradcheck.judge) on objectives built
to fool them, written out as plain functions of the perturbation: a correct element must not
fail, a wrong one must, and each protection is shown necessary by switching it off."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from gradcheck import judge as judging
from gradcheck import sweep
from gradcheck.engine import Perturbed
from gradcheck.tolerance import DEFAULTS

F64, F32 = DEFAULTS[np.dtype(np.float64)], DEFAULTS[np.dtype(np.float32)]


def _evaluator(change, size):
    """evaluate(indices, steps) for an objective whose change at +t is ``change(i, t)``; the
    terms it sums have size ``size(i)`` wherever it moved (as ``LocalProbe.change`` counts)."""

    def evaluate(indices, steps):
        steps = np.broadcast_to(np.asarray(steps, float), np.shape(indices))
        plus = np.array([change(i, h) for i, h in zip(indices, steps)])
        minus = np.array([change(i, -h) for i, h in zip(indices, steps)])
        scale = np.array([size(i) if p or m else 0.0 for i, p, m in zip(indices, plus, minus)])
        evaluate.calls += 1
        return Perturbed(plus, minus, 2.0 * steps, np.zeros(len(indices), bool), scale)

    evaluate.calls = 0
    return evaluate


def _judge(evaluate, analytic, h, cap, tol=F64, dtype=np.float64):
    analytic = np.atleast_1d(np.asarray(analytic, float))
    indices = np.arange(len(analytic))
    h, cap = np.broadcast_to(h, analytic.shape), np.broadcast_to(cap, analytic.shape)
    return judging.judge(evaluate, analytic, indices, evaluate(indices, h), h, cap, tol, dtype)


def _rounded(y, bits: int):
    """``y`` keeping ``bits`` significant bits: a forward computed in coarse arithmetic."""
    mantissa, exponent = np.frexp(y)
    return np.ldexp(np.round(mantissa * 2.0 ** bits) / 2.0 ** bits, exponent)


def _offset_tanh(offset: float, at: float, gain: float):
    """sum(G * tanh(x - c)) along x = offset + t, with c = offset - at: a value of size
    ``offset`` whose function varies on a scale of 1 (a normalisation after an offset)."""
    c = offset - at

    def change(_, t):
        return gain * (np.tanh(offset + t - c) - np.tanh(offset - c))

    return _evaluator(change, lambda _: abs(gain)), gain * (1.0 - np.tanh(offset - c) ** 2)


@settings(max_examples=examples(30))
@given(exponent=st.floats(2.0, 4.0), at=st.floats(-1.5, 1.5), gain=st.floats(0.3, 3.0))
def test_an_element_far_larger_than_the_scale_its_function_varies_on_passes(exponent, at, gain):
    """Up to 1e4 times larger: the first step, 1e-6 of the element, is then 1e-2 of the scale
    the function varies on, still a step the sweep can extrapolate down from."""
    offset = 10.0 ** exponent
    evaluate, exact = _offset_tanh(offset, at, gain)
    verdicts = _judge(evaluate, exact, 1e-6 * offset, offset / 10.0)
    assert verdicts.status[0] == "pass", (verdicts.numeric, exact)


def test_starting_the_sweep_at_a_tenth_of_the_element_fails_it(monkeypatch):
    """The old start: steps from a tenth of the element's own size (1e3 for 1e4) level off on
    the saturated tanh, and extrapolation takes the plateau for a converged estimate."""
    evaluate, exact = _offset_tanh(1e4, 0.3, 0.7)
    assert _judge(evaluate, exact, 1e-2, 1e3).status[0] == "pass"
    monkeypatch.setattr(sweep, "_climb",
                        lambda steps, cap, floor, clear=None: sweep._highest_level(steps.h, cap))
    assert _judge(evaluate, exact, 1e-2, 1e3).status[0] == "fail"


def test_a_wrong_derivative_on_an_offset_element_still_fails():
    evaluate, exact = _offset_tanh(1e4, 0.3, 0.7)
    verdicts = _judge(evaluate, exact * (1.0 + 1e-3), 1e-2, 1e3)
    assert verdicts.status[0] == "fail" and verdicts.rel[0] > 5e-4


def _quantised(bits: int, count: int = 48, seed: int = 0, first: int = 0):
    """Elements ``first`` ... of sum(G * y) with y = tanh(x) kept to ``bits`` bits: the changes
    move in whole quanta and, over doubling steps, can double exactly for many steps."""
    rng = np.random.default_rng(seed)
    x, gain = rng.uniform(-4.0, 4.0, count), rng.normal(size=count)

    def change(i, t):
        i = i + first
        return gain[i] * (_rounded(np.tanh(x[i] + t), bits) - _rounded(np.tanh(x[i]), bits))

    exact = gain * (1.0 - np.tanh(x) ** 2)
    h = 1e-6 * np.maximum(np.abs(x), np.sqrt(np.mean(x ** 2)))
    evaluate = _evaluator(change, lambda i: abs(gain[i + first]))
    return evaluate, exact[first:], h[first:], h[first:] * 1e5


@pytest.mark.parametrize("bits", [18, 20, 23, 24, 26, 28, 34, 40])
def test_a_quantised_objective_judged_one_element_at_a_time_never_fails(bits):
    """One element per target: nothing to pool its round-off with, so the sweep must read the
    quanta from its own steps."""
    statuses = [str(_judge(*_one(bits, i)).status[0]) for i in range(48)]
    assert "fail" not in statuses


def _one(bits: int, i: int):
    """Element i of ``_quantised`` alone: its evaluator, exact derivative, step and cap."""
    evaluate, exact, h, cap = _quantised(bits, first=i)
    return evaluate, exact[0], h[0], cap[0]


def test_without_reading_round_off_from_the_sweep_quantised_elements_fail(monkeypatch):
    monkeypatch.setattr(sweep, "_sweep_noise", lambda steps, top: np.zeros(len(steps.h)))
    fails = sum(_judge(*_one(24, i)).status[0] == "fail" for i in range(48))
    assert fails >= 5


@pytest.mark.parametrize("rel", [1e-3, 1e-2])
def test_a_wrong_derivative_of_a_quantised_objective_never_passes(rel):
    """28 bits leave a relative precision of ~1e-9 and a band below 1e-4: an error of 1e-3 is
    never passed, and mostly failed. (Some elements are called kinks: whole quanta can fit a
    line with one bend on the five-point stencil. And quanta can still mislead the sweep by
    ~2e-4 at a widened rtol: smaller errors in such a unit can pass, said as widened.)"""
    evaluate, exact, h, cap = _quantised(28)
    verdicts = _judge(evaluate, exact * (1.0 + rel), h, cap)
    big = np.abs(exact) > 1e-2  # far above the atol floor
    assert "pass" not in set(verdicts.status[big])
    assert np.mean(verdicts.status[big] == "fail") >= 0.7


def test_a_saturated_float32_tanh_that_does_not_move_at_small_steps_is_not_failed(monkeypatch):
    """G * tanh(a x) in float32 with a x = -7.5: a change of the input below one ulp of y
    leaves the objective exactly unchanged, and the differences at the next steps are whole
    ulps; the analytic side, from the rounded y, is itself only good to 1%."""
    x0, a, gain = -4.4310809e-06, 1.6963206e06, 0.02895753

    def change(_, t):
        y = np.tanh(np.float32(a) * np.float32(x0 + t))
        return gain * (float(y) - float(np.tanh(np.float32(a) * np.float32(x0))))

    evaluate = _evaluator(change, lambda _: gain)
    exact = gain * a * (1.0 - np.tanh(a * x0) ** 2)
    h = F32.eps * abs(x0)
    assert _judge(evaluate, exact, h, abs(x0) / 10, F32, np.float32).status[0] != "fail"
    # Without a floor from the float32 ulp of the terms at the steps that moved, nor the
    # round-off read from the sweep, the zeros and the whole ulps agree with each other, and
    # the element fails.
    real = sweep.ridders
    monkeypatch.setattr(judging, "ridders",
                        lambda *args: real(*args[:5], np.zeros(1), 0.0, args[7]))
    monkeypatch.setattr(sweep, "_sweep_noise", lambda steps, top: np.zeros(len(steps.h)))
    assert _judge(evaluate, exact, h, abs(x0) / 10, F32, np.float32).status[0] == "fail"


def test_a_forward_that_ignores_the_perturbation_fails_and_is_not_called_float32():
    """Zero round-off measured because nothing moved is no evidence of float32."""
    evaluate = _evaluator(lambda i, t: 0.0, lambda i: 1.0)
    verdicts = _judge(evaluate, np.full(6, 0.3), 1e-6, 0.1)
    assert set(verdicts.status) == {"fail"}
    assert not verdicts.float32_inside and verdicts.band == 0.0


def test_a_linear_objective_is_decided_in_a_few_evaluations():
    """A weight of a linear layer has no truncation: two agreeing steps and a third at a step
    no power of 2 apart decide it, bug or not, without climbing to the cap."""
    slope = np.linspace(0.5, 2.0, 64)
    evaluate = _evaluator(lambda i, t: slope[i] * t, lambda i: 1.0)
    verdicts = _judge(evaluate, 2.0 * slope, 1e-6, 0.1)
    assert set(verdicts.status) == {"fail"} and evaluate.calls <= 12


@settings(max_examples=examples(200))
@given(a=st.floats(-10, 10), best=st.floats(-10, 10), err=st.floats(0, 1),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_settle_never_passes_an_element_judged_beyond_the_widening_limit(a, best, err, dtype):
    tol = DEFAULTS[np.dtype(dtype)]
    status, _, judged, widened = judging.settle(np.array([a]), np.array([best]),
                                                np.array([err]), tol, dtype)
    if status[0] == "pass":
        assert judged[0] <= judging.WIDEN_LIMIT[np.dtype(dtype)]
        assert abs(a - best) <= judged[0] * max(abs(a), abs(best)) + tol.atol
        assert widened[0] == (judged[0] > tol.rtol)


@pytest.mark.parametrize("measured, inside, expected", [
    (1e-16, False, 0.0), (np.finfo(np.float32).eps, False, 1e-2), (1e-9, False, None),
    (1e-3, False, 1e-2), (0.0, True, 1e-2)])
def test_the_precision_band_scales_float32s_rtol_to_the_measured_round_off(measured, inside,
                                                                          expected):
    band = judging.precision_band(measured, inside)
    if expected is None:
        assert band == pytest.approx(1e-2 * 1e-9 / np.finfo(np.float32).eps)
    else:
        assert band == pytest.approx(expected, abs=1e-10)
