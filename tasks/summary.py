"""The run's `training-summary` markdown artifact in Prefect, linking its MLflow run."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from maskcls import data as mdata
from maskcls.config import PipelineConfig, Settings
from maskcls.stages import STAGE_NAMES
from tasks import tracking
from tasks.records import AugmentedRecord, EvalRecord, ModelRecord, RegisterRecord


@task(name="summary", cache_policy=NO_CACHE)
def summary(settings: Settings, run_id: str, config: PipelineConfig, manifest: mdata.Manifest,
            split_: mdata.Split, augmented: AugmentedRecord, model: ModelRecord, evaluation: EvalRecord,
            registered: RegisterRecord, stage_states: dict[str, str], all_cached: bool) -> None:
    """Outcome, test metrics, data counts and every stage's state, as the `training-summary` artifact."""
    client = tracking.configure(settings)
    link = tracking.run_url(settings, tracking.experiment_id(client, settings), run_id)
    m = evaluation.metrics
    if all_cached:
        outcome = (f"Every stage came from the cache: nothing new was trained or registered. "
                   f"The model was trained in MLflow run `{model.trained_in_run}`.")
    elif registered.version is None:
        outcome = f"Nothing registered: **{registered.promotion}** ({registered.reason})."
    else:
        outcome = (f"Registered `face-mask-classifier` version **{registered.version}**: "
                   f"**{registered.promotion}** ({registered.reason}).")
    counts = split_.counts()
    rows = "\n".join(f"| {s} | {stage_states[s]} |" for s in STAGE_NAMES)
    link_md = f"[{run_id}]({link})" if link.startswith("http") else link
    markdown = f"""# maskcls training run ({config.profile})

{outcome}

MLflow run: {link_md}

| metric | value |
|---|---|
| test_accuracy | {m.get('test_accuracy', float('nan')):.4f} |
| test_precision | {m.get('test_precision', float('nan')):.4f} |
| test_recall | {m.get('test_recall', float('nan')):.4f} |
| test_f1 | {m.get('test_f1', float('nan')):.4f} |
| test_roc_auc | {m.get('test_roc_auc', float('nan')):.4f} |
| test_ece (temperature {m.get('temperature', 1.0):.3g}) | {m.get('test_ece', float('nan')):.4f} |

Data: {len(manifest.items)} images kept ({len(manifest.skipped)} skipped, {len(manifest.duplicates)} duplicates),
fingerprint `{manifest.fingerprint[:16]}`; train {sum(counts['train'].values())} images -> {augmented.n_samples} samples,
validation {sum(counts['val'].values()) or augmented.n_val_samples}{' samples' if augmented.val_x else ''}, test {sum(counts['test'].values())}.

| stage | state |
|---|---|
{rows}
"""
    create_markdown_artifact(markdown=markdown, key="training-summary", description="maskcls training run summary")
