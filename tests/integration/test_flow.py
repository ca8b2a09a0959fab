"""The real flow (smoke profile) on a small real subset, against the session's Prefect and
MLflow servers: run, params, artifacts, registry, alias, promotion tags, cache states."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from maskcls.config import CHAMPION_ALIAS, EXPERIMENT_NAME, REGISTERED_MODEL_NAME, load_config
from maskcls.stages import STAGE_NAMES as STAGES

from .conftest import SESSION_HOME

pytestmark = pytest.mark.integration


def task_states(flow_run_id: str) -> dict[str, str]:
    """Task name -> state name of one flow run, read back from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter

    async def read() -> dict[str, str]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(),
            )
            return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}

    # In a thread of its own: a test before this one (Playwright's sync API) may have left
    # an event loop running in the main thread, where asyncio.run() refuses to start.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


def prefect_run_id(mlflow_client, run_id: str) -> str:
    return mlflow_client.get_run(run_id).data.tags["prefect_flow_run_id"]


def test_first_run_tracks_everything(first_run, mlflow_client):
    run = mlflow_client.get_run(first_run["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    exp = mlflow_client.get_experiment(run.info.experiment_id)
    assert exp.name == EXPERIMENT_NAME
    # every config setting is a param, plus the data fingerprint and counts
    cfg = load_config("smoke")
    for key, value in cfg.flat().items():
        assert key in run.data.params, key
    assert run.data.params["train.epochs"] == str(cfg.train.epochs)
    assert run.data.params["dataset_fingerprint"] == first_run["dataset_fingerprint"]
    assert int(run.data.params["n_train_samples"]) == 32 * int(run.data.params["n_train"])
    assert run.data.tags["git_commit"]
    assert len(run.data.tags["code_version"]) == 16
    assert run.data.tags["cache_hit"] == "false"
    for metric in ("test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc",
                   "test_ece", "test_ece_uncalibrated"):
        assert 0.0 <= run.data.metrics[metric] <= 1.0, metric
    # calibrated on the validation side; the temperature is the run's and in its evaluation record
    assert run.data.metrics["temperature"] > 0
    assert run.data.metrics["temperature"] == pytest.approx(first_run["metrics"]["temperature"])
    # per-epoch curves, training and validation
    history = mlflow_client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == list(range(cfg.train.epochs))
    assert len(mlflow_client.get_metric_history(run.info.run_id, "loss")) == cfg.train.epochs
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    for name in ("confusion_matrix.png", "confusion_matrix.json", "training_curves.png",
                 "classification_report.txt", "misclassified.png", "reliability.png", "validation_report.json",
                 "augmentation_preview.png", "dataset"):
        assert name in artifacts, name
    # the dataset is the run's MLflow dataset input
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == first_run["dataset_fingerprint"][:36]


def test_validation_report_lists_duplicates(first_run, mlflow_client, tmp_path):
    path = mlflow_client.download_artifacts(first_run["mlflow_run_id"], "validation_report.json", str(tmp_path))
    report = json.loads(Path(path).read_text())
    assert set(report["counts"]) == {"with_mask", "without_mask"}
    # the first names of with_mask/ are "0_0_0 copy N.jpg": real byte-identical copies exist among them
    assert report["kept"] == sum(report["counts"].values())
    assert report["kept"] + len(report["duplicates"]) + len(report["skipped"]) == 80


def test_confusion_matrix_matches_metrics(first_run, mlflow_client, tmp_path):
    path = mlflow_client.download_artifacts(first_run["mlflow_run_id"], "confusion_matrix.json", str(tmp_path))
    cm = json.loads(Path(path).read_text())
    matrix = cm["matrix"]
    total = sum(map(sum, matrix))
    correct = sum(matrix[i][i] for i in range(len(matrix)))
    assert cm["labels"] == ["with_mask", "without_mask"]
    assert total == sum(first_run["counts"]["test"].values())
    assert correct / total == pytest.approx(first_run["metrics"]["test_accuracy"])


def test_first_run_registers_a_new_version_under_the_promotion_rule(first_run, champion_before_first_run,
                                                                   mlflow_client):
    # Other tests may have registered versions before this one: it is the newest, and it is
    # champion exactly when it was promoted.
    mv = mlflow_client.get_model_version(REGISTERED_MODEL_NAME, first_run["model_version"])
    assert mv.run_id == first_run["mlflow_run_id"]
    assert int(mv.version) > (champion_before_first_run or 0)
    assert mv.tags["promotion"] == first_run["promotion"]
    assert float(mv.tags["test_accuracy"]) == pytest.approx(first_run["metrics"]["test_accuracy"], abs=1e-6)
    if champion_before_first_run is None:
        assert first_run["promotion"] == "promoted"
        assert "no champion" in mv.tags["promotion_reason"]
    else:
        assert first_run["promotion"] in {"promoted", "not_better"}
        assert "no champion" not in mv.tags["promotion_reason"]
    # Later tests in the session may promote better versions, never an unpromoted one.
    champion = mlflow_client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    assert champion.tags["promotion"] == "promoted"
    if first_run["promotion"] == "promoted":
        assert int(champion.version) >= int(mv.version)
    else:
        assert int(champion.version) != int(mv.version)


def test_prefect_shows_every_stage_completed(first_run, mlflow_client):
    states = task_states(prefect_run_id(mlflow_client, first_run["mlflow_run_id"]))
    for stage in STAGES:
        assert states[stage] == "Completed", (stage, states)


def test_rerun_is_cached_and_registers_nothing(first_run, subset, mlflow_client):
    from flows.train import train_flow

    before = mlflow_client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")
    again = train_flow(profile="smoke", source=str(subset))
    after = mlflow_client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")
    assert again["cache_hit"] is True
    assert len(after) == len(before)
    states = task_states(prefect_run_id(mlflow_client, again["mlflow_run_id"]))
    for stage in STAGES:
        assert states[stage] == "Cached", (stage, states)
    # the logging tasks run every time, so the cached run still records everything
    for name in ("log-data", "log-results"):
        assert states[name] == "Completed"
    run = mlflow_client.get_run(again["mlflow_run_id"])
    assert run.data.tags["cache_hit"] == "true"
    assert run.data.tags["source_run_id"] == first_run["mlflow_run_id"]
    assert run.data.metrics["test_accuracy"] == pytest.approx(first_run["metrics"]["test_accuracy"])
    assert run.data.params["dataset_fingerprint"] == first_run["dataset_fingerprint"]
    assert "confusion_matrix.png" in {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}


def test_changing_training_settings_reruns_only_training(first_run, subset, mlflow_client):
    from flows.train import train_flow

    result = train_flow(profile="smoke", source=str(subset), epochs=1)
    states = result["stages"]
    assert [states[s] for s in STAGES[:5]] == ["Cached"] * 5
    assert [states[s] for s in STAGES[5:]] == ["Completed"] * 3
    mv = mlflow_client.get_model_version(REGISTERED_MODEL_NAME, result["model_version"])
    assert mv.tags["promotion"] in {"promoted", "not_better"}
    assert mv.tags["promotion_reason"]
    champion = mlflow_client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    if mv.tags["promotion"] == "not_better":
        assert champion.version != mv.version
    else:
        assert champion.version == mv.version


def test_refresh_recomputes_everything(first_run, subset):
    from flows.train import train_flow

    result = train_flow(profile="smoke", source=str(subset), refresh=True)
    assert all(result["stages"][s] == "Completed" for s in STAGES), result["stages"]


def test_altered_or_missing_cache_file_is_recomputed(first_run, subset, servers):
    from flows.train import train_flow

    store = SESSION_HOME / "store"
    # Alter every augmented array in the store (other tests' too: they must recompute as well).
    for augmented in (store / "augmented").glob("*.npy"):
        data = bytearray(augmented.read_bytes())
        data[-1] ^= 0xFF
        augmented.write_bytes(bytes(data))
    result = train_flow(profile="smoke", source=str(subset))
    assert result["stages"]["augment"] == "Completed"
    assert result["stages"]["preprocess"] == "Cached"
    # a deleted model file: training reruns
    for model in (store / "models").glob("*.keras"):
        model.unlink()
    result = train_flow(profile="smoke", source=str(subset))
    assert result["stages"]["augment"] == "Cached"
    assert result["stages"]["train"] == "Completed"


def test_changed_image_reruns_everything(first_run, subset, tmp_path):
    import shutil

    from flows.train import train_flow

    changed = tmp_path / "data"
    shutil.copytree(subset, changed)
    before = train_flow(profile="smoke", source=str(changed))
    assert before["dataset_fingerprint"] == first_run["dataset_fingerprint"]
    victim = sorted((changed / "without_mask").iterdir())[-1]
    victim.write_bytes(victim.read_bytes() + b"\0")  # same picture, different bytes
    result = train_flow(profile="smoke", source=str(changed))
    assert all(result["stages"][s] == "Completed" for s in STAGES), result["stages"]
    assert result["dataset_fingerprint"] != first_run["dataset_fingerprint"]
