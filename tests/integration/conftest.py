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
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets" / "face-mask"
BIN = Path(sys.executable).parent


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


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}); log {log}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not healthy after {timeout}s; log {log}:\n{log.read_text()[-3000:]}")


class Servers:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        logs = SESSION_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PREFECT_HOME": str(SESSION_DIR / "prefect")}
        env.pop("PREFECT_API_URL", None)
        plog = logs / "prefect.log"
        prefect = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(PREFECT_PORT)],
            env=env, stdout=open(plog, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(prefect)
        mlog = logs / "mlflow.log"
        mlflow = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(MLFLOW_PORT),
             "--backend-store-uri", f"sqlite:///{SESSION_DIR / 'mlflow.db'}",
             "--artifacts-destination", str(SESSION_DIR / "mlartifacts"), "--serve-artifacts",
             "--workers", "1"],
            env=env, stdout=open(mlog, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(mlflow)
        _wait(f"http://127.0.0.1:{PREFECT_PORT}/api/health", prefect, plog)
        _wait(f"http://127.0.0.1:{MLFLOW_PORT}/health", mlflow, mlog)

    def stop(self) -> None:
        import signal

        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, str]]:
    s = Servers()
    s.start()
    try:
        yield dict(SESSION_ENV)
    finally:
        s.stop()
        shutil.rmtree(SESSION_DIR, ignore_errors=True)


def copy_subset(dest: Path, per_class: int, offset: int = 0) -> Path:
    """A small real subset of the shared data: ``per_class`` files of each class, by sorted name."""
    for cls in ("with_mask", "without_mask"):
        files = sorted((SHARED / cls).iterdir())[offset : offset + per_class]
        (dest / cls).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dest / cls / f.name)
    return dest


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


def run_cli(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env={**os.environ, **(env or {})}, cwd=cwd or REPO,
        capture_output=True, text=True, timeout=timeout,
    )
