"""Stage `evaluate`: score the held-out test side: metrics, confusion matrix, report and figures."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task

from maskcls.config import InferenceConfig, Settings
from maskcls.store import Store, load_array
from tasks.caching import StageCache
from tasks.records import ArraysRecord, EvalRecord, ModelRecord


@task(name="evaluate", cache_policy=StageCache(stage="evaluate", inputs=("model", "arrays", "inference")))
def evaluate(model: ModelRecord, arrays: ArraysRecord, inference: InferenceConfig, settings: Settings) -> EvalRecord:
    """Score the held-out test side: metrics, confusion matrix, report and figures."""
    # TensorFlow, matplotlib, scikit-learn: loaded only when evaluating, not on a cached run.
    from maskcls.evaluate import write_evaluation
    from maskcls.model import predict_proba
    from maskcls.train import load_model

    test = arrays.sides["test"]
    x = load_array(test.x, mmap=False)
    y = load_array(test.y)
    keras_model = load_model(model.model.check())
    proba = predict_proba(keras_model, x.astype(np.float32) / 255.0, tta_flip=inference.tta_flip)
    store = Store(settings.store_dir)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = write_evaluation(y, proba, arrays.classes, x, test.paths, model.history, Path(tmp))
        files = {p.name: store.put_file("evaluation", p) for p in sorted(Path(tmp).iterdir())}
    get_run_logger().info("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return EvalRecord(metrics={f"test_{k}": v for k, v in metrics.items()}, files=files)
