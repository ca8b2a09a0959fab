"""The training flow: download -> validate -> split -> preprocess -> augment -> train ->
evaluate -> register, every stage a cached task, one MLflow run per flow run."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from maskcls.config import PipelineConfig, Settings, load_config, parse_overrides
from tasks import recovery, stages, tracking
from tasks.caching import code_version, source_identity
from tasks.locking import FcntlLockManager

CACHED_STAGES = ("download", "validate", "split", "preprocess", "augment", "train", "evaluate", "register")


def build_config(profile: str, epochs: int | None, learning_rate: float | None, batch_size: int | None,
                 max_images: int | None, overrides: dict[str, Any] | None) -> PipelineConfig:
    merged: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        merged.update(parse_overrides([f"{key}={value}"]) if isinstance(value, str) else {key: value})
    for key, value in (("train.epochs", epochs), ("train.learning_rate", learning_rate),
                       ("train.batch_size", batch_size), ("data.max_images", max_images)):
        if value is not None:
            merged[key] = value
    return load_config(profile, merged)


@flow(name="train-face-mask", log_prints=True)
def train_flow(
    profile: str = "default",
    source: str | None = None,
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
        profile: Named recipe: `default` (best), `seed` (the 2020 article), `smoke` (seconds, for tests).
        source: Dataset folder, zip or http(s) URL of a zip; empty uses MASKCLS_DATA_SOURCE or the pinned default.
        epochs: Training epochs (overrides the profile).
        learning_rate: Adam learning rate (overrides the profile).
        batch_size: Training batch size (overrides the profile).
        max_images: Train on a stable, class-balanced subset of at most this many images.
        refresh: Recompute every stage even when a cached result exists.
        overrides: Any other setting as `section.field` -> value, e.g. {"train.dense_units": "128"}.
        parent_run_id: MLflow run to nest this run under (set by the sweep flow).
    """
    logger = get_run_logger()
    settings = Settings.from_env()
    config = build_config(profile, epochs, learning_rate, batch_size, max_images, overrides)
    source = source or settings.data_source
    client = tracking.configure(settings)  # probes a tracking server before any work
    recovery.recover(client, logger)  # runs left Running by a killed process -> FAILED / Crashed

    storage = settings.results_dir  # a Path: Prefect makes a local block of it, no server-side save
    settings.results_dir.mkdir(parents=True, exist_ok=True)

    # Same cache key -> computed once: a stage holds an fcntl lock on its key while it runs
    # (released by the OS if the process dies); a concurrent run waits, then reads the result.
    locks = FcntlLockManager(settings.locks_dir)

    def stage(t):
        return t.with_options(result_storage=storage, persist_result=True, refresh_cache=refresh or None,
                              cache_policy=t.cache_policy.configure(lock_manager=locks,
                                                                    isolation_level="SERIALIZABLE"))

    ctx = get_run_context()
    prefect_run = ctx.flow_run
    run_id = tracking.start_run(client, settings, config, {
        "run_name": prefect_run.name if prefect_run else None,
        "prefect_flow_run_id": str(prefect_run.id) if prefect_run else "",
        "source": source,
        # One hash over every module a stage's cache key covers: what code made this model.
        "code_version": code_version(*stages.STAGE_MODULES["register"]),
        **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {}),
    })
    logger.info(f"MLflow run {run_id} in {settings.tracking_uri}; profile {config.profile}")
    states: dict[str, Any] = {}

    def run(name: str, t, *args, **kwargs):
        state = stage(t)(*args, return_state=True, **kwargs)
        states[name] = state
        return state.result()

    ok = False
    try:
        raw = run("download", stages.download, source, source_identity(source), settings)
        manifest = run("validate", stages.validate, raw, config.data)
        split = run("split", stages.split, manifest, config.data)
        arrays = run("preprocess", stages.preprocess, split, config.preprocess, settings)
        augmented = run("augment", stages.augment, arrays, config.augment, settings)
        stages.log_data(run_id, settings, source, raw, manifest, split, augmented)
        model = run("train", stages.train, arrays, augmented, config.train, settings, run_id,
                    settings.tracking_uri)
        evaluation = run("evaluate", stages.evaluate, model, arrays, settings)
        all_cached = all(states[s].is_completed() and states[s].name == "Cached" for s in states)
        stages.log_results(run_id, settings, model, evaluation, all_cached)
        registered = run("register", stages.register, model, evaluation, arrays, config, settings, run_id,
                         settings.tracking_uri)
        all_cached = all(states[s].name == "Cached" for s in CACHED_STAGES)
        stage_states = {s: states[s].name for s in CACHED_STAGES}
        client.set_tag(run_id, "cache_hit", str(all_cached).lower())
        client.set_tag(run_id, "source_run_id", model.trained_in_run)
        if all_cached:
            client.set_tag(run_id, "promotion", "cached")
        summary = _summary(settings, client, run_id, config, manifest, split, augmented, model, evaluation,
                           registered, stage_states, all_cached)
        create_markdown_artifact(markdown=summary, key="training-summary",
                                 description="maskcls training run summary")
        ok = True
        return {
            "mlflow_run_id": run_id,
            "source_run_id": model.trained_in_run,
            "cache_hit": all_cached,
            "stages": stage_states,
            "metrics": evaluation.metrics,
            "model_version": None if all_cached else registered.version,
            "promotion": "cached" if all_cached else registered.promotion,
            "promotion_reason": registered.reason,
            "dataset_fingerprint": manifest.fingerprint,
            "counts": split.counts(),
            "n_train_samples": augmented.n_samples,
        }
    finally:
        tracking.end_run(client, run_id, ok)


def _summary(settings: Settings, client, run_id: str, config: PipelineConfig, manifest, split, augmented, model,
             evaluation, registered, stage_states: dict[str, str], all_cached: bool) -> str:
    exp_id = tracking.experiment_id(client, settings)
    link = tracking.run_url(settings, exp_id, run_id)
    m = evaluation.metrics
    if all_cached:
        outcome = (f"Every stage came from the cache: nothing new was trained or registered. "
                   f"The model was trained in MLflow run `{model.trained_in_run}`.")
    else:
        outcome = (f"Registered `face-mask-classifier` version **{registered.version}**: "
                   f"**{registered.promotion}** ({registered.reason}).")
    counts = split.counts()
    rows = "\n".join(f"| {s} | {stage_states[s]} |" for s in CACHED_STAGES)
    link_md = f"[{run_id}]({link})" if link.startswith("http") else link
    return f"""# maskcls training run ({config.profile})

{outcome}

MLflow run: {link_md}

| metric | value |
|---|---|
| test_accuracy | {m.get('test_accuracy', float('nan')):.4f} |
| test_precision | {m.get('test_precision', float('nan')):.4f} |
| test_recall | {m.get('test_recall', float('nan')):.4f} |
| test_f1 | {m.get('test_f1', float('nan')):.4f} |
| test_roc_auc | {m.get('test_roc_auc', float('nan')):.4f} |

Data: {len(manifest.items)} images kept ({len(manifest.skipped)} skipped, {len(manifest.duplicates)} duplicates),
fingerprint `{manifest.fingerprint[:16]}`; train {sum(counts['train'].values())} images -> {augmented.n_samples} samples,
validation {sum(counts['val'].values())}, test {sum(counts['test'].values())}.

| stage | state |
|---|---|
{rows}
"""


if __name__ == "__main__":
    train_flow()
