"""Metrics, confusion matrix, classification report and figures (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from maskcls.calibration import ECE_BINS, reliability  # noqa: E402


def compute_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class recall, ROC AUC, top-label ECE (15 bins).

    ``proba`` is (n, n_classes). Precision, recall and F1 are macro averages so that no
    class is singled out as "positive"; per-class recall is ``test_recall_<class>``.
    """
    y_true = np.asarray(y_true)
    y_pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    out: dict[str, Any] = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    per_class = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    for name, value in zip(classes, per_class):
        out[f"recall_{name}"] = float(value)
    out["ece"] = reliability(y_true, proba).ece
    if len(np.unique(y_true)) == len(classes):
        if len(classes) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
        else:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=labels))
    else:
        out["roc_auc"] = float("nan")
    return out


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    cm = skm.confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    return {"labels": classes, "matrix": cm.tolist(), "rows": "true", "columns": "predicted"}


def plot_confusion(cm: dict[str, Any], path: Path, title: str = "Test confusion matrix") -> None:
    disp = skm.ConfusionMatrixDisplay(np.array(cm["matrix"]), display_labels=cm["labels"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    disp.plot(ax=ax, cmap="Blues", colorbar=False, values_format="d")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(history: dict[str, list[float]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            if key in history:
                epochs = range(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], style, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(y_true: np.ndarray, proba: np.ndarray, path: Path, uncalibrated: np.ndarray | None = None,
                     temperature: float | None = None, bins: int = ECE_BINS) -> None:
    """Reliability diagram: accuracy against confidence per bin (bars: images per bin), the
    diagonal of perfect calibration, and the ECE (before and after calibration when given)."""
    after = reliability(y_true, proba, bins)
    centers = (after.edges[:-1] + after.edges[1:]) / 2
    width = 1.0 / bins
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    if uncalibrated is not None:
        before = reliability(y_true, uncalibrated, bins)
        ax.plot(before.confidence, before.accuracy, "s:", color="tab:gray", label="uncalibrated")
        title = f"ECE {before.ece:.4f} uncalibrated -> {after.ece:.4f} calibrated"
        if temperature is not None:
            title += f" (T={temperature:.3g})"
    else:
        title = f"ECE {after.ece:.4f}"
    ax.bar(centers, np.nan_to_num(after.accuracy), width=width * 0.9, alpha=0.6, color="tab:blue",
           edgecolor="tab:blue", label="accuracy per bin")
    ax.plot(after.confidence, after.accuracy, "o-", color="tab:blue", label="calibrated" if uncalibrated is not None
            else "model")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    ax_n.bar(centers, after.counts, width=width * 0.9, color="tab:blue", alpha=0.6)
    ax_n.set_xlabel("confidence (probability of the predicted label)")
    ax_n.set_ylabel("images (calibrated)" if uncalibrated is not None else "images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(images: np.ndarray, titles: list[str], path: Path, cols: int = 8, title: str = "") -> None:
    """A grid of (n, h, w, c) uint8 images with a caption each."""
    n = max(1, len(images))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.6), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            img = images[k]
            ax.imshow(img[:, :, 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            ax.set_title(titles[k], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_evaluation(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
    images: np.ndarray,
    paths: list[str],
    history: dict[str, list[float]],
    out_dir: Path,
    max_misclassified: int = 32,
    uncalibrated: np.ndarray | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Compute metrics and write every evaluation file into ``out_dir``; returns the metrics.

    ``proba`` are the probabilities the model answers with (calibrated); ``uncalibrated``, when
    given, are the raw ones, shown beside them in ``reliability.png``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = np.asarray(y_true)
    y_pred = proba.argmax(axis=1)
    result = compute_metrics(y_true, proba, classes)
    cm = confusion(y_true, y_pred, classes)
    (out_dir / "confusion_matrix.json").write_text(json.dumps(cm, indent=2))
    plot_confusion(cm, out_dir / "confusion_matrix.png")
    report = skm.classification_report(
        y_true, y_pred, labels=list(range(len(classes))), target_names=classes, digits=4, zero_division=0
    )
    (out_dir / "classification_report.txt").write_text(report)
    wrong = np.nonzero(y_pred != y_true)[0][:max_misclassified]
    image_grid(
        images[wrong],
        [f"{classes[y_pred[k]]} {proba[k, y_pred[k]]:.2f}\n{Path(paths[k]).name[:18]}" for k in wrong],
        out_dir / "misclassified.png",
        title=f"{int((y_pred != y_true).sum())} misclassified test images (predicted label, probability)",
    )
    plot_training_curves(history, out_dir / "training_curves.png")
    plot_reliability(y_true, proba, out_dir / "reliability.png", uncalibrated, temperature)
    predictions = [
        {"path": p, "true": classes[t], "predicted": classes[q], "probability": float(proba[k, q])}
        for k, (p, t, q) in enumerate(zip(paths, y_true, y_pred))
    ]
    (out_dir / "test_predictions.json").write_text(json.dumps(predictions, indent=1))
    return result
