"""Part 4: concurrent runs on docker-compose's topology without Docker (PostgreSQL behind
Prefect's and MLflow's servers, two process workers; tests/integration/pg_util.py).

- Four flow runs submitted at once, two with identical inputs: every cache key is computed
  by exactly one task run (the others read it: Cached), all four complete, the champion is
  the best version by DESIGN.md's rule when every version is re-scored here, and no
  version points at a missing artifact.
- A run SIGKILLed while it holds the augment stage's lock: a run with the same inputs that
  was waiting for that lock takes it and finishes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from maskcls.config import CHAMPION_ALIAS, REGISTERED_MODEL_NAME, load_config
from maskcls.stages import STAGE_NAMES as CACHED_STAGES
from tasks.locking import held, holder_info
from tests.integration.pg_util import topology
from tests.support import REPO
from tests.support.data import CLASSES, PAST_COPIES, copy_subset
from tests.support.servers import QUIET, base_env
from tests.support.waiting import wait_until

from .conftest import Cli, model_version_has_artifacts

DEPLOYMENT = "faults-concurrent"
POOL = "maskcls"


@pytest.fixture(scope="module")
def top(tmp_path_factory):
    base = tmp_path_factory.mktemp("concurrent")
    data = copy_subset(base / "photos", 12, offset=PAST_COPIES)
    with topology(base, data, workers=2, worker_env={**QUIET, "MASKCLS_MLFLOW_RETRY_S": "20"}) as t:
        yield t


def _deployment(api: str) -> str:
    """A deployment of the training flow on the pool, without a concurrency limit (registered here)."""
    flow_id = httpx.post(f"{api}/flows/", json={"name": "train-face-mask"}, timeout=30).json()["id"]
    r = httpx.post(f"{api}/deployments/", timeout=30, json={
        "name": DEPLOYMENT, "flow_id": flow_id, "work_pool_name": POOL,
        "entrypoint": "flows/train.py:train_flow",
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}],
        "parameters": {}, "enforce_parameter_schema": False,
    })
    r.raise_for_status()
    return r.json()["id"]


def _wait_final(api: str, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = {i: httpx.get(f"{api}/flow_runs/{i}", timeout=30).json() for i in ids}
        if all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs.values()):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError({i: r["state"] for i, r in runs.items()})
        time.sleep(2)


@pytest.fixture(scope="module")
def four(top) -> dict:
    api = top.api_url
    deployment = _deployment(api)
    source = str(top.data)
    params = {
        "a": {"profile": "smoke", "source": source},
        "a-again": {"profile": "smoke", "source": source},  # identical inputs
        "fewer-epochs": {"profile": "smoke", "source": source, "epochs": 1},
        "other-lr": {"profile": "smoke", "source": source, "learning_rate": 0.003},
    }
    ids = {}
    for name, p in params.items():
        r = httpx.post(f"{api}/deployments/{deployment}/create_flow_run", json={"parameters": p, "name": name},
                       timeout=30)
        r.raise_for_status()
        ids[name] = r.json()["id"]
    runs = _wait_final(api, list(ids.values()), 900)
    tasks = httpx.post(f"{api}/task_runs/filter", timeout=30,
                       json={"flow_runs": {"id": {"any_": list(ids.values())}}, "limit": 200}).json()
    return {"ids": ids, "runs": runs, "tasks": tasks}


def test_four_runs_at_once_all_complete(four):
    states = {name: four["runs"][i]["state"] for name, i in four["ids"].items()}
    assert all(s["type"] == "COMPLETED" for s in states.values()), states


def test_each_cache_key_is_computed_once(four):
    """Stages with the same inputs (the same cache key) ran once: one task run Completed, the others Cached."""
    run_name = {i: name for name, i in four["ids"].items()}
    states: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for t in four["tasks"]:
        stage = t["name"].rsplit("-", 1)[0]
        if stage in CACHED_STAGES:
            states[stage][run_name[t["flow_run_id"]]].append(t["state"]["name"])
    for stage in CACHED_STAGES:
        assert all(len(v) == 1 for v in states[stage].values()) and len(states[stage]) == 4, (stage, states[stage])
    one = {stage: {run: v[0] for run, v in by_run.items()} for stage, by_run in states.items()}
    # the data stages have one key for all four runs
    for stage in ("download", "validate", "split", "preprocess", "augment"):
        assert sorted(one[stage].values()) == ["Cached", "Cached", "Cached", "Completed"], (stage, one[stage])
    # training onwards: the identical pair shares its keys, the other two have their own
    for stage in ("train", "evaluate", "register"):
        assert sorted([one[stage]["a"], one[stage]["a-again"]]) == ["Cached", "Completed"], (stage, one[stage])
        assert one[stage]["fewer-epochs"] == one[stage]["other-lr"] == "Completed", (stage, one[stage])


def _classifier(client, mv, dest: Path):
    import mlflow

    from maskcls.inference import Classifier

    uri = client.get_model_version_download_uri(mv.name, mv.version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest / mv.version),
                                                     tracking_uri=client.tracking_uri))
    return Classifier.load(local / "artifacts" / "model.keras", local / "artifacts" / "preprocessing.json")


def test_champion_is_the_best_version_when_rescored(four, top, tmp_path):
    """DESIGN.md: a version becomes champion only by beating the champion by promotion_min_delta on
    the test images neither trained on. So re-scored here, no version beats the champion by that margin."""
    import hashlib
    import json

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=top.mlflow_url, registry_uri=top.mlflow_url)
    versions = client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")
    assert len(versions) == 3, [(v.version, v.run_id) for v in versions]
    champion = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    assert champion.tags["promotion"] == "promoted"
    assert all(v.tags.get("promotion") in ("promoted", "not_better") for v in versions), \
        [(v.version, v.tags.get("promotion"), v.tags.get("promotion_reason")) for v in versions]

    images = {}
    for cls in CLASSES:
        for p in sorted((top.data / cls).iterdir()):
            data = p.read_bytes()
            images[hashlib.sha256(data).hexdigest()] = (data, cls)

    def seen(mv) -> set[str]:
        path = client.download_artifacts(mv.run_id, "dataset/trained_on.json", str(tmp_path))
        return {row["sha256"] for row in json.loads(Path(path).read_text())}

    delta = load_config("smoke").promotion_min_delta
    champ = _classifier(client, champion, tmp_path)
    for mv in versions:
        if mv.version == champion.version:
            continue
        unseen = [sha for sha in images if sha not in seen(mv) | seen(champion)]
        assert unseen
        batch = [images[s][0] for s in unseen]
        truth = [images[s][1] for s in unseen]

        def accuracy(model) -> float:
            out = model.predict_bytes(batch)
            return sum(o["label"] == t for o, t in zip(out, truth)) / len(truth)

        acc_v, acc_c = accuracy(_classifier(client, mv, tmp_path)), accuracy(champ)
        assert acc_v < acc_c + delta, (f"version {mv.version} ({acc_v:.3f}) beats champion "
                                       f"{champion.version} ({acc_c:.3f}) by the promotion margin")


def test_no_model_version_points_at_a_missing_artifact(four, top, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=top.mlflow_url, registry_uri=top.mlflow_url)
    for mv in client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'"):
        assert model_version_has_artifacts(client, mv, tmp_path), mv.version


def test_run_killed_holding_the_augment_lock_lets_a_waiting_twin_finish(four, top, tmp_path):
    cli = Cli(tmp_path / "logs")
    env = base_env(**top.env())
    env.pop("MASKCLS_DATA_SOURCE", None)
    # a new augmentation setting: upstream stages come from the cache, augment is computed anew
    args = ["train", "--profile", "smoke", "--source", str(top.data), "--set", "augment.shift=2", "--json"]
    marker = tmp_path / "paused"
    try:
        holder = cli.start(args, env, pause="augment", marker=marker)
        wait_until(marker.exists, 300, "the first run to pause inside augment", alive=holder.alive, log=holder.log)
        locks = [p for p in (top.home / "locks").glob("augment-*.lock")
                 if held(p) and (holder_info(p) or {}).get("pid") == holder.pid]
        assert len(locks) == 1, sorted((top.home / "locks").iterdir())
        twin = cli.start(args, env)
        # the twin reaches augment (its preprocess comes from the cache) and waits for the lock
        wait_until(lambda: "Task run 'preprocess" in twin.stderr() and "Cached" in twin.stderr(), 300,
                 "the twin to reach augment", alive=twin.alive, log=twin.log)
        time.sleep(3)
        assert twin.alive() and held(locks[0]) and holder_info(locks[0])["pid"] == holder.pid
        holder.kill()
        twin.wait(300)
    finally:
        cli.close()
    assert twin.proc.returncode == 0, twin.log()
    result = twin.result()
    assert result["stages"]["augment"] == "Completed", result["stages"]
    assert result["model_version"]
    assert holder_info(locks[0])["pid"] == twin.pid  # the twin took the lock after the holder died
