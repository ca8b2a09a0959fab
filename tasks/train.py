"""Stage `train`: fit the CNN; per-epoch metrics go to the MLflow run as they happen."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import get_run_logger, task

from maskcls.config import Settings, TrainConfig
from maskcls.store import Store, load_array
from tasks.caching import StageCache
from tasks.records import ArraysRecord, AugmentedRecord, ModelRecord


@task(name="train", cache_policy=StageCache(stage="train", inputs=("arrays", "augmented", "cfg")))
def train(arrays: ArraysRecord, augmented: AugmentedRecord, cfg: TrainConfig, settings: Settings,
          run_id: str) -> ModelRecord:
    """Fit the CNN; per-epoch metrics go to the MLflow run as they happen."""
    # TensorFlow and MLflow's client: loaded only when training runs, not on a cached run.
    from maskcls.train import train_model
    from tasks.tracking import configure, epoch_logger

    client = configure(settings)
    val = arrays.sides["val"]
    if augmented.val_x is not None and augmented.val_y is not None:  # the article protocol's validation
        x_val, y_val = load_array(augmented.val_x, mmap=False), load_array(augmented.val_y, mmap=False)
    else:
        x_val = load_array(val.x, mmap=False) if val.paths else None
        y_val = load_array(val.y, mmap=False) if val.paths else None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.keras"
        result = train_model(
            load_array(augmented.x), load_array(augmented.y), x_val, y_val, cfg,
            n_classes=len(arrays.classes), out_path=out,
            callbacks=[epoch_logger(client, run_id)], log=get_run_logger().info,
        )
        model_ref = Store(settings.store_dir).put_file("models", out)
    return ModelRecord(
        model=model_ref, history=result["history"], epoch_seconds=result["epoch_seconds"],
        samples_per_s=result["samples_per_s"], n_params=result["n_params"],
        n_train_samples=augmented.n_samples, trained_in_run=run_id,
    )
