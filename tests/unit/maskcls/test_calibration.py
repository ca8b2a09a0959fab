"""maskcls.calibration: temperature scaling and expected calibration error on synthetic models
whose true class probabilities are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maskcls.calibration import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability,
)
from maskcls.inference import probability_columns


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def calibrated_sample(n: int, n_classes: int, seed: int, spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, spread, size=(n, n_classes))
    p = softmax(logits)
    y = np.array([rng.choice(n_classes, p=row) for row in p])
    return logits, y


def binary_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One sigmoid logit per image and labels drawn from sigmoid(logit)."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0.0, 1.5, size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return logit, y


def sigmoid_columns(logit: np.ndarray) -> np.ndarray:
    """The classifier's own path: one sigmoid unit -> two probability columns."""
    return probability_columns((1 / (1 + np.exp(-logit)))[:, None])


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_a_calibrated_model_has_a_small_ece_and_temperature_near_one(n_classes: int) -> None:
    logits, y = calibrated_sample(20_000, n_classes, seed=n_classes)
    p = softmax(logits)
    assert expected_calibration_error(y, p) < 0.015
    assert fit_temperature(y, p) == pytest.approx(1.0, abs=0.05)


def test_an_overconfident_sigmoid_model_is_calibrated_by_the_fitted_temperature() -> None:
    # Logits x4: the same ranking, far too sure of itself.
    logit_val, y_val = binary_sample(4_000, seed=1)
    logit_test, y_test = binary_sample(4_000, seed=2)
    over_val, over_test = sigmoid_columns(4 * logit_val), sigmoid_columns(4 * logit_test)
    t = fit_temperature(y_val, over_val)
    assert t == pytest.approx(4.0, rel=0.15)  # the scale it was made over-confident by
    calibrated = apply_temperature(over_test, t)
    before, after = expected_calibration_error(y_test, over_test), expected_calibration_error(y_test, calibrated)
    assert before > 0.08
    assert after < 0.03
    assert after < before / 3
    np.testing.assert_array_equal(calibrated.argmax(axis=1), over_test.argmax(axis=1))
    assert nll(y_test, calibrated) < nll(y_test, over_test)
    # Two columns from one sigmoid: scaling the log-probabilities is scaling the logit.
    np.testing.assert_allclose(calibrated[:, 1], 1 / (1 + np.exp(-4 * logit_test / t)), atol=1e-9)


def test_an_underconfident_softmax_model_gets_a_temperature_below_one() -> None:
    logits, y = calibrated_sample(6_000, 4, seed=7)
    under = softmax(logits / 3)
    t = fit_temperature(y, under)
    assert t == pytest.approx(1 / 3, rel=0.15)
    calibrated = apply_temperature(under, t)
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, under) / 3
    np.testing.assert_array_equal(calibrated.argmax(axis=1), under.argmax(axis=1))


def test_an_overconfident_n_class_model_is_calibrated() -> None:
    logits, y = calibrated_sample(8_000, 3, seed=11)
    over = softmax(4 * logits)
    val, test = slice(0, 4_000), slice(4_000, None)
    t = fit_temperature(y[val], over[val])
    assert t == pytest.approx(4.0, rel=0.15)
    calibrated = apply_temperature(over[test], t)
    assert expected_calibration_error(y[test], calibrated) < 0.03 < expected_calibration_error(y[test], over[test])
    # Scaling log-probabilities is scaling logits (rows whose probabilities all clear the 1e-12 clip).
    clear = over[test].min(axis=1) > 1e-12
    assert clear.mean() > 0.9
    np.testing.assert_allclose(calibrated[clear], softmax(logits[test][clear] * 4 / t), atol=1e-9)


def test_apply_temperature_keeps_rows_normalised_and_one_is_the_identity() -> None:
    p = softmax(np.random.default_rng(3).normal(size=(50, 3)))
    assert apply_temperature(p, 1.0) is p
    for t in (0.3, 2.5):
        q = apply_temperature(p, t)
        np.testing.assert_allclose(q.sum(axis=1), 1.0)
        np.testing.assert_array_equal(q.argmax(axis=1), p.argmax(axis=1))
    # Larger T: the top probability only falls towards uniform.
    assert np.all(apply_temperature(p, 2.5).max(axis=1) <= p.max(axis=1) + 1e-12)


def test_saturated_probabilities_stay_finite() -> None:
    p = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], np.float32)
    q = apply_temperature(p, 3.0)
    assert np.all(np.isfinite(q))
    assert q[0, 1] > 0.99 and q[1, 0] > 0.99
    assert q[2] == pytest.approx([0.5, 0.5])


def test_ece_matches_hand_computed_bins() -> None:
    # 15 bins of width 1/15, each (lo, hi]. Top-label confidences and whether they are right:
    #   0.9 right, 0.9 wrong -> bin 13 (0.867, 0.933]: accuracy 0.5, confidence 0.9  -> 2 x 0.40
    #   0.62 right           -> bin 9  (0.600, 0.667]: accuracy 1.0, confidence 0.62 -> 1 x 0.38
    #   0.55 wrong           -> bin 8  (0.533, 0.600]: accuracy 0.0, confidence 0.55 -> 1 x 0.55
    y = np.array([0, 1, 0, 0])
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.62, 0.38], [0.45, 0.55]])
    r = reliability(y, p)
    assert r.counts.tolist() == [0] * 8 + [1, 1, 0, 0, 0, 2, 0]
    assert r.accuracy[13] == pytest.approx(0.5) and r.confidence[13] == pytest.approx(0.9)
    assert r.accuracy[9] == pytest.approx(1.0) and r.confidence[9] == pytest.approx(0.62)
    assert r.accuracy[8] == pytest.approx(0.0) and r.confidence[8] == pytest.approx(0.55)
    assert np.isnan(r.accuracy[0]) and np.isnan(r.confidence[14])
    assert r.ece == pytest.approx((2 * 0.40 + 0.38 + 0.55) / 4)
    assert expected_calibration_error(y, p) == r.ece


def test_confidence_one_lands_in_the_last_bin_and_a_sure_right_model_has_no_error() -> None:
    y = np.array([0, 1])
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = reliability(y, p)
    assert r.counts[-1] == 2
    assert r.ece == 0.0


def test_a_temperature_is_bounded_when_the_validation_side_cannot_tell() -> None:
    # Every validation image right: the NLL keeps falling as T -> 0.
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.35, 0.65]])
    assert fit_temperature(y, p) == pytest.approx(TEMPERATURE_BOUNDS[0])
    # Every one wrong: it keeps falling as T grows.
    assert fit_temperature(1 - y, p) == pytest.approx(TEMPERATURE_BOUNDS[1])


def test_empty_validation_side_means_no_calibration() -> None:
    empty = np.zeros((0, 2))
    assert fit_temperature(np.zeros(0, int), empty) == 1.0
    assert math.isnan(expected_calibration_error(np.zeros(0, int), empty))


@pytest.mark.parametrize(
    "y, p, match",
    [
        (np.array([0, 1]), np.array([0.2, 0.8]), "shape"),
        (np.array([0]), np.array([[0.2, 0.8], [0.5, 0.5]]), "labels for 2 rows"),
        (np.array([0, 2]), np.array([[0.2, 0.8], [0.5, 0.5]]), "0..1"),
    ],
)
def test_mismatched_input_is_a_clear_error(y, p, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_temperature(y, p)
