"""A smoke flow run under data.protocol=article, against the session's servers: the article's
split (duplicates kept, validation after augmentation) and nothing registered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maskcls.config import REGISTERED_MODEL_NAME
from tests.support.data import copy_subset

pytestmark = pytest.mark.integration


def test_an_article_protocol_run_trains_on_its_split_and_registers_nothing(servers, mlflow_client, tmp_path):
    from flows.train import train_flow

    # Its own images (every other with_mask name from the start: some byte-identical "copy" files), so
    # it shares no cache with another test.
    data = copy_subset(tmp_path / "article", 40, offset=1, step=2)
    versions_before = {v.version for v in mlflow_client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")}

    result = train_flow(profile="smoke", source=str(data), overrides={"data.protocol": "article"})

    assert result["model_version"] is None
    assert result["promotion"] == "skipped"
    assert "data.protocol=article" in result["promotion_reason"]
    versions_after = {v.version for v in mlflow_client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")}
    assert versions_after == versions_before
    run = mlflow_client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.protocol"] == "article"
    assert run.data.tags["promotion"] == "skipped"
    assert "model_version" not in run.data.tags
    # By file with the byte-identical copies put back: train + test are every file, 30% of them test.
    params = run.data.params
    n_files = int(params["n_images"]) + int(params["n_duplicates"])
    assert int(params["n_duplicates"]) > 0
    assert int(params["n_train"]) + int(params["n_test"]) == n_files
    assert abs(int(params["n_test"]) - 0.3 * n_files) <= 1
    # Validation is 15% (the smoke profile's data.val_fraction) of the augmented training samples.
    assert int(params["n_val"]) == 0
    n_samples = 32 * int(params["n_train"])
    assert int(params["n_val_samples"]) + int(params["n_train_samples"]) == n_samples
    assert abs(int(params["n_val_samples"]) - 0.15 * n_samples) <= 1
    assert len(mlflow_client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    split = json.loads(Path(mlflow_client.download_artifacts(run.info.run_id, "split.json", str(tmp_path)))
                       .read_text())
    assert split["counts"]["val"] == {"with_mask": 0, "without_mask": 0}
