"""One Prefect server and one MLflow server for the whole test session (tests/support/servers.py).

The environment is set when this module is imported, before any test imports prefect
(Prefect reads its settings at import time); the servers start on first use. In-process
flows share the session's MASKCLS_HOME, so its cache, and the servers' registry.

No test may rely on running before another: `first_run` trains on `subset`, images that
no test outside its own reruns trains on, so it is a cold run whatever ran before it;
what it finds in the registry is read just before it (`champion_before_first_run`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskcls.config import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from tests.support import REPO
from tests.support.data import PAST_COPIES, copy_subset
from tests.support.ports import free_port
from tests.support.servers import Servers, start_servers

SESSION_DIR = Path(tempfile.mkdtemp(prefix="maskcls-it-"))
SESSION_HOME = SESSION_DIR / "home"
PREFECT_PORT = free_port()
MLFLOW_PORT = free_port()
os.environ.update({
    "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{MLFLOW_PORT}",
    "MASKCLS_HOME": str(SESSION_HOME),
    "MASKCLS_MLFLOW_RETRY_S": "20",
    "TF_CPP_MIN_LOG_LEVEL": "2",
})
os.environ.pop("PREFECT_HOME", None)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """Prefect's and MLflow's servers on the ports the environment above names."""
    try:
        with start_servers(SESSION_DIR / "servers", PREFECT_PORT, MLFLOW_PORT) as started:
            yield started
    finally:
        shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def subset(tmp_path_factory) -> Path:
    """~80 real images, the data of `first_run` and of the tests that rerun it (no other test
    trains on them); sorted names put the duplicated 'copy N' files in, so dedupe is exercised."""
    return copy_subset(tmp_path_factory.mktemp("subset"), 40)


@pytest.fixture
def fresh_subset(tmp_path) -> Path:
    """~80 real images (distinct photos) for a test that trains on data of its own: not
    `subset`'s, so it never warms `first_run`'s cache."""
    return copy_subset(tmp_path / "fresh-subset", 40, offset=PAST_COPIES)


@pytest.fixture(scope="session")
def mlflow_client(servers: Servers):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=servers.mlflow_url)


@pytest.fixture(scope="session")
def champion_before_first_run(mlflow_client) -> int | None:
    """The registry's champion version just before `first_run` (None: there was none)."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = mlflow_client.get_registered_model(REGISTERED_MODEL_NAME).aliases
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None  # nothing registered yet
    return int(aliases[CHAMPION_ALIAS]) if CHAMPION_ALIAS in aliases else None


@pytest.fixture(scope="session")
def first_run(champion_before_first_run, subset) -> dict:
    """The session's first smoke flow run on `subset`: every stage computed, one version registered."""
    from flows.train import train_flow

    return train_flow(profile="smoke", source=str(subset))


def run_cli(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env={**os.environ, **(env or {})}, cwd=cwd or REPO,
        capture_output=True, text=True, timeout=timeout,
    )
