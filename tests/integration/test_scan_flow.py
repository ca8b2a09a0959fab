"""The scan flow against the session's servers and its smoke champion's scanner: twice over the
same inbox (the second run scans nothing), then after a new photo arrives (only it is scanned)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from uuid import UUID

import pytest

from maskcls.names import SCAN_EXPERIMENT, SCANNER_MODELS
from tasks import prefect_api
from tasks.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from tests.support.data import SHARED

pytestmark = pytest.mark.integration

SCENES = SHARED.parent / "face-mask-scenes" / "images"


def task_names(mlflow_client, run_id: str) -> dict[str, str]:
    """{task name: state} of the Prefect flow run behind an MLflow scan run."""
    flow_run_id = mlflow_client.get_run(run_id).data.tags["prefect_flow_run_id"]
    with prefect_api.client() as pc:
        return prefect_api.task_states(pc, UUID(flow_run_id))


def test_scan_flow_scans_each_photo_once_per_scanner_version(first_run, mlflow_client, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.scan import scan_flow

    scanner = mlflow_client.get_model_version_by_alias(SCANNER_MODELS[2], "champion")
    inbox = tmp_path / "inbox"
    (inbox / "street").mkdir(parents=True)
    shutil.copy(SCENES / "maksssksksss0.jpg", inbox / "a.jpg")
    shutil.copy(SCENES / "maksssksksss100.jpg", inbox / "street" / "b.jpg")
    (inbox / "notes.txt").write_text("not a photo")

    first = scan_flow(folder=str(inbox), batch_size=1)

    assert first["scanner_version"] == str(scanner.version)
    assert first["scanned"] == ["a.jpg", "street/b.jpg"] and first["cached"] == [] and first["batches"] == 2
    assert first["summary"]["faces"] > 0 and first["summary"]["failed"] == []
    run = mlflow_client.get_run(first["mlflow_run_id"])
    exp = mlflow_client.get_experiment(run.info.experiment_id)
    assert exp.name == SCAN_EXPERIMENT and exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    metrics = run.data.metrics
    assert metrics["faces"] == first["summary"]["faces"] and metrics["images_scanned"] == 2
    assert sum(v for k, v in metrics.items() if k.startswith("faces_")) == metrics["faces"]
    assert metrics["masked_share_low"] <= metrics["masked_share"] <= metrics["masked_share_high"]
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"scan.csv", "summary.json", "masked_share_over_time.png", "images"} <= artifacts
    assert {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "images/street")} == {"images/street/b.jpg"}
    summary = json.loads(Path(mlflow_client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path)))
                         .read_text())
    assert summary["faces"] == metrics["faces"]
    assert task_names(mlflow_client, first["mlflow_run_id"])["scan-batch"] == "Completed"

    second = scan_flow(folder=str(inbox))

    assert second["scanned"] == [] and second["cached"] == ["a.jpg", "street/b.jpg"]
    assert second["nothing_new"] and second["batches"] == 0 and second["summary"]["faces"] == 0
    tasks = task_names(mlflow_client, second["mlflow_run_id"])
    assert "scan-batch" not in tasks and tasks["list-new-images"] == "Completed"
    assert mlflow_client.get_run(second["mlflow_run_id"]).data.tags["nothing_new"] == "true"

    shutil.copy(SCENES / "maksssksksss105.jpg", inbox / "c.jpg")
    # Retention of about a second: the two earlier runs are past it.
    monkeypatch.setenv("MASKCLS_SCAN_RETENTION_DAYS", "0.00001")

    third = scan_flow(folder=str(inbox))

    assert third["scanned"] == ["c.jpg"] and third["cached"] == ["a.jpg", "street/b.jpg"]
    assert third["summary"]["images"] == 1 and third["batches"] == 1
    assert {first["mlflow_run_id"], second["mlflow_run_id"]} <= set(third["deleted_runs"])
    assert third["mlflow_run_id"] not in third["deleted_runs"]
    assert mlflow_client.get_run(first["mlflow_run_id"]).info.lifecycle_stage == "deleted"
