"""One run of training, in a process of its own: benchmarks/run.py's ``speed`` part alternates
timed rounds of the sides (pipeline, naive, pipeline, naive, ...) and, once per side, trains
the same number of samples and scores the test side (``--x-test``).

Both sides train the seed profile's model on the same augmented images (the 32 variants of
the seed run's training side) for ``--warmup`` steps (tracing, graph building, first
allocations), then for ``--steps`` timed steps, and print one JSON line:

- ``pipeline``: the project's input path and compile settings (maskcls.train.make_dataset
  over a uint8 memmap, scaled to float32 per batch in tf.data; maskcls.model.compile_model
  with the profile's ``steps_per_execution``);
- ``naive``: the article's ``model.fit(x_float32, y, batch_size=16, validation_split=0.2)`` on
  every variant held in memory as float32 (it trains on the first 80%; a fixed number of
  steps is timed; its validation at the end of the epoch is not).

``--batch`` changes the batch size (the pipeline's batch-size row) and ``--lr-scale`` its
learning rate with it. ``--precision mixed_bfloat16`` trains in bfloat16 with float32
weights (Keras mixed precision). ``--flops`` adds the model's training FLOPs per sample
(counted from its layers; see ``train_flops_per_sample``).
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

import keras
import numpy as np
import typer


def forward_flops_per_sample(model) -> int:
    """Multiply-adds x 2 of one forward pass, from the layers' shapes: convolutions and dense layers
    (everything else, activations, pooling, batch norm, is a few operations per value and left out)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2 * kh * kw * cin * cout * h * w
        elif isinstance(layer, keras.layers.Dense):
            n_in, n_out = layer.kernel.shape
            total += 2 * n_in * n_out
    return int(total)


def train_flops_per_sample(model) -> int:
    """A training step's FLOPs per sample: the forward pass, then gradients with respect to the
    activations and to the weights, each as costly as the forward pass (the usual 3x)."""
    return 3 * forward_flops_per_sample(model)


#: The article's validation_split: the naive side trains on the first 80% of the samples.
NAIVE_VALIDATION = 0.2


def training_samples(n: int, side: str) -> int:
    """Samples a side trains on out of ``n`` augmented ones (what one epoch of it is)."""
    return n - int(n * NAIVE_VALIDATION) if side == "naive" else n


class StepClock(keras.callbacks.Callback):
    """Times the steps after the first ``warmup`` ones within one fit call (Keras calls the batch hook
    once per execution of ``steps_per_execution`` steps: warmup is a multiple of it)."""

    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup = warmup
        self.warm_at = self.end_at = 0.0

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self.end_at = time.perf_counter()  # the last one is the end of the last training step
        if batch + 1 == self.warmup:
            self.warm_at = self.end_at


def main(
    x_train: Annotated[Path, typer.Option(help=".npy of un-augmented uint8 training images")],
    y_train: Annotated[Path, typer.Option()],
    side: Annotated[Literal["pipeline", "naive"], typer.Option()] = "pipeline",
    steps: Annotated[int, typer.Option(help="Timed training steps.")] = 1024,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 128,
    batch: Annotated[int | None, typer.Option(help="Batch size (default: the seed profile's).")] = None,
    lr_scale: Annotated[float, typer.Option(help="Multiply the learning rate (with a larger batch).")] = 1.0,
    steps_per_execution: Annotated[int | None, typer.Option(help="Pipeline only; default: the profile's.")] = None,
    precision: Annotated[Literal["float32", "mixed_bfloat16"], typer.Option()] = "float32",
    flops: Annotated[bool, typer.Option(help="Report the model's training FLOPs per sample.")] = False,
    x_test: Annotated[Path | None, typer.Option(help="Score these images after training (with --y-test).")] = None,
    y_test: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Time ``steps`` training steps of one side; print one JSON object."""
    from maskcls.augment import augment_labels, augment_to_file
    from maskcls.config import load_config
    from maskcls.model import build_model, compile_model
    from maskcls.train import make_dataset

    profile = load_config("seed")
    cfg = profile.train
    overrides = {"batch_size": batch or cfg.batch_size, "learning_rate": cfg.learning_rate * lr_scale}
    if steps_per_execution is not None:
        overrides["steps_per_execution"] = steps_per_execution
    cfg = cfg.model_copy(update=overrides)
    keras.utils.set_random_seed(cfg.seed)
    if precision != "float32":
        keras.mixed_precision.set_global_policy(precision)
    y = augment_labels(np.load(y_train)).astype(np.float32)
    n_steps = warmup + steps
    spe = cfg.steps_per_execution if side == "pipeline" else 1
    if warmup % spe or steps % spe:
        raise typer.BadParameter(f"--warmup and --steps must be multiples of steps_per_execution ({spe})")
    if n_steps * cfg.batch_size > training_samples(len(y), side):
        raise typer.BadParameter(f"{n_steps} steps of {cfg.batch_size} exceed the "
                                 f"{training_samples(len(y), side)} training samples")
    with tempfile.TemporaryDirectory() as tmp:
        if side == "pipeline":
            xa = Path(tmp) / "x.npy"
            augment_to_file(np.load(x_train), profile.augment.shift, xa)
            x = np.load(xa, mmap_mode="r")
            model = compile_model(build_model(cfg, tuple(x.shape[1:]), 2), cfg, 2)
            data = make_dataset(x, y, cfg.batch_size, shuffle=True, seed=cfg.seed, n_classes=2)
            fit_args = {"x": data}
        else:
            from maskcls.augment import augment_batch

            x = augment_batch(np.load(x_train), profile.augment.shift).astype(np.float32) / 255.0
            model = build_model(cfg, tuple(x.shape[1:]), 2)
            model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.learning_rate),
                          loss="binary_crossentropy", metrics=["accuracy"])
            fit_args = {"x": x, "y": y, "batch_size": cfg.batch_size, "validation_split": NAIVE_VALIDATION}
        clock = StepClock(warmup)
        t0 = time.perf_counter()
        model.fit(**fit_args, epochs=1, steps_per_epoch=n_steps, verbose=0, callbacks=[clock])
        warm_at = clock.warm_at if warmup else t0
        warm_s, timed_s = warm_at - t0, clock.end_at - warm_at
        out = {
            "side": side,
            "batch": cfg.batch_size,
            "learning_rate": cfg.learning_rate,
            "steps_per_execution": spe,
            "precision": precision,
            "steps": steps,
            "warmup_s": warm_s,
            "timed_s": timed_s,
            "samples_per_s": steps * cfg.batch_size / timed_s,
        }
        if x_test is not None and y_test is not None:
            from maskcls.model import predict_proba

            p = predict_proba(model, np.load(x_test).astype(np.float32) / 255.0)
            out["trained_samples"] = n_steps * cfg.batch_size
            out["test_accuracy"] = float(np.mean(p.argmax(1) == np.load(y_test)))
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if flops:
            out["train_flops_per_sample"] = train_flops_per_sample(model)
            out["forward_flops_per_sample"] = forward_flops_per_sample(model)
        print(json.dumps(out))


if __name__ == "__main__":
    typer.run(main)
