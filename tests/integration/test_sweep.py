"""The sweep: `maskcls sweep` trains a 2-point grid on the smoke profile through the
Postgres-backed topology (two workers on the `maskcls` pool). One parent MLflow run with two
nested children; the first point computes the data stages and the second finds them in
the cache; the champion is the one the promotion rule leaves standing. (The grid and the
summary as data are unit-tested in tests/unit/maskcls/test_sweep_grid.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stack
from maskcls.names import FLOW_NAME, SWEEP, SWEEP_FLOW_NAME, SWEEP_MEMBER
from maskcls.sweep import DATA_STAGE_NAMES
from tests.integration import pg_util
from tests.support.data import copy_subset

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REGISTERED_MODEL = "face-mask-classifier"
PER_CLASS = 30
RATES = ("1e-3", "3e-3")


# --------------------------------------------------------------------------- no stack


def test_cli_sweep_without_a_stack_says_what_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env["MASKCLS_HOME"] = str(tmp_path / "nothing-here")
    result = subprocess.run([sys.executable, "-m", "flows.cli", "sweep", "--grid", "train.learning_rate=1e-3,3e-4",
                             "--profile", "smoke"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no Prefect server" in result.stderr and "make up" in result.stderr
    bad = subprocess.run([sys.executable, "-m", "flows.cli", "sweep", "--grid", "train.nope=1,2"], cwd=REPO,
                         env={**env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "does not answer" in bad.stderr


# --------------------------------------------------------------------------- a sweep on the topology


@pytest.fixture(scope="module")
def top(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pg_util.Topology]:
    root = tmp_path_factory.mktemp("sweep")
    data = copy_subset(root / "data", PER_CLASS, offset=100)
    topology = pg_util.Topology(root=root, data=data, n_workers=2).start()
    try:
        yield topology
    finally:
        topology.stop()


@pytest.fixture(scope="module")
def sweep(top: pg_util.Topology) -> dict[str, Any]:
    """`maskcls sweep` from a shell pointed at the stack: the sweep runs in the CLI, its points on the workers."""
    env = {**os.environ, **top.env()}
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sweep", "--grid", f"train.learning_rate={','.join(RATES)}",
         "--profile", "smoke", "--json", "--export", str(top.root / "export.json")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=480,
    )
    top.seen |= top.all_processes()
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{top.worker_logs()}"
    start = result.stdout.index("{\n")
    return json.loads(result.stdout[start:])


@pytest.mark.timeout(600)
def test_sweep_nests_two_points_shares_data_stages_and_promotes_by_the_rule(
    top: pg_util.Topology, sweep: dict[str, Any]
) -> None:
    from mlflow import MlflowClient

    points = sweep["points"]
    assert [p["state"] for p in points] == ["Completed", "Completed"], points
    assert [p["train.learning_rate"] for p in points] == ["0.001", "0.003"]

    # One parent MLflow run, two children nested under it by mlflow.parentRunId.
    client = MlflowClient(tracking_uri=top.mlflow_url)
    parent = client.get_run(sweep["mlflow_run_id"])
    assert parent.data.tags["sweep"] == "true" and parent.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in parent.data.tags
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    assert {c.info.run_id for c in children} == {p["mlflow_run_id"] for p in points}
    by_id = {c.info.run_id: c for c in children}
    for point in points:
        child = by_id[point["mlflow_run_id"]]
        assert child.info.status == "FINISHED"
        assert float(child.data.params["train.learning_rate"]) == float(point["train.learning_rate"])
        assert child.data.params["profile"] == "smoke"
        assert child.data.tags["promotion"] in ("promoted", "not_better")
    # The summary table and best point are on the parent run.
    assert "sweep_summary.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # The best point is the one with the lowest validation loss, whatever its test accuracy.
    assert all(p["val_loss"] is not None for p in points), points
    best = min(points, key=lambda p: p["val_loss"])
    assert best["rank"] == 1 and parent.data.tags["best_run_id"] == best["mlflow_run_id"]
    assert parent.data.metrics["best_val_loss"] == pytest.approx(best["val_loss"])
    assert parent.data.metrics["best_test_accuracy"] == pytest.approx(best["test_accuracy"])
    assert parent.data.metrics["n_completed"] == 2 and parent.data.metrics["n_failed"] == 0
    # --export wrote the candidates as data, in the same order, with what made them.
    export = json.loads((top.root / "export.json").read_text())
    assert export["parent_run_id"] == parent.info.run_id and export["best_run_id"] == best["mlflow_run_id"]
    assert [c["run_id"] for c in export["candidates"]] == [
        p["mlflow_run_id"] for p in sorted(points, key=lambda p: p["rank"])]
    for candidate in export["candidates"]:
        child = by_id[candidate["run_id"]]
        assert candidate["git_commit"] == child.data.tags["git_commit"] != "unknown"
        assert candidate["dataset_fingerprint"] == child.data.tags["dataset_fingerprint"]
        assert candidate["params"] == child.data.params and candidate["metrics"]["best_val_loss"] > 0

    # Prefect: the sweep's flow run, with the points as child runs of the sweep-member deployment.
    sweep_run_id = parent.data.tags["prefect_flow_run_id"]
    sweep_run = pg_util.api(top.api_url, f"/flow_runs/{sweep_run_id}")
    assert sweep_run["state"]["type"] == "COMPLETED"
    flow = pg_util.api(top.api_url, f"/flows/{sweep_run['flow_id']}")
    assert flow["name"] == SWEEP_FLOW_NAME
    member = pg_util.api(top.api_url, f"/deployments/name/{FLOW_NAME}/{SWEEP_MEMBER}")
    assert member["global_concurrency_limit"] is None, "points must not be limited to one at a time"
    point_runs = [pg_util.api(top.api_url, f"/flow_runs/{c.data.tags['prefect_flow_run_id']}")
                  for c in sorted(children, key=lambda c: [p["mlflow_run_id"] for p in points].index(c.info.run_id))]
    parent_tasks = {t["id"] for t in pg_util.api(top.api_url, "/task_runs/filter", data={
        "flow_runs": {"id": {"any_": [sweep_run_id]}}})}
    for run in point_runs:
        assert run["deployment_id"] == member["id"]
        assert run["parent_task_run_id"] in parent_tasks, "each point is a subflow of the sweep's run"
        assert run["state"]["type"] == "COMPLETED"
    # The second point was started while the first still ran: the sweep waits for data, not for runs.
    first, second = point_runs
    assert second["created"] < first["end_time"], (first, second)

    # The data stages ran once: in the first point; the second read them all from the cache.
    first_stages = pg_util.task_run_states(top.api_url, first["id"])
    second_stages = pg_util.task_run_states(top.api_url, second["id"])
    assert [first_stages[s] for s in DATA_STAGE_NAMES] == ["Completed"] * 5, first_stages
    assert [second_stages[s] for s in DATA_STAGE_NAMES] == ["Cached"] * 5, second_stages
    assert first_stages["train"] == second_stages["train"] == "Completed", "each point trains its own model"
    assert [p["data_stages_cached"] for p in points] == [0, 5]

    # One champion, and it is the one the promotion rule leaves: no version of the sweep beats it.
    champion = client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    assert sweep["champion"] == {"version": champion.version, "run_id": champion.run_id, "from_sweep": True}
    assert parent.data.tags["champion_version"] == champion.version
    versions = {p["mlflow_run_id"]: client.get_model_version(REGISTERED_MODEL, p["model_version"]) for p in points}
    assert {v.run_id for v in versions.values()} == {p["mlflow_run_id"] for p in points}
    assert champion.run_id in versions
    (other,) = [v for v in versions.values() if v.version != champion.version]
    assert champion.tags["promotion"] == "promoted"
    if other.tags["promotion"] == "promoted":  # promoted first, then beaten by the champion
        assert other.tags["promotion_reason"] == "no champion yet"
        assert champion.tags["promotion_reason"].startswith("better")
        assert f"champion v{other.version} " in champion.tags["promotion_reason"]
    else:
        assert other.tags["promotion"] == "not_better"
        assert champion.tags["promotion_reason"] == "no champion yet"
        assert f"champion v{champion.version} " in other.tags["promotion_reason"]
    min_delta = float(by_id[champion.run_id].data.params["promotion_min_delta"])
    champion_accuracy = float(champion.tags["test_accuracy"])
    assert all(float(v.tags["test_accuracy"]) < champion_accuracy + min_delta for v in versions.values())
    rows = top.pg.query("mlflow", "SELECT version FROM registered_model_aliases WHERE name = %s AND alias = %s",
                        (REGISTERED_MODEL, "champion"))
    assert rows == [(int(champion.version),)]

    # The sweep's markdown artifact in Prefect.
    artifacts = pg_util.api(top.api_url, "/artifacts/filter", data={"artifacts": {"key": {"any_": ["sweep-summary"]}}})
    assert any(a["flow_run_id"] == sweep_run_id and a["type"] == "markdown" for a in artifacts)
    markdown = next(a for a in artifacts if a["flow_run_id"] == sweep_run_id)["data"]
    assert "| point | train.learning_rate |" in markdown and sweep["mlflow_run_id"] in markdown


@pytest.mark.timeout(900)
def test_an_interrupted_sweep_cancels_its_points(top: pg_util.Topology, sweep: dict[str, Any]) -> None:
    """Ctrl-C on `maskcls sweep` while its points train: they are cancelled, the parent run fails."""
    from mlflow import MlflowClient

    before = {p["flow_run"] for p in sweep["points"]}
    champion_before = sweep["champion"]["version"]
    proc = subprocess.Popen(
        # Long enough that no point can finish before the interrupt.
        [sys.executable, "-m", "flows.cli", "sweep", "--grid", "train.epochs=300,301", "--profile", "smoke"],
        cwd=REPO, env={**os.environ, **top.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        points: list[dict] = []
        while time.monotonic() < deadline:
            runs = pg_util.api(top.api_url, "/flow_runs/filter", data={"flow_runs": {"tags": {"all_": ["sweep"]}}})
            points = [r for r in runs if r["name"] not in before]
            if len(points) == 2 and all(r["state"]["type"] == "RUNNING" for r in points):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(1)
        assert len(points) == 2 and all(r["state"]["type"] == "RUNNING" for r in points), points
        top.seen |= top.all_processes()
        proc.send_signal(signal.SIGINT)
        # Cancelling both points goes through the server and the workers: slow on a loaded machine.
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "cancelled point run" in err
    # Their workers stop them: Cancelling -> Cancelled.
    final = pg_util.wait_final(top, [r["id"] for r in points], 180)
    assert sorted(r["state"]["name"] for r in final.values()) == ["Cancelled", "Cancelled"], final
    client = MlflowClient(tracking_uri=top.mlflow_url)
    experiment = client.get_experiment_by_name("face-mask")
    (parent,) = [r for r in client.search_runs([experiment.experiment_id], "tags.sweep = 'true'")
                 if r.info.run_id != sweep["mlflow_run_id"]]
    assert parent.info.status == "FAILED"
    assert client.get_model_version_by_alias(REGISTERED_MODEL, "champion").version == champion_before


@pytest.mark.timeout(120)
def test_sweep_deployment_is_registered_for_the_ui(top: pg_util.Topology) -> None:
    deployment = pg_util.api(top.api_url, f"/deployments/name/{SWEEP_FLOW_NAME}/{SWEEP}")
    assert deployment["entrypoint"] == "flows/sweep.py:sweep_flow"
    assert deployment["parameters"].get("source") == [str(top.data)]  # a list of parts
    properties = deployment["parameter_openapi_schema"]["properties"]
    assert {"grid", "profile", "source", "max_images", "epochs", "overrides"} <= set(properties)
    assert all(properties[name].get("description") for name in ("grid", "profile", "source"))


@pytest.mark.timeout(180)
def test_sweep_stack_stops_and_nothing_is_left(top: pg_util.Topology) -> None:
    seen = top.seen | top.all_processes()
    assert top.stop() == set()
    assert [p for p in seen if pg_util.running(p)] == []
    assert stack.tagged_processes(stack.StackPaths(top.home).tag) == set()
