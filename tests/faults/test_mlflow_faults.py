"""Part 3, MLflow: unreachable at start is a clear error before any work (probe GET /health,
5 s timeout); going away mid-run is retried with backoff (capped by MASKCLS_MLFLOW_RETRY_S)
and then fails cleanly, with no model version registered and the run marked FAILED by the
next run's recovery."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from maskcls.config import EXPERIMENT_NAME, REGISTERED_MODEL_NAME
from tests.support.data import PAST_COPIES, copy_subset
from tests.support.ports import free_port
from tests.support.servers import Servers
from tests.support.waiting import wait_until

from .conftest import Cli, assert_clear_error


@pytest.fixture(scope="module")
def own_mlflow(tmp_path_factory):
    """An MLflow server of this module's own, to be killed. Started first, so it boots while the
    first test runs."""
    import stack

    home = tmp_path_factory.mktemp("own-mlflow")
    service = stack.start_mlflow_server(home, free_port())
    try:
        yield home, service
    finally:
        _kill_service(service)


@pytest.fixture
def black_hole():
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


def test_unreachable_mlflow_is_a_clear_error_before_any_work(own_mlflow, servers: Servers, black_hole, tmp_path,
                                                             cli: Cli):
    data = copy_subset(tmp_path / "photos", 6, offset=PAST_COPIES)
    refused = f"http://127.0.0.1:{free_port()}"
    runs = {}
    for name, uri in (("refused", refused), ("hangs", black_hole)):
        home = tmp_path / name
        runs[name] = (home, uri, cli.start(["train", "--profile", "smoke", "--source", str(data)],
                                           servers.env(home, MLFLOW_TRACKING_URI=uri)))
    for name, (home, uri, run) in runs.items():
        run.wait(180)
        message = assert_clear_error(run, uri, "not reachable", "MLFLOW_TRACKING_URI")
        if name == "hangs":
            assert "timeout" in message.lower(), message
        # before any work: no task ran, nothing was downloaded or stored
        assert "Task run '" not in run.stderr(), run.log()
        assert not (home / "downloads").exists() and not (home / "store").exists()


def _kill_service(service) -> None:
    """SIGKILL the server's whole process group (it runs in its own session)."""
    try:
        os.killpg(service.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_mlflow_going_away_mid_run_fails_cleanly(own_mlflow, servers: Servers, tmp_path, cli: Cli):
    from urllib.parse import urlparse

    from mlflow import MlflowClient

    import stack
    from tasks.recovery import recover

    data = copy_subset(tmp_path / "photos", 10, offset=PAST_COPIES)
    mhome, mlflow_server = own_mlflow
    port = urlparse(mlflow_server.url).port
    try:
        stack.wait_healthy(mlflow_server.health_url, 180, mlflow_server)
        home = tmp_path / "home"
        marker, release = tmp_path / "paused", tmp_path / "release"
        budget = 6
        env = servers.env(home, MLFLOW_TRACKING_URI=mlflow_server.url, MASKCLS_MLFLOW_RETRY_S=str(budget))
        run = cli.start(["train", "--profile", "smoke", "--source", str(data)], env,
                        pause="train", marker=marker, release=release)
        wait_until(marker.exists, 300, "the run to pause after its first epoch", alive=run.alive, log=run.log)
    finally:
        _kill_service(mlflow_server)
    wait_until(lambda: not stack.port_open("127.0.0.1", port), 30, "MLflow's port to close")
    release.write_text("go")
    t0 = time.monotonic()
    run.wait(240)
    elapsed = time.monotonic() - t0
    message = assert_clear_error(run, mlflow_server.url, "connection refused", "MASKCLS_MLFLOW_RETRY_S")
    # retried with backoff, then gave up within the budget (plus the time to unwind the run)
    assert "Retrying" in run.stderr(), run.log()
    assert elapsed < budget + 45, (elapsed, message)

    # The server's own database, read directly: nothing registered, the run left RUNNING ...
    db = f"sqlite:///{mhome / 'stack' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=db, registry_uri=db)
    assert client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'") == []
    exp = client.get_experiment_by_name(EXPERIMENT_NAME)
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert mlrun.data.tags["pid"] == str(run.pid)
    assert mlrun.info.status == "RUNNING"
    # ... until the next run's recovery marks it FAILED, saying why
    recovered = recover(client, prefect=False)
    assert mlrun.info.run_id in recovered.mlflow_runs
    after = client.get_run(mlrun.info.run_id)
    assert after.info.status == "FAILED"
    assert f"process {run.pid}" in after.data.tags["failure_reason"]
    assert after.data.tags["crashed"] == "true"
