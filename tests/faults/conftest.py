"""Fault tests: real `maskcls train` processes against real servers, fed bad input on purpose,
killed on purpose, and their servers taken away on purpose.

Nothing here changes the test process's own environment: every flow run is a subprocess
with an explicit environment, so this suite can share a pytest session with
tests/integration (whose conftest sets os.environ for in-process flows).

- ``servers``: one Prefect server and one MLflow server (SQLite) for the session, on 127.0.0.1
  (tests/support/servers.py; ``servers.env(home)`` is a run's environment on them).
- ``Cli``: a `maskcls` subprocess, run to the end (``run``) or started to be killed (``start``).
- ``http_server``: a local HTTP server that misbehaves on request (slow, HTML, 500, hang).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support import REPO
from tests.support.servers import Servers, start_servers

PAUSE_CLI = Path(__file__).with_name("pause_cli.py")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The session's pair, or a developer's running one: MASKCLS_FAULTS_SERVERS names a JSON file
    {"api": ..., "mlflow": ..., "home": ...} of servers started elsewhere (they are left running)."""
    reuse = os.environ.get("MASKCLS_FAULTS_SERVERS")
    if reuse:
        info = json.loads(Path(reuse).read_text())
        yield Servers(home=Path(info["home"]), api_url=info["api"], mlflow_url=info["mlflow"])
        return
    # Under pytest's temporary folder: the servers' databases and logs stay for a look after a failure.
    with start_servers(tmp_path_factory.mktemp("servers")) as started:
        yield started


@pytest.fixture(scope="session")
def mlflow_client(servers):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=servers.mlflow_url, registry_uri=servers.mlflow_url)


# --------------------------------------------------------------------------- the CLI


@dataclass
class CliRun:
    """A `maskcls` subprocess whose output goes to files (so a killed one leaves its log)."""

    proc: subprocess.Popen
    out: Path
    err: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def log(self) -> str:
        return f"--- stdout\n{self.stdout()[-4000:]}\n--- stderr\n{self.stderr()[-6000:]}"

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"maskcls did not finish within {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL the `maskcls` process itself (no chance to clean up)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)

    def result(self) -> dict:
        """The --json result of a finished run."""
        text = self.stdout()
        start = text.find("{\n")
        assert start >= 0, self.log()
        return json.loads(text[start:])


class Cli:
    """Starts `maskcls` subprocesses; every one still alive at teardown is killed."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.runs: list[CliRun] = []
        self._lock = threading.Lock()
        self._n = 0

    def start(self, args: list[str], env: dict[str, str], pause: str | None = None,
              marker: Path | None = None, release: Path | None = None) -> CliRun:
        """``pause`` (download|augment|train|register) runs the same CLI through pause_cli.py, which
        stops inside that stage (writing ``marker``) until ``release`` exists or it is killed."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with self._lock:  # runs may be started from several threads
            self._n += 1
            n = self._n
        out, err = self.logs / f"run{n}.out", self.logs / f"run{n}.err"
        if pause:
            assert marker is not None
            env = {**env, "MASKCLS_TEST_PAUSE": pause, "MASKCLS_TEST_PAUSE_MARKER": str(marker),
                   "MASKCLS_TEST_PAUSE_RELEASE": str(release or "")}
            argv = [sys.executable, str(PAUSE_CLI), *args]
        else:
            argv = [sys.executable, "-m", "flows.cli", *args]
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        run = CliRun(proc, out, err)
        self.runs.append(run)
        return run

    def run(self, args: list[str], env: dict[str, str], timeout: float = 300) -> CliRun:
        run = self.start(args, env)
        run.wait(timeout)
        return run

    def close(self) -> None:
        for run in self.runs:
            if run.alive():
                run.kill()


@pytest.fixture
def cli(tmp_path) -> Iterator[Cli]:
    c = Cli(tmp_path / "cli-logs")
    try:
        yield c
    finally:
        c.close()


def error_paragraph(stderr: str) -> str:
    """The CLI's own error message: the text from the last 'error:' to the end, whitespace-collapsed."""
    at = stderr.rfind("error:")
    assert at >= 0, f"no 'error:' message on stderr:\n{stderr[-4000:]}"
    return " ".join(stderr[at:].split())


def assert_clear_error(run: CliRun, *words: str) -> str:
    """Non-zero exit, and a one-paragraph message (not a traceback) containing every word."""
    assert run.proc.returncode not in (0, None), run.log()
    message = error_paragraph(run.stderr())
    assert "Traceback" not in message and 'File "' not in message, message
    assert len(message) < 1500, message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in the error message: {message}"
    return message


# --------------------------------------------------------------------------- a misbehaving HTTP server


class Misbehaving(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.slow: dict[str, float] = {}  # path -> seconds between 64 KiB chunks
        self.requests: list[str] = []
        self.stop_hanging = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Misbehaving

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        self.server.requests.append(path)
        try:
            if path.startswith("/hang"):
                self.server.stop_hanging.wait(120)
                return
            if path.startswith("/html"):
                body = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in</body></html>"
                self._send(200, body, "text/html; charset=utf-8")
                return
            if path.startswith("/error"):
                self._send(500, b"internal error", "text/plain")
                return
            if path in self.server.files:
                self._send(200, self.server.files[path], "application/zip", self.server.slow.get(path, 0.0))
                return
            self._send(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, code: int, body: bytes, ctype: str, delay: float = 0.0) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not delay:
            self.wfile.write(body)
            return
        for start in range(0, len(body), 65536):
            self.wfile.write(body[start:start + 65536])
            self.wfile.flush()
            time.sleep(delay)


@pytest.fixture
def http_server() -> Iterator[Misbehaving]:
    server = Misbehaving()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop_hanging.set()
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- Prefect and MLflow reads


def prefect_flow_run(api_url: str, flow_run_id: str) -> dict:
    r = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10)
    r.raise_for_status()
    return r.json()


def prefect_task_states(api_url: str, flow_run_id: str) -> dict[str, str]:
    """Task name (without its suffix) -> state name, for one flow run."""
    r = httpx.post(f"{api_url}/task_runs/filter",
                   json={"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200}, timeout=10)
    r.raise_for_status()
    return {t["name"].rsplit("-", 1)[0]: t["state"]["name"] for t in r.json()}


def mlflow_runs_of_pid(client, pid: int):
    from maskcls.config import EXPERIMENT_NAME

    exp = client.get_experiment_by_name(EXPERIMENT_NAME)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.pid = '{pid}'")


def model_version_has_artifacts(client, mv, dest: Path) -> bool:
    """The version's model loads as far as its files go: MLmodel and the Keras file are there."""
    import mlflow

    dest = Path(dest) / f"v{mv.version}"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        uri = client.get_model_version_download_uri(mv.name, mv.version)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest),
                                                         tracking_uri=client.tracking_uri))
    except Exception:  # noqa: BLE001 - a missing artifact is exactly what is checked for
        return False
    return (local / "MLmodel").is_file() and any(local.rglob("model.keras"))
