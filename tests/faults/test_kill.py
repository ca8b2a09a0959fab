"""Part 3: SIGKILL `maskcls train` during download, augmentation, training and registration,
then run again; restart Prefect's server during a run; alter the stored model.

One chain of real runs on one MASKCLS_HOME (each run picks up what the killed one left):

1. download from a slow local HTTP server, killed while the zip is half received;
2. killed inside augmentation, holding the augment stage's cache-key lock;
3. killed inside training (after its first epoch);
4. killed inside registration (model artifacts logged, no version yet);
5. paused inside registration while Prefect's server is restarted, then finishes;
6. the stored model file truncated, run again: the data stages come from the cache,
   training is recomputed.

Each run first marks the runs left Running by the killed ones (tasks.recovery).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from maskcls.config import REGISTERED_MODEL_NAME
from maskcls.stages import STAGE_NAMES as STAGES
from tasks.locking import held, holder_info
from tests.support.data import PAST_COPIES, copy_subset
from tests.support.servers import Servers
from tests.support.waiting import wait_until
from tests.support.zips import zip_of_folder

from .conftest import (
    Cli,
    CliRun,
    Misbehaving,
    mlflow_runs_of_pid,
    model_version_has_artifacts,
    prefect_flow_run,
    prefect_task_states,
)

TRAIN = ["train", "--profile", "smoke", "--json"]


@dataclass
class Chain:
    home: Path
    url: str
    killed: dict[str, CliRun] = field(default_factory=dict)
    observed: dict[str, object] = field(default_factory=dict)
    final: CliRun | None = None
    rerun: CliRun | None = None


def _store_files(home: Path, kind: str) -> list[Path]:
    folder = home / "store" / kind
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def chain(servers: Servers, tmp_path_factory) -> Chain:
    import threading

    base = tmp_path_factory.mktemp("kill-chain")
    data = copy_subset(base / "photos", 12, offset=PAST_COPIES)
    server = Misbehaving()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = "/slow/face-mask.zip"
    # 3 MB of random padding (skipped by validation as an unsupported file type): the client reads
    # 1 MiB before it opens its temporary file, so the zip must be well past that.
    (data / "padding.bin").write_bytes(os.urandom(3 * 2**20))
    server.files[path] = zip_of_folder(data)
    (data / "padding.bin").unlink()
    server.slow[path] = 0.25  # 64 KiB every 0.25 s: about 13 s for the whole zip
    home = base / "home"
    c = Chain(home=home, url=server.url(path))
    env = servers.env(home)
    args = [*TRAIN, "--source", c.url]
    cli = Cli(base / "logs")
    try:
        # 1. during download
        run = cli.start(args, env)
        key = hashlib.sha256(c.url.encode()).hexdigest()
        downloads = home / "downloads"

        def partial():
            return list(downloads.glob(f".{key}.*.part")) if downloads.exists() else []

        wait_until(partial, 240, "a partly received download", alive=run.alive, log=run.log)
        run.kill()
        c.killed["download"] = run
        c.observed["after-download-kill"] = sorted(p.name for p in downloads.iterdir())
        server.slow[path] = 0.0

        # 2.-4. inside augmentation, training, registration
        for point in ("augment", "train", "register"):
            marker = base / f"paused-{point}"
            run = cli.start(args, env, pause=point, marker=marker)
            wait_until(marker.exists, 300, f"the run to pause in {point}", alive=run.alive, log=run.log)
            if point == "augment":
                locks = sorted((home / "locks").glob("augment-*.lock"))
                c.observed["augment-locks"] = [(held(p), (holder_info(p) or {}).get("pid")) for p in locks]
            run.kill()
            if point == "augment":
                c.observed["augment-locks-after-kill"] = [held(p) for p in locks]
                c.observed["incoming-after-augment-kill"] = [p.name for p in _store_files(home, "augmented")
                                                             if p.name.startswith(".incoming-")]
            if point == "train":
                c.observed["models-after-train-kill"] = [p.name for p in _store_files(home, "models")]
            c.killed[point] = run

        # 5. a run that is inside registration while Prefect's server restarts
        marker, release = base / "paused-final", base / "release-final"
        run = cli.start(args, env, pause="register", marker=marker, release=release)
        wait_until(marker.exists, 300, "the run to pause in register", alive=run.alive, log=run.log)
        servers.restart_prefect()
        release.write_text("go")
        run.wait(300)
        c.final = run

        # 6. the same again, with the stored model truncated (as a partial write would leave it):
        # the data stages come from the cache records written before the restart, training reruns
        models = [p for p in _store_files(home, "models") if p.suffix == ".keras"]
        c.observed["models-before-alter"] = [p.name for p in models]
        for model in models:
            model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        c.rerun = cli.run(args, env)
    finally:
        cli.close()
        server.shutdown()
        server.server_close()
    return c


def test_kill_during_download_leaves_no_zip_under_its_name(chain):
    names = chain.observed["after-download-kill"]
    assert not [n for n in names if n.endswith(".zip") or n.endswith(".json")], names
    assert [n for n in names if n.endswith(".part")], names  # the partial file exists, under a temp name


def test_kill_inside_augment_held_the_lock_and_the_os_released_it(chain):
    locks = chain.observed["augment-locks"]
    assert (True, chain.killed["augment"].pid) in locks, locks
    assert not any(chain.observed["augment-locks-after-kill"])
    # what it was writing stayed under a temporary name
    assert chain.observed["incoming-after-augment-kill"]


def test_kill_inside_training_left_no_model(chain):
    assert chain.observed["models-after-train-kill"] == []


def test_killed_runs_registered_nothing(chain, mlflow_client):
    versions = mlflow_client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")
    for point, run in chain.killed.items():
        for mlrun in mlflow_runs_of_pid(mlflow_client, run.pid):
            assert not [v for v in versions if v.run_id == mlrun.info.run_id], point


def test_run_after_the_kills_finishes_with_a_correct_result(chain, mlflow_client, tmp_path):
    run = chain.final
    assert run.proc.returncode == 0, run.log()
    result = run.result()
    # what the killed runs completed is reused; what they were inside of is redone
    assert result["stages"]["register"] == "Completed", result["stages"]
    assert result["model_version"] and result["promotion"] in {"promoted", "not_better"}
    mv = mlflow_client.get_model_version(REGISTERED_MODEL_NAME, result["model_version"])
    assert model_version_has_artifacts(mlflow_client, mv, tmp_path)
    assert mlflow_client.get_run(result["mlflow_run_id"]).info.status == "FINISHED"


def test_every_cached_record_points_at_intact_files(chain):
    """Records in the result storage all verify: no partly written file was ever recorded."""
    import tasks.records  # noqa: F401 - the record classes, for unpickling
    from prefect.results import ResultRecord

    records = sorted((chain.home / "prefect-results").iterdir())
    assert records
    checked = 0
    for path in records:
        record = ResultRecord.deserialize(path.read_bytes())
        verify = getattr(record.result, "verify", None)
        if callable(verify):
            checked += 1
            # the model truncated in step 7 was recomputed: its new record verifies; the old one is stale
            if not verify():
                assert any(r.path.endswith(n) for r in record.result.refs()
                           for n in chain.observed["models-before-alter"]), path
    assert checked >= 5


def test_killed_runs_are_marked_failed_and_crashed(chain, mlflow_client, servers):
    for point, run in chain.killed.items():
        mlruns = mlflow_runs_of_pid(mlflow_client, run.pid)
        assert len(mlruns) == 1, (point, mlruns)
        mlrun = mlflow_client.get_run(mlruns[0].info.run_id)
        assert mlrun.info.status == "FAILED", (point, mlrun.info.status)
        assert mlrun.data.tags.get("crashed") == "true"
        reason = mlrun.data.tags.get("failure_reason", "")
        assert f"process {run.pid}" in reason and "died" in reason, reason
        flow_run = prefect_flow_run(servers.api_url, mlrun.data.tags["prefect_flow_run_id"])
        assert flow_run["state"]["type"] == "CRASHED", (point, flow_run["state"])
        assert str(run.pid) in (flow_run["state"].get("message") or "")


def test_prefect_restart_mid_run_loses_nothing(chain, servers):
    """The run that lived through the server restart is recorded as completed, and the rerun reads
    the data stages from the cache records it left on disk."""
    final = chain.final.result()
    rerun = chain.rerun
    assert rerun.proc.returncode == 0, rerun.log()
    again = rerun.result()
    assert all(again["stages"][s] == "Cached" for s in STAGES[:5]), again["stages"]
    assert again["dataset_fingerprint"] == final["dataset_fingerprint"]
    # the restarted server still knows the run and its task runs
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=servers.mlflow_url)
    flow_run_id = client.get_run(final["mlflow_run_id"]).data.tags["prefect_flow_run_id"]
    assert prefect_flow_run(servers.api_url, flow_run_id)["state"]["type"] == "COMPLETED"
    states = prefect_task_states(servers.api_url, flow_run_id)
    assert states.get("register") == "Completed", states


def test_truncated_model_file_is_recomputed(chain):
    stages = chain.rerun.result()["stages"]
    assert stages["augment"] == "Cached", stages
    assert stages["train"] == "Completed", stages
    models = [p for p in _store_files(chain.home, "models") if p.suffix == ".keras"]
    assert models and all(p.stat().st_size > 0 for p in models)
