"""maskcls.evaluate: metrics against hand-computed values; the evaluation files."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskcls.evaluate import compute_metrics, confusion, write_evaluation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUC as the share of (positive, negative) pairs ranked correctly, ties counting half."""
    pos, neg = scores[positive], scores[~positive]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# Binary example. Rows: true class, P(class 1).
#   negatives (true 0): 0.10 0.40 0.35 0.80          -> predicted 0 0 0 1
#   positives (true 1): 0.90 0.70 0.30 0.55 0.65 0.20 -> predicted 1 1 0 1 1 0
# Confusion [[3, 1], [2, 4]].
BIN_CLASSES = ["with_mask", "without_mask"]
BIN_Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
BIN_P1 = np.array([0.10, 0.40, 0.35, 0.80, 0.90, 0.70, 0.30, 0.55, 0.65, 0.20])
BIN_PROBA = np.stack([1 - BIN_P1, BIN_P1], axis=1)

# Three-class example. Predictions (argmax) and the confusion matrix:
#   true 0: pred 0, 1          -> [1, 1, 0]
#   true 1: pred 1, 2          -> [0, 1, 1]
#   true 2: pred 2, 1, 2       -> [0, 1, 2]
TRI_CLASSES = ["cloth", "none", "surgical"]
TRI_Y = np.array([0, 0, 1, 1, 2, 2, 2])
TRI_PROBA = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.5, 0.2],
        [0.1, 0.8, 0.1],
        [0.2, 0.3, 0.5],
        [0.1, 0.1, 0.8],
        [0.3, 0.6, 0.1],
        [0.2, 0.2, 0.6],
    ]
)


def test_binary_metrics_match_hand_computed_values() -> None:
    m = compute_metrics(BIN_Y, BIN_PROBA, BIN_CLASSES)
    # class 0: precision 3/5, recall 3/4, F1 2/3; class 1: precision 4/5, recall 4/6, F1 8/11
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx((3 / 5 + 4 / 5) / 2)
    assert m["recall"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m["f1"] == pytest.approx((2 / 3 + 8 / 11) / 2)
    assert m["recall_with_mask"] == pytest.approx(3 / 4)
    assert m["recall_without_mask"] == pytest.approx(4 / 6)
    # 15 of the 24 (positive, negative) pairs are ordered correctly.
    assert m["roc_auc"] == pytest.approx(15 / 24)
    assert m["roc_auc"] == pytest.approx(pairwise_auc(BIN_P1, BIN_Y == 1))
    assert all(isinstance(v, float) for v in m.values())


def test_three_class_metrics_match_hand_computed_values() -> None:
    m = compute_metrics(TRI_Y, TRI_PROBA, TRI_CLASSES)
    # precision: 1/1, 1/3, 2/3; recall: 1/2, 1/2, 2/3; F1: 2/3, 2/5, 2/3
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["precision"] == pytest.approx((1 + 1 / 3 + 2 / 3) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 / 2 + 2 / 3) / 3)
    assert m["f1"] == pytest.approx((2 / 3 + 2 / 5 + 2 / 3) / 3)
    assert m["recall_cloth"] == pytest.approx(1 / 2)
    assert m["recall_none"] == pytest.approx(1 / 2)
    assert m["recall_surgical"] == pytest.approx(2 / 3)
    # One-vs-rest, unweighted mean over classes.
    ovr = np.mean([pairwise_auc(TRI_PROBA[:, k], TRI_Y == k) for k in range(3)])
    assert m["roc_auc"] == pytest.approx(ovr)


def test_perfect_predictions_score_one() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.eye(2)[y] * 0.8 + 0.1
    m = compute_metrics(y, proba, ["a", "b"])
    for key in ("accuracy", "precision", "recall", "f1", "recall_a", "recall_b", "roc_auc"):
        assert m[key] == pytest.approx(1.0), key


def test_auc_is_nan_when_a_class_is_absent_from_the_truth() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.full((4, 3), 1 / 3)
    proba[:, 0] += 0.1
    proba /= proba.sum(axis=1, keepdims=True)
    m = compute_metrics(y, proba, ["a", "b", "c"])
    assert math.isnan(m["roc_auc"])
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["recall_c"] == 0.0


def test_confusion_rows_are_true_and_columns_predicted() -> None:
    cm = confusion(TRI_Y, TRI_PROBA.argmax(axis=1), TRI_CLASSES)
    assert cm["labels"] == TRI_CLASSES
    assert cm["matrix"] == [[1, 1, 0], [0, 1, 1], [0, 1, 2]]
    assert cm["rows"] == "true" and cm["columns"] == "predicted"


