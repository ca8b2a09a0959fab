"""The pipeline's training (maskcls.train.train_model, seed profile) on the same images as
benchmarks/naive.py: one warm-up epoch, one measured epoch, then test accuracy. Prints JSON."""

from __future__ import annotations

import json
import resource
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer


def main(
    x_train: Annotated[Path, typer.Option(help=".npy of un-augmented uint8 training images")],
    y_train: Annotated[Path, typer.Option()],
    x_val: Annotated[Path, typer.Option()],
    y_val: Annotated[Path, typer.Option()],
    x_test: Annotated[Path, typer.Option()],
    y_test: Annotated[Path, typer.Option()],
    shift: Annotated[int | None, typer.Option(help="default: the seed profile's augment.shift")] = None,
) -> None:
    """Time the pipeline's train_model on the seed model; print the figures as JSON."""
    from maskcls.augment import augment_labels, augment_to_file
    from maskcls.config import load_config
    from maskcls.model import predict_proba
    from maskcls.train import load_model, train_model

    profile = load_config("seed", {"train.epochs": 2})
    if shift is None:
        shift = profile.augment.shift
    cfg = profile.train
    with tempfile.TemporaryDirectory() as tmp:
        xa = Path(tmp) / "x.npy"
        augment_to_file(np.load(x_train), shift, xa)
        x = np.load(xa, mmap_mode="r")
        y = augment_labels(np.load(y_train))
        out = Path(tmp) / "m.keras"
        result = train_model(x, y, np.load(x_val), np.load(y_val), cfg, 2, out, log=lambda m: None)
        model = load_model(out)
    x_eval = np.load(x_test).astype(np.float32) / 255.0
    acc = float(np.mean(predict_proba(model, x_eval).argmax(1) == np.load(y_test)))
    print(json.dumps({
        "train_samples_per_s": len(x) / result["epoch_seconds"][1],
        "pipeline_warmup_epoch_s": result["epoch_seconds"][0],
        "pipeline_epoch_s": result["epoch_seconds"][1],
        "pipeline_fit_samples": len(x),
        "pipeline_test_accuracy_after_2_epochs": acc,
        "pipeline_fit_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    typer.run(main)
