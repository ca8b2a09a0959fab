"""Register a trained model as a new version and move `champion` only if it is better.

Both the candidate and the current champion are scored on the same test images, the
ones neither of them trained or validated on; the candidate must win by
``promotion_min_delta``. The compare-and-set runs under an fcntl lock under
MASKCLS_HOME, so concurrent runs cannot leave a worse champion, and a killed holder
releases it.
"""

from __future__ import annotations

import json
import tempfile
from logging import Logger, LoggerAdapter
from pathlib import Path
from typing import Any

import cv2
import mlflow
import numpy as np

from maskcls.config import CHAMPION_ALIAS, REGISTERED_MODEL_NAME, PipelineConfig, Settings
from maskcls.inference import Classifier, write_settings
from maskcls.store import load_array
from tasks import tracking


def _accuracy(predict, images: list[bytes], labels: list[str]) -> float:
    out = predict(images)
    return float(np.mean([p == t for p, t in zip(out, labels)])) if labels else float("nan")


def register_and_promote(model: Any, evaluation: Any, arrays: Any, config: PipelineConfig, settings: Settings,
                         run_id: str, log: Logger | LoggerAdapter) -> Any:
    from tasks.records import RegisterRecord

    client = tracking.configure(settings)
    classes = arrays.classes
    train_side, val_side, test_side = arrays.sides["train"], arrays.sides["val"], arrays.sides["test"]
    trained = [
        {"path": p, "sha256": s, "label": classes[int(y)]}
        for side in (train_side, val_side)
        for p, s, y in zip(side.paths, side.sha256, load_array(side.y))
    ]
    tracking.log_json(client, run_id, trained, "dataset/trained_on.json")

    with tempfile.TemporaryDirectory() as tmp:
        settings_file = Path(tmp) / "preprocessing.json"
        write_settings(settings_file, config.preprocess, classes)
        x_test = load_array(test_side.x)
        ok, png = cv2.imencode(".png", np.asarray(x_test[0]))
        model_uri, model_id = tracking.log_pyfunc(run_id, Path(model.model.check()), settings_file, png.tobytes())
        candidate = Classifier.load(model.model.check(), settings_file)

    tracking.ensure_registered_model(client)
    metric_tags = {k: f"{v:.6f}" for k, v in evaluation.metrics.items()}
    version = client.create_model_version(
        REGISTERED_MODEL_NAME, source=model_uri, run_id=run_id, model_id=model_id,
        tags={**metric_tags, "profile": config.profile, "dataset_fingerprint": arrays.split_fingerprint},
    )
    log.info(f"registered {REGISTERED_MODEL_NAME} version {version.version}")

    test_labels = [classes[int(y)] for y in load_array(test_side.y)]
    root = Path(arrays.root)
    with tracking.file_lock(settings.locks_dir / "promotion.lock"):
        try:
            current = tracking.champion(client)
            if current is None:
                promotion, reason = "promoted", "no champion yet"
            else:
                seen = tracking.trained_on(client, current.run_id)
                common = [(p, lab) for p, s, lab in zip(test_side.paths, test_side.sha256, test_labels)
                          if s not in seen]
                if not common:
                    raise RuntimeError("no test image is unseen by both models")
                images = [(root / p).read_bytes() for p, _ in common]
                labels = [lab for _, lab in common]
                champ_model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL_NAME}/{current.version}")
                import pandas as pd

                champ_acc = _accuracy(lambda ims: list(champ_model.predict(pd.DataFrame({"image": ims}))["label"]),
                                      images, labels)
                cand_acc = _accuracy(lambda ims: [r["label"] for r in candidate.predict_bytes(ims)],
                                     images, labels)
                delta = cand_acc - champ_acc
                detail = (f"on {len(common)} test images unseen by both: candidate {cand_acc:.4f}, "
                          f"champion v{current.version} {champ_acc:.4f}, min delta {config.promotion_min_delta}")
                if delta >= config.promotion_min_delta:
                    promotion, reason = "promoted", "better " + detail
                else:
                    promotion, reason = "not_better", "not better " + detail
            if promotion == "promoted":
                client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, version.version)
        except Exception as exc:  # noqa: BLE001 - the version stays, tagged with why it was not promoted
            promotion, reason = "error", f"{exc.__class__.__name__}: {exc}"
        client.set_model_version_tag(REGISTERED_MODEL_NAME, version.version, "promotion", promotion)
        client.set_model_version_tag(REGISTERED_MODEL_NAME, version.version, "promotion_reason", reason[:4000])
    client.set_tag(run_id, "promotion", promotion)
    client.set_tag(run_id, "model_version", version.version)
    log.info(f"version {version.version}: {promotion} ({reason})")
    return RegisterRecord(version=str(version.version), promotion=promotion, reason=reason, model_uri=model_uri)


def describe(record: Any) -> dict[str, Any]:
    return json.loads(record.model_dump_json())
