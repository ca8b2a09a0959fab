"""Part 1: bad input file by file. A folder of real photos plus every kind of broken or odd
file trains through the real `maskcls train`; each bad file is listed in the MLflow
run's validation_report.json with its reason, and the odd-but-valid ones are kept."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.faults import crafting
from tests.support.data import PAST_COPIES, copy_subset, write_files
from tests.support.servers import Servers

from .conftest import Cli


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("crafted") / "photos"
    copy_subset(root, 20, offset=PAST_COPIES)
    files = crafting.broken_files()
    write_files(root, {rel: data for rel, (data, _, _) in files.items()})
    return root, files


@pytest.fixture(scope="module")
def trained(crafted, servers: Servers, tmp_path_factory) -> dict:
    root, _ = crafted
    home = tmp_path_factory.mktemp("home-bad-files")
    cli = Cli(home / "logs")
    try:
        run = cli.run(["train", "--profile", "smoke", "--source", str(root), "--json"], servers.env(home), 420)
    finally:
        cli.close()
    assert run.proc.returncode == 0, run.log()
    return run.result()


def _report(mlflow_client, run_id: str, tmp_path: Path) -> dict:
    path = mlflow_client.download_artifacts(run_id, "validation_report.json", str(tmp_path))
    return json.loads(Path(path).read_text())


def test_folder_with_broken_files_trains_and_registers(trained, mlflow_client):
    run = mlflow_client.get_run(trained["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert trained["promotion"] in {"promoted", "not_better"}
    assert trained["model_version"]
    assert 0.0 <= trained["metrics"]["test_accuracy"] <= 1.0


def test_every_bad_file_is_listed_with_its_reason(trained, crafted, mlflow_client, tmp_path):
    root, files = crafted
    report = _report(mlflow_client, trained["mlflow_run_id"], tmp_path)
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    duplicates = {d["path"] for d in report["duplicates"]}
    assert int(mlflow_client.get_run(trained["mlflow_run_id"]).data.params["n_skipped"]) == len(skipped)
    for rel, (data, expected, words) in files.items():
        if expected == "skipped":
            assert rel in skipped, f"{rel} was not skipped; report: {sorted(skipped)}"
            assert words.lower() in skipped[rel].lower(), (rel, skipped[rel])
        elif expected == "kept":
            assert rel not in skipped, (rel, skipped.get(rel))
            assert rel not in duplicates, rel
        else:  # decoded if this OpenCV can, else skipped with a reason
            decodable = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
            if decodable:
                assert rel not in skipped, (rel, skipped.get(rel))
            else:
                assert rel in skipped and skipped[rel], rel
    # all the real photos made it in
    assert report["kept"] >= 40
    assert set(report["counts"]) == {"with_mask", "without_mask"}


def test_kept_odd_files_are_in_the_logged_dataset(trained, crafted, mlflow_client):
    """Non-ASCII and space names, 16-bit/palette/RGBA/CMYK images are in the run's dataset input."""
    _, files = crafted
    run = mlflow_client.get_run(trained["mlflow_run_id"])
    inputs = run.inputs.dataset_inputs
    assert inputs
    # The dataset's digest is the manifest fingerprint; its rows are the kept files.
    assert inputs[0].dataset.digest == trained["dataset_fingerprint"][:36]
    kept_expected = [rel for rel, (_, exp, _) in files.items() if exp == "kept"]
    profile = json.loads(inputs[0].dataset.profile or "{}")
    assert profile.get("num_rows", 0) >= 40 + len(kept_expected) - 1
