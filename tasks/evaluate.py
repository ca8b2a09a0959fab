"""Stage `evaluate`: calibrate on the validation side, then score the held-out test side:
metrics, confusion matrix, reliability diagram, report and figures."""

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
    """Fit the temperature on the validation side; score the test side on calibrated probabilities."""
    # TensorFlow, matplotlib, scikit-learn, scipy: loaded only when evaluating, not on a cached run.
    from maskcls.calibration import apply_temperature, expected_calibration_error, fit_temperature
    from maskcls.evaluate import write_evaluation
    from maskcls.model import predict_proba
    from maskcls.train import load_model

    log = get_run_logger()
    keras_model = load_model(model.model.check())
    val = arrays.sides["val"]
    y_val = load_array(val.y)
    if len(y_val):
        val_proba = predict_proba(keras_model, load_array(val.x, mmap=False).astype(np.float32) / 255.0,
                                  tta_flip=inference.tta_flip)
        temperature = fit_temperature(y_val, val_proba)
        log.info(f"calibration: temperature {temperature:.4f} fitted on {len(y_val)} validation images "
                 f"(validation ECE {expected_calibration_error(y_val, val_proba):.4f} -> "
                 f"{expected_calibration_error(y_val, apply_temperature(val_proba, temperature)):.4f})")
    else:
        temperature = 1.0
        log.warning("calibration: the validation side is empty, so the temperature is 1.0 "
                    "(probabilities are the model's own, uncalibrated)")

    test = arrays.sides["test"]
    x = load_array(test.x, mmap=False)
    y = load_array(test.y)
    raw = predict_proba(keras_model, x.astype(np.float32) / 255.0, tta_flip=inference.tta_flip)
    proba = apply_temperature(raw, temperature)
    store = Store(settings.store_dir)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = write_evaluation(y, proba, arrays.classes, x, test.paths, model.history, Path(tmp),
                                   uncalibrated=raw, temperature=temperature)
        files = {p.name: store.put_file("evaluation", p) for p in sorted(Path(tmp).iterdir())}
    metrics["ece_uncalibrated"] = expected_calibration_error(y, raw)
    log.info("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return EvalRecord(metrics={**{f"test_{k}": v for k, v in metrics.items()}, "temperature": temperature},
                      files=files, temperature=temperature)
