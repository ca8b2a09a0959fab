"""Register a trained model as a new version and move `champion` only if it is better.

Whenever the classifier's champion is not the one the scanning model's champion bundles (it
just moved, or an earlier scanner registration failed), a new scanner version is built
from the champion and becomes the scanner's champion, under the same lock.

Both the candidate and the current champion are scored on the same test images, the
ones neither of them trained or validated on; ``maskcls.promotion.decide`` says whether the
candidate wins. The scoring and the compare-and-set run under the `promotion` lock under
MASKCLS_HOME (``tasks.locking``), so concurrent runs cannot leave a worse champion, and a
killed holder releases it.
"""

from __future__ import annotations

import tempfile
from logging import Logger, LoggerAdapter
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from maskcls import promotion
from maskcls.config import PipelineConfig, Settings
from maskcls.inference import Classifier, write_settings
from maskcls.names import classifier_model_name
from maskcls.store import load_array
from tasks import tracking
from tasks.locking import exclusive
from tasks.records import (
    ArraysRecord,
    EvalRecord,
    ModelRecord,
    RegisterRecord,
    SideArrays,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

LOCK_KEY = "promotion"


def _compare(client: MlflowClient, candidate: Classifier, test_side: SideArrays, test_labels: list[str], root: Path,
             min_delta: float, name: str) -> promotion.Decision:
    """Score the candidate against the current champion of ``name`` (the registered model of the
    candidate's class set) on the test images unseen by both, and decide."""
    current = tracking.champion(client, name)
    if current is None:
        return promotion.decide(None, min_delta)
    seen = tracking.trained_on(client, current.run_id)
    common = promotion.unseen_test_images(test_side.paths, test_side.sha256, test_labels, seen)
    labels = [label for _, label in common]
    if common:
        images = [(root / p).read_bytes() for p, _ in common]
        candidate_accuracy = promotion.accuracy([r["label"] for r in candidate.predict_bytes(images)], labels)
        champion_accuracy = promotion.accuracy(tracking.version_labels(str(current.version), images, name), labels)
    else:  # decide() says that nothing could be compared
        candidate_accuracy = champion_accuracy = float("nan")
    scores = promotion.Scores(candidate=candidate_accuracy, champion=champion_accuracy, n_images=len(common),
                              champion_version=str(current.version))
    return promotion.decide(scores, min_delta)


def _sync_scanner(client: MlflowClient, run_id: str, classes: list[str], log: Logger | LoggerAdapter) -> dict[str, str]:
    """Register a scanner for the classifier champion unless its champion already bundles it;
    the run's tags saying what happened (a failure is logged, and healed by the next register)."""
    classifier = classifier_model_name(classes)
    current = tracking.champion(client, classifier)
    name = tracking.scanner_model_name(classes)
    try:
        if current is None or tracking.scanner_wraps(client, name) == str(current.version):
            return {}
        version = tracking.register_scanner(client, run_id, str(current.version), classes, classifier)
    except Exception as exc:  # noqa: BLE001 - the classifier's promotion stands; the scanner lags
        log.error(f"could not register {name} for {classifier} version {current.version}: "
                  f"{exc.__class__.__name__}: {exc}")
        return {"scanner_error": f"{exc.__class__.__name__}: {exc}"[:4000]}
    log.info(f"registered {name} version {version} (bundles {classifier} version {current.version}) "
             "as its champion")
    return {"scanner_version": version}


def register_and_promote(model: ModelRecord, evaluation: EvalRecord, arrays: ArraysRecord, config: PipelineConfig, settings: Settings,
                         run_id: str, log: Logger | LoggerAdapter, licences: list[str] | None = None) -> RegisterRecord:
    """Log the pyfunc into ``run_id``, register it as a new version of the registered model of its
    class set, and promote it if the rule says so. ``licences`` (the data's) become the version's
    `licence` tag and are stated in its description (model card)."""
    client = tracking.configure(settings)
    skipped = promotion.registration_skipped(config.data.protocol, config.data.holdout_family)
    if skipped is not None:
        tracking.set_tags(client, run_id, {"promotion": promotion.SKIPPED, "promotion_reason": skipped[:4000]})
        log.info(f"not registered: {skipped}")
        return RegisterRecord(version=None, promotion=promotion.SKIPPED, reason=skipped, model_uri=None)
    classes = arrays.classes
    name = classifier_model_name(classes)
    licences = sorted(set(licences or []))
    train_side, val_side, test_side = arrays.sides["train"], arrays.sides["val"], arrays.sides["test"]
    trained = [
        {"path": p, "sha256": s, "label": classes[int(y)]}
        for side in (train_side, val_side)
        for p, s, y in zip(side.paths, side.sha256, load_array(side.y))
    ]
    tracking.log_json(client, run_id, trained, "dataset/trained_on.json")

    with tempfile.TemporaryDirectory() as tmp:
        settings_file = Path(tmp) / "preprocessing.json"
        write_settings(settings_file, config.preprocess, classes, temperature=evaluation.temperature,
                       inference=config.inference)
        x_test = load_array(test_side.x)
        ok, png = cv2.imencode(".png", np.asarray(x_test[0]))
        model_uri, model_id = tracking.log_pyfunc(run_id, Path(model.model.check()), settings_file, png.tobytes())
        candidate = Classifier.load(model.model.check(), settings_file)

    tracking.ensure_registered_model(client, name, classes, licences)
    metric_tags = {k: f"{v:.6f}" for k, v in evaluation.metrics.items()}
    licence_tags = {"licence": "; ".join(licences)} if licences else {}
    version = tracking.create_version(
        client, model_uri, run_id, model_id,
        tags={**metric_tags, **licence_tags, "profile": config.profile,
              "dataset_fingerprint": arrays.split_fingerprint},
        name=name, description=tracking.model_card(classes, licences),
    )
    log.info(f"registered {name} version {version}")

    test_labels = [classes[int(y)] for y in load_array(test_side.y)]
    with exclusive(settings.locks_dir, LOCK_KEY):
        try:
            decision = _compare(client, candidate, test_side, test_labels, Path(arrays.root),
                                config.promotion_min_delta, name)
            if decision.promote:
                tracking.set_champion(client, version, name)
        except Exception as exc:  # noqa: BLE001 - the version stays, tagged with why it was not promoted
            decision = promotion.failed(f"{exc.__class__.__name__}: {exc}")
        tracking.tag_version(client, version, {"promotion": decision.outcome,
                                               "promotion_reason": decision.reason[:4000]}, name)
        scanner_tags = _sync_scanner(client, run_id, classes, log)
    tracking.set_tags(client, run_id, {"promotion": decision.outcome, "model_version": version,
                                       "registered_model": name, **licence_tags, **scanner_tags})
    log.info(f"version {version}: {decision.outcome} ({decision.reason})")
    return RegisterRecord(version=version, promotion=decision.outcome, reason=decision.reason, model_uri=model_uri)
