"""Fit from uint8 arrays through tf.data (scaling on the fly), with history and timing.

The augmented training set (about 100k x 50 x 50) stays a uint8 file on disk: batches are
read from it with ``pread`` (into the page cache, not into this process's memory, as a memory
map's touched pages would be) and scaled to [0, 1] inside the input pipeline, so it never
exists as float32 (1 GB, plus Keras' copy for validation_split) nor whole in the process.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maskcls.config import TrainConfig
from maskcls.model import build_model, compile_model

LogFn = Callable[[str], None]


def augmenter(cfg: TrainConfig) -> keras.Sequential | None:
    """The on-the-fly photometric and geometric augmentation of ``cfg`` (on batches in [0, 1]), or None."""
    steps: list[keras.layers.Layer] = []
    seed = cfg.seed
    if cfg.aug_rotation > 0:
        steps.append(keras.layers.RandomRotation(cfg.aug_rotation / 360.0, fill_mode="reflect", seed=seed))
    if cfg.aug_zoom > 0:
        steps.append(keras.layers.RandomZoom((-cfg.aug_zoom, cfg.aug_zoom), fill_mode="reflect", seed=seed + 1))
    if cfg.aug_brightness > 0:
        steps.append(keras.layers.RandomBrightness(cfg.aug_brightness, value_range=(0.0, 1.0), seed=seed + 2))
    if cfg.aug_contrast > 0:
        steps.append(keras.layers.RandomContrast(cfg.aug_contrast, value_range=(0.0, 1.0), seed=seed + 3))
    if cfg.aug_blur > 0:
        steps.append(keras.layers.RandomGaussianBlur(factor=cfg.aug_blur, kernel_size=3, sigma=(0.1, 1.5),
                                                     value_range=(0.0, 1.0), seed=seed + 4))
    return keras.Sequential(steps, name="online_augmentation") if steps else None


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse class frequency, scaled so that the weights average 1 over the samples."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return {k: float(len(y) / (n_classes * c)) if c else 0.0 for k, c in enumerate(counts)}


class RowReader:
    """Rows of an array by sorted index. For a memory-mapped .npy the rows are read from its file
    with ``preadv`` straight into the batch (consecutive rows in one call), so the file's pages
    are never mapped into the process: its RSS does not grow by the file's size over an epoch."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.fd: int | None = None
        if isinstance(x, np.memmap) and x.filename and x.flags.c_contiguous:
            self.fd = os.open(x.filename, os.O_RDONLY)
            self.offset = int(x.offset)
            self.row_bytes = int(np.prod(x.shape[1:], dtype=np.int64)) * x.dtype.itemsize
            weakref.finalize(self, os.close, self.fd)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        if self.fd is None:
            return np.asarray(self.x[idx])
        out = np.empty((len(idx), *self.x.shape[1:]), dtype=self.x.dtype)
        buf = memoryview(out.reshape(-1).view(np.uint8))
        # Runs of consecutive rows: each is one read of (run length x row bytes).
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        for run in np.split(np.arange(len(idx)), breaks):
            first, count = int(run[0]), len(run)
            want = count * self.row_bytes
            view = buf[first * self.row_bytes : first * self.row_bytes + want]
            got = os.preadv(self.fd, [view], self.offset + int(idx[first]) * self.row_bytes)
            if got != want:
                raise OSError(f"{self.x.filename}: short read ({got} of {want} bytes) at row {idx[first]}")
        return out


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    n_classes: int,
    augment: keras.Sequential | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 in [0, 1], label) gathered from a uint8 array (a memmap is read from
    its file, see RowReader).

    Batches are gathered in Python from ``x`` itself, so TensorFlow never holds a copy of
    the whole array (capturing it as a tensor would copy it into the dataset graph); the
    scaling to float happens per batch inside tf.data.
    """
    n = len(x)
    labels = np.asarray(y, dtype=np.float32 if n_classes == 2 else np.int64)
    rng = np.random.default_rng(seed)
    rows = RowReader(x)

    def batches():
        order = rng.permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            # Sorted indices read the file front to back within a batch.
            idx = np.sort(order[start : start + batch_size])
            yield rows(idx), labels[idx]

    spec = (
        tf.TensorSpec(shape=(None, *x.shape[1:]), dtype=tf.uint8),
        tf.TensorSpec(shape=(None,), dtype=tf.float32 if n_classes == 2 else tf.int64),
    )
    steps = -(-n // batch_size)
    ds = tf.data.Dataset.from_generator(batches, output_signature=spec)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps))

    def scale(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        xb = tf.cast(xb, tf.float32) * (1.0 / 255.0)
        if augment is not None:
            xb = tf.clip_by_value(augment(xb, training=True), 0.0, 1.0)
        return xb, yb

    return ds.map(scale, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


class ProgressLogger(keras.callbacks.Callback):
    """Per-epoch (and quarter-epoch) progress through a log function, plus throughput."""

    def __init__(self, log: LogFn, n_samples: int, batch_size: int, epochs: int) -> None:
        super().__init__()
        self.log = log
        self.n_samples = n_samples
        self.steps = max(1, -(-n_samples // batch_size))
        self.epochs = epochs
        self.epoch_seconds: list[float] = []
        self._t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()
        self._next_mark = 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # With steps_per_execution > 1 Keras calls this once per execution, so marks are approximate.
        frac = (batch + 1) / self.steps
        if self._next_mark < 4 and frac >= self._next_mark / 4:
            self._next_mark = int(frac * 4) + 1
            self.log(f"epoch {self.epoch_label}: {int(frac * 100)}% ({batch + 1}/{self.steps} batches)")

    @property
    def epoch_label(self) -> str:
        return f"{len(self.epoch_seconds) + 1}/{self.epochs}"

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._t0
        self.epoch_seconds.append(seconds)
        logs = logs or {}
        parts = [f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, (int, float))]
        self.log(
            f"epoch {epoch + 1}/{self.epochs} done in {seconds:.1f}s "
            f"({self.n_samples / seconds:.0f} samples/s): {' '.join(parts)}"
        )


def train_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    cfg: TrainConfig,
    n_classes: int,
    out_path: Path,
    callbacks: list[keras.callbacks.Callback] | None = None,
    log: LogFn = print,
) -> dict[str, Any]:
    """Train the configured CNN and save it to ``out_path`` (.keras); returns the history."""
    keras.utils.set_random_seed(cfg.seed)
    steps_per_epoch = -(-len(x_train) // cfg.batch_size)
    model = compile_model(build_model(cfg, tuple(x_train.shape[1:]), n_classes), cfg, n_classes, steps_per_epoch)
    train_ds = make_dataset(x_train, y_train, cfg.batch_size, shuffle=True, seed=cfg.seed, n_classes=n_classes,
                            augment=augmenter(cfg))
    val_ds = None
    if x_val is not None and len(x_val):
        val_ds = make_dataset(x_val, y_val, max(cfg.batch_size, 256), shuffle=False, seed=cfg.seed, n_classes=n_classes)
    schedule: list[keras.callbacks.Callback] = []
    if val_ds is not None and cfg.early_stopping_patience > 0:
        schedule.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                                      restore_best_weights=True))
    if val_ds is not None and cfg.lr_schedule == "plateau":
        schedule.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_lr=1e-6))
    if val_ds is None and (cfg.early_stopping_patience > 0 or cfg.lr_schedule == "plateau"):
        log("no validation side: early stopping and the plateau schedule are off")
    weights = class_weights(y_train, n_classes) if cfg.class_weight == "balanced" else None
    progress = ProgressLogger(log, len(x_train), cfg.batch_size, cfg.epochs)
    log(
        f"training on {len(x_train)} samples ({0 if x_val is None else len(x_val)} validation), "
        f"{cfg.epochs} epochs, batch {cfg.batch_size}, {model.count_params()} parameters"
    )
    hist = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, verbose=0, class_weight=weights,
                     callbacks=[progress, *schedule, *(callbacks or [])])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(out_path)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    if "val_loss" in history:
        best = int(np.argmin(history["val_loss"]))
        kept = best if cfg.early_stopping_patience > 0 else len(history["val_loss"]) - 1
        log(f"validation loss: best {history['val_loss'][best]:.4f} after epoch {best + 1}; "
            f"the saved weights are those after epoch {kept + 1}")
    # The first epoch includes graph tracing and XLA compilation; report steady state too.
    steady = progress.epoch_seconds[1:] or progress.epoch_seconds
    return {
        "history": history,
        "epoch_seconds": progress.epoch_seconds,
        "samples_per_s": len(x_train) / (sum(steady) / len(steady)),
        "n_params": int(model.count_params()),
    }


def load_model(path: Path | str) -> keras.Model:
    """Load a saved .keras model in safe mode (no arbitrary code from the file)."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)
