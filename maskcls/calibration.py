"""Calibrated probabilities: temperature scaling fitted on the validation side, and expected
calibration error (ECE) with its reliability bins.

Temperature scaling (Guo et al., 2017) divides the log-probabilities by one number T and
renormalises: softmax(log(p) / T). It never changes the argmax, so accuracy stays, and one
parameter cannot overfit a validation side of a few hundred images. It works alike for the
two columns of a sigmoid output (``maskcls.inference.probability_columns``) and for an
N-class softmax. Applying it is ``maskcls.inference.apply_temperature`` (the registered model
applies it, with numpy alone); this module fits it and measures the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskcls.inference import apply_temperature

__all__ = ["ECE_BINS", "TEMPERATURE_BOUNDS", "Reliability", "apply_temperature", "expected_calibration_error",
           "fit_temperature", "nll", "reliability"]

ECE_BINS = 15
# T outside this range means the validation side cannot tell (for instance every image right,
# where the NLL keeps falling as T -> 0): the bound is returned rather than an extreme value.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _check(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (n, n_classes >= 2), got shape {p.shape}")
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} rows of probabilities")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be in 0..{p.shape[1] - 1}")
    return y, p


def nll(y_true: np.ndarray, proba: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under softmax(log(p) / T)."""
    y, p = _check(y_true, proba)
    if not len(y):
        return float("nan")
    q = apply_temperature(p, temperature)
    return float(-np.mean(np.log(np.clip(q[np.arange(len(y)), y], 1e-300, 1.0))))


def fit_temperature(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The T in ``TEMPERATURE_BOUNDS`` that minimises the NLL of ``y_true`` under softmax(log(p) / T).

    Searched over log T (bounded scalar minimisation), where the NLL is smooth and the
    bounds are symmetric around T = 1. Empty input gives 1.0 (no calibration).
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    y, p = _check(y_true, proba)
    if not len(y):
        return 1.0
    z = np.log(np.clip(p, 1e-12, 1.0))
    rows = np.arange(len(y))

    def objective(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[rows, y].mean())

    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    found = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
    best = float(found.x)
    # The bounded search never evaluates the bounds themselves; a monotone objective ends there.
    best = min((lo, best, hi), key=objective)
    return float(np.exp(best))


@dataclass(frozen=True)
class Reliability:
    """Top-label reliability bins: equal-width confidence bins over [0, 1]."""

    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # (bins,) images per bin
    accuracy: np.ndarray  # (bins,) share correct per bin (nan where empty)
    confidence: np.ndarray  # (bins,) mean top-label probability per bin (nan where empty)
    ece: float  # sum over bins of count/n * |accuracy - confidence|


def reliability(y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Bin each image by its top-label probability; per bin, accuracy against mean confidence."""
    y, p = _check(y_true, proba)
    edges = np.linspace(0.0, 1.0, bins + 1)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # Bins are (lo, hi]; a confidence of exactly 0 (impossible for a top label) joins the first.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=bins) / counts
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] * np.abs(acc[filled] - mean_conf[filled])) / len(y)) if len(y) else float("nan")
    return Reliability(edges=edges, counts=counts, accuracy=acc, confidence=mean_conf, ece=ece)


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE over ``bins`` equal-width confidence bins (nan for no images)."""
    return reliability(y_true, proba, bins).ece
