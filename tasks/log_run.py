"""What every training run logs to its MLflow run, cached stages or not (these tasks never cache)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from maskcls import data as mdata
from maskcls.config import Settings
from maskcls.source import SourceData
from tasks import tracking
from tasks.records import AugmentedRecord, EvalRecord, ModelRecord


@task(name="log-data", cache_policy=NO_CACHE)
def log_data(run_id: str, settings: Settings, source: str, raw: SourceData, manifest: mdata.Manifest,
             split_: mdata.Split, augmented: AugmentedRecord) -> None:
    """Fingerprints, counts, the validation report and the dataset input: on every run."""
    client = tracking.configure(settings)
    counts = split_.counts()
    tracking.set_tags(client, run_id, {"dataset_fingerprint": manifest.fingerprint})
    tracking.log_params(client, run_id, {
        "dataset_fingerprint": manifest.fingerprint,
        "source": source,
        "source_kind": raw.kind,
        "classes": ",".join(manifest.classes),
        "n_images": len(manifest.items),
        "n_skipped": len(manifest.skipped),
        "n_duplicates": len(manifest.duplicates),
        "n_clusters": split_.n_clusters,
        **{f"n_{side}": sum(c.values()) for side, c in counts.items()},
        "n_train_samples": augmented.n_samples,
        "n_val_samples": augmented.n_val_samples,
        "n_left_out": len(split_.left_out),
    })
    tracking.log_json(client, run_id, manifest.report(), "validation_report.json")
    tracking.log_json(client, run_id, {"counts": counts, "n_clusters": split_.n_clusters,
                                       "fingerprint": split_.fingerprint, "left_out": split_.left_out},
                      "split.json")
    tracking.log_dataset(client, run_id, [i.model_dump(include={"path", "label", "sha256"}) for i in manifest.items],
                         source=source, digest=manifest.fingerprint)
    if augmented.preview is not None:
        tracking.log_file(client, run_id, Path(augmented.preview.check()), "augmentation_preview.png")


@task(name="log-results", cache_policy=NO_CACHE)
def log_results(run_id: str, settings: Settings, model: ModelRecord, evaluation: EvalRecord) -> None:
    """Metrics and evaluation files into this run, whether or not they were computed in it."""
    client = tracking.configure(settings)
    if model.trained_in_run != run_id:
        tracking.log_history(client, run_id, model.history)
    val_losses = [v for v in model.history.get("val_loss", []) if v == v]
    tracking.log_metrics(client, run_id, {
        **evaluation.metrics, "train_samples_per_s": model.samples_per_s,
        # What a sweep ranks by (maskcls.sweep.BEST_VAL_LOSS): the best epoch's, not the last one's.
        **({"best_val_loss": min(val_losses)} if val_losses else {}),
    })
    tracking.log_params(client, run_id, {"n_params": model.n_params})
    for name, ref in evaluation.files.items():
        tracking.log_file(client, run_id, Path(ref.check()), name)
    tracking.log_json(client, run_id, {"history": model.history, "epoch_seconds": model.epoch_seconds},
                      "history.json")
