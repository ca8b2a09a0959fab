"""The training flow: download -> validate -> split -> preprocess -> augment -> train ->
evaluate -> register, every stage a cached task, one MLflow run per flow run."""

from __future__ import annotations

from typing import Any

from prefect import flow

from maskcls.config import Settings, build_config
from maskcls.multisource import training_source
from maskcls.names import FLOW_NAME, classifier_model_name
from tasks import tracking
from tasks.augment import augment
from tasks.caching import sources_identity
from tasks.download import download
from tasks.evaluate import evaluate
from tasks.log_run import log_data, log_results
from tasks.preprocess import preprocess
from tasks.register import register
from tasks.runner import StageRunner, open_run
from tasks.split import split
from tasks.summary import summary
from tasks.train import train
from tasks.validate import validate


@flow(name=FLOW_NAME, log_prints=True)
def train_flow(
    profile: str = "default",
    source: list[str] | str | None = None,
    epochs: int | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    max_images: int | None = None,
    refresh: bool = False,
    overrides: dict[str, str] | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Train the face-mask classifier and register it in MLflow.

    Args:
        profile: Named recipe: `default` (best), `seed` (the 2020 article), `three-class` (adds
            mask_weared_incorrect), `smoke` (seconds, for tests).
        source: Dataset parts: folders, zips, http(s) URLs of zips, `voc:FOLDER[?part=tune]` (PASCAL VOC
            boxes cut into faces); a comma-separated string works too. Empty: the profile's own list,
            else MASKCLS_DATA_SOURCE, else the pinned default.
        epochs: Training epochs (overrides the profile).
        learning_rate: Adam learning rate (overrides the profile).
        batch_size: Training batch size (overrides the profile).
        max_images: Train on a stable, class-balanced subset of at most this many images.
        refresh: Recompute every stage even when a cached result exists.
        overrides: Any other setting as `section.field` -> value, e.g. {"train.dense_units": "128"}.
        parent_run_id: MLflow run to nest this run under (set by the sweep flow).
    """
    settings = Settings.from_env()
    config = build_config(profile, epochs, learning_rate, batch_size, max_images, overrides)
    parts = training_source(source, config.sources, settings.shared_datasets, settings.data_source)
    source = ",".join(parts)
    client, run_id = open_run(settings, config, source, parent_run_id)
    stage = StageRunner(settings, refresh)
    ok = False
    try:
        raw = stage(download, parts, sources_identity(parts), settings, config.data.crop_margin)
        manifest = stage(validate, raw, config.data, settings)
        sides = stage(split, manifest, config.data)
        arrays = stage(preprocess, sides, config.preprocess, settings)
        augmented = stage(augment, arrays, config.augment, settings)
        log_data(run_id, settings, source, raw, manifest, sides, augmented)
        model = stage(train, arrays, augmented, config.train, settings, run_id)
        evaluation = stage(evaluate, model, arrays, config.inference, settings)
        log_results(run_id, settings, model, evaluation)
        registered = stage(register, model, evaluation, arrays, config, settings, run_id, settings.tracking_uri,
                           raw.licences)
        cached, states = stage.all_cached(), stage.state_names()
        tracking.tag_outcome(client, run_id, cached, model.trained_in_run)
        summary(settings, run_id, config, manifest, sides, augmented, model, evaluation, registered, states, cached)
        ok = True
        return {
            "mlflow_run_id": run_id,
            "source_run_id": model.trained_in_run,
            "cache_hit": cached,
            "stages": states,
            "metrics": evaluation.metrics,
            "model_version": None if cached else registered.version,
            "promotion": "cached" if cached else registered.promotion,
            "promotion_reason": registered.reason,
            "dataset_fingerprint": manifest.fingerprint,
            "counts": sides.counts(),
            "registered_model": classifier_model_name(sides.classes),
            "n_train_samples": augmented.n_samples,
        }
    finally:
        tracking.end_run(client, run_id, ok)


if __name__ == "__main__":
    train_flow()
