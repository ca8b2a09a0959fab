"""The article's training call, as it was written, for comparison (run in its own process).

    model.fit(x_float32, y, batch_size=16, validation_split=0.2)

on the same model (the seed profile's) and the same augmented training images as the
pipeline. One warm-up epoch, then one measured epoch; then test accuracy. Prints JSON.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer


def main(
    x_train: Annotated[Path, typer.Option(help=".npy of un-augmented uint8 training images")],
    y_train: Annotated[Path, typer.Option()],
    x_test: Annotated[Path, typer.Option()],
    y_test: Annotated[Path, typer.Option()],
    shift: Annotated[int | None, typer.Option(help="default: the seed profile's augment.shift")] = None,
) -> None:
    """Time the article's model.fit on the seed model; print the figures as JSON."""
    import keras

    from maskcls.augment import augment_batch, augment_labels
    from maskcls.config import load_config
    from maskcls.model import build_model

    profile = load_config("seed")
    if shift is None:
        shift = profile.augment.shift
    cfg = profile.train
    keras.utils.set_random_seed(cfg.seed)
    # The article's way: every variant in memory as float32 in [0, 1].
    x = augment_batch(np.load(x_train), shift).astype(np.float32) / 255.0
    y = augment_labels(np.load(y_train)).astype(np.float32)
    model = build_model(cfg, tuple(x.shape[1:]), 2)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.learning_rate),
                  loss="binary_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=cfg.batch_size, validation_split=0.2, epochs=1, verbose=0)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=cfg.batch_size, validation_split=0.2, epochs=1, verbose=0)
    measured = time.perf_counter() - t0
    n_fit = int(len(x) * 0.8)  # validation_split holds out the last 20% (variants of whole images)
    x_eval = np.load(x_test).astype(np.float32) / 255.0
    p = model.predict(x_eval, batch_size=256, verbose=0)[:, 0]
    acc = float(np.mean((p >= 0.5).astype(int) == np.load(y_test)))
    print(json.dumps({
        "naive_train_samples_per_s": n_fit / measured,
        "naive_warmup_epoch_s": warm,
        "naive_epoch_s": measured,
        "naive_fit_samples": n_fit,
        "naive_test_accuracy_after_2_epochs": acc,
        "naive_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    typer.run(main)