def _hand_confusion(y: np.ndarray, pred: np.ndarray, n: int) -> list[list[int]]:
    m = [[0] * n for _ in range(n)]
    for t, p in zip(y, pred):
        m[int(t)][int(p)] += 1
    return m


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and min(img.shape[:2]) > 50


@pytest.mark.parametrize(
    "y, proba, classes, channels",
    [(BIN_Y, BIN_PROBA, BIN_CLASSES, 1), (TRI_Y, TRI_PROBA, TRI_CLASSES, 3)],
)
def test_write_evaluation_writes_every_file(tmp_path: Path, y, proba, classes, channels: int) -> None:
    n = len(y)
    images = np.random.default_rng(0).integers(0, 256, size=(n, 8, 8, channels), dtype=np.uint8)
    paths = [f"{classes[t]}/photo_{k}.png" for k, t in enumerate(y)]
    history = {"loss": [0.9, 0.5], "accuracy": [0.6, 0.8], "val_loss": [1.0, 0.7], "val_accuracy": [0.5, 0.7]}
    out = tmp_path / "eval" / "nested"
    result = write_evaluation(y, proba, classes, images, paths, history, out)

    assert set(p.name for p in out.iterdir()) >= {
        "confusion_matrix.png",
        "confusion_matrix.json",
        "classification_report.txt",
        "misclassified.png",
        "training_curves.png",
        "test_predictions.json",
        "reliability.png",
    }
    for name in ("confusion_matrix.png", "misclassified.png", "training_curves.png", "reliability.png"):
        _assert_png(out / name)

    pred = proba.argmax(axis=1)
    cm = json.loads((out / "confusion_matrix.json").read_text())
    assert cm["labels"] == classes
    assert cm["matrix"] == _hand_confusion(y, pred, len(classes))

    report = (out / "classification_report.txt").read_text()
    for c in classes:
        assert c in report
    assert f"{(pred == y).mean():.4f}" in report  # the accuracy line

    predictions = json.loads((out / "test_predictions.json").read_text())
    assert len(predictions) == n
    for k, row in enumerate(predictions):
        assert row["path"] == paths[k]
        assert row["true"] == classes[y[k]]
        assert row["predicted"] == classes[pred[k]]
        assert row["probability"] == pytest.approx(proba[k].max())

    assert result == compute_metrics(y, proba, classes)


def test_write_evaluation_with_nothing_misclassified(tmp_path: Path) -> None:
    y = np.array([0, 1, 0, 1])
    proba = np.eye(2)[y]
    images = np.zeros((4, 8, 8, 1), np.uint8)
    result = write_evaluation(y, proba, ["a", "b"], images, [f"{k}.png" for k in range(4)], {"loss": [1.0]}, tmp_path)
    _assert_png(tmp_path / "misclassified.png")
    _assert_png(tmp_path / "training_curves.png")
    assert json.loads((tmp_path / "confusion_matrix.json").read_text())["matrix"] == [[2, 0], [0, 2]]
    assert result["accuracy"] == 1.0
    assert result["ece"] == 0.0


def test_metrics_include_the_top_label_ece() -> None:
    # Against a plain loop over 15 equal-width bins (lo, hi] of the top-label confidence.
    conf = BIN_PROBA.max(axis=1)
    right = BIN_PROBA.argmax(axis=1) == BIN_Y
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.sum() / len(conf) * abs(right[inside].mean() - conf[inside].mean())
    m = compute_metrics(BIN_Y, BIN_PROBA, BIN_CLASSES)
    assert m["ece"] == pytest.approx(ece)
    assert 0.05 < m["ece"] < 0.5


def test_write_evaluation_draws_the_reliability_of_calibrated_and_raw_probabilities(tmp_path: Path) -> None:
    from maskcls.calibration import apply_temperature

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    raw = np.eye(2)[y] * 0.9 + 0.05
    raw[:10] = raw[:10, ::-1]  # ten confidently wrong
    calibrated = apply_temperature(raw, 2.0)
    images = np.zeros((60, 8, 8, 1), np.uint8)
    result = write_evaluation(y, calibrated, ["a", "b"], images, [f"{k}.png" for k in range(60)], {"loss": [1.0]},
                              tmp_path, uncalibrated=raw, temperature=2.0)
    _assert_png(tmp_path / "reliability.png")
    assert result == compute_metrics(y, calibrated, ["a", "b"])
    assert result["accuracy"] == compute_metrics(y, raw, ["a", "b"])["accuracy"]
