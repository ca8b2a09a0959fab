"""One Prefect server and one MLflow server for the whole test session, on 127.0.0.1.

The environment is set when this module is imported, before any test imports prefect
(Prefect reads its settings at import time); the servers start on first use.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pg_util import copy_subset  # noqa: F401 - shared with the topology tests

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets" / "face-mask"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SESSION_DIR = Path(tempfile.mkdtemp(prefix="maskcls-it-"))
PREFECT_PORT = free_port()
MLFLOW_PORT = free_port()
SESSION_ENV = {
    "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{MLFLOW_PORT}",
    "MASKCLS_HOME": str(SESSION_DIR / "home"),
    "MASKCLS_MLFLOW_RETRY_S": "20",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
os.environ.update(SESSION_ENV)
os.environ.pop("PREFECT_HOME", None)


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, str]]:
    """Prefect's and MLflow's servers, started with the same code as `make up`."""
    from stack import start_mlflow_server, start_prefect_server, wait_healthy

    prefect = start_prefect_server(SESSION_DIR / "servers", PREFECT_PORT,
                                   env={"PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    mlflow = start_mlflow_server(SESSION_DIR / "servers", MLFLOW_PORT)
    try:
        wait_healthy(f"http://127.0.0.1:{PREFECT_PORT}/api/health", 180, prefect)
        wait_healthy(f"http://127.0.0.1:{MLFLOW_PORT}/health", 180, mlflow)
        yield dict(SESSION_ENV)
    finally:
        for service in (prefect, mlflow):
            service.stop()
        shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def subset(tmp_path_factory) -> Path:
    """~80 real images; sorted names put the duplicated 'copy N' files in, so dedupe is exercised."""
    return copy_subset(tmp_path_factory.mktemp("subset"), 40)


@pytest.fixture(scope="session")
def mlflow_client(servers):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=servers["MLFLOW_TRACKING_URI"])


@pytest.fixture(scope="session")
def first_run(servers, subset) -> dict:
    """The session's first smoke flow run on the subset (cold cache, registers version 1)."""
    from flows.train import train_flow

    return train_flow(profile="smoke", source=str(subset))


@pytest.fixture(autouse=True, scope="session")
def _first_run_comes_first(request) -> None:
    """Make the first integration test of the session run `first_run` before anything else
    touches the shared servers and cache, so it really is the first (cold, version 1)."""
    if any("tests/integration" in str(item.fspath) and "first_run" in item.fixturenames
           for item in request.session.items):
        request.getfixturevalue("first_run")


def run_cli(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env={**os.environ, **(env or {})}, cwd=cwd or REPO,
        capture_output=True, text=True, timeout=timeout,
    )
