"""`maskcls evaluate` and `maskcls champion set` against the session's servers and smoke champion
(`first_run`): one CLI invocation each. The champion set test registers a second version cheaply
(the champion's own logged model again) and puts both aliases back afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskcls.config import CHAMPION_ALIAS, REGISTERED_MODEL_NAME, Settings
from maskcls.errors import TrackingError
from maskcls.names import CHAMPION_EXPERIMENT, EVALUATION_EXPERIMENT
from tasks.tracking import SCANNER_MODEL_NAME, WRAPS_TAG
from tests.integration.conftest import run_cli
from tests.support.data import copy_subset

pytestmark = pytest.mark.integration


def test_evaluate_scores_a_version_on_labelled_folders_and_logs_an_evaluation_run(
        first_run, mlflow_client, tmp_path: Path) -> None:
    champion = mlflow_client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    data = copy_subset(tmp_path / "mine", 4, offset=300)
    (data / "with_mask" / "broken.jpg").write_bytes(b"not a jpeg")
    out_dir = tmp_path / "figures"
    uri = f"models:/{REGISTERED_MODEL_NAME}/{champion.version}"
    done = run_cli(["evaluate", str(data), "--model", uri, "--out", str(out_dir), "--log", "--json"])
    assert done.returncode == 3, done.stderr[-3000:]  # scored, one image skipped
    assert f"{data / 'with_mask' / 'broken.jpg'}\terror:" in done.stderr
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert result["counts"] == {"with_mask": 4, "without_mask": 4} and result["unreadable"] == ["with_mask/broken.jpg"]
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    assert {"confusion_matrix.png", "misclassified.png", "test_predictions.json"} <= {p.name for p in out_dir.iterdir()}

    run = mlflow_client.get_run(result["mlflow_run_id"])
    assert mlflow_client.get_experiment(run.info.experiment_id).name == EVALUATION_EXPERIMENT
    assert run.info.status == "FINISHED"
    assert run.data.tags["model_uri"] == uri and run.data.tags["model_version"] == str(champion.version)
    assert run.data.tags["model_run_id"] == champion.run_id
    assert run.data.metrics["test_accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    assert run.data.params["n_images"] == "8" and run.data.params["n_unreadable"] == "1"
    logged = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "classification_report.txt", "unreadable.json"} <= logged


@pytest.fixture
def second_version(first_run, mlflow_client) -> Iterator[tuple[str, str]]:
    """(champion version, a new version of the same logged model); both aliases restored after."""
    champion = mlflow_client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    scanner = mlflow_client.get_model_version_by_alias(SCANNER_MODEL_NAME, CHAMPION_ALIAS)
    # The source of a version of a logged model is `models:/<model id>` (MLflow 3).
    model_id = champion.model_id or champion.source.removeprefix("models:/")
    copy = mlflow_client.create_model_version(REGISTERED_MODEL_NAME, source=champion.source, run_id=champion.run_id,
                                              model_id=model_id, tags={"test": "champion-set"})
    try:
        yield str(champion.version), str(copy.version)
    finally:
        mlflow_client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, champion.version)
        mlflow_client.set_registered_model_alias(SCANNER_MODEL_NAME, CHAMPION_ALIAS, scanner.version)


def test_champion_set_moves_the_alias_tags_why_and_the_scanner_follows(second_version, mlflow_client) -> None:
    from tasks.champion import set_champion, show_champion

    before, target = second_version
    settings = Settings.from_env()
    with pytest.raises(TrackingError, match=rf"has no version 9999 .*its versions: .*\b{target}$"):
        set_champion(settings, REGISTERED_MODEL_NAME, "9999", "no such version")

    done = run_cli(["champion", "set", target, "--reason", "roll back: test"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"version {before} -> {target}" in done.stdout

    moved = mlflow_client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    assert str(moved.version) == target
    assert moved.tags["promotion"] == "manual" and moved.tags["promotion_reason"] == "roll back: test"
    assert moved.tags["promotion_previous_champion"] == before and moved.tags["promotion_by"]
    scanner = mlflow_client.get_model_version_by_alias(SCANNER_MODEL_NAME, CHAMPION_ALIAS)
    assert scanner.tags[WRAPS_TAG] == target  # the scanner follows, as after any promotion
    audit = mlflow_client.get_run(scanner.run_id)
    assert mlflow_client.get_experiment(audit.info.experiment_id).name == CHAMPION_EXPERIMENT
    assert audit.info.status == "FINISHED" and audit.data.tags["previous_champion"] == before
    assert audit.data.tags["reason"] == "roll back: test" and audit.data.tags["scanner_version"] == scanner.version

    shown = show_champion(settings, REGISTERED_MODEL_NAME)
    assert shown["version"] == target and shown["reason"] == "roll back: test"
    assert shown["champion_since"] == moved.tags["promotion_at"]
    assert shown["scanner"]["bundles_version"] == target
