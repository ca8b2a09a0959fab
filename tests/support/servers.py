"""The one server harness: a Prefect server and an MLflow server on free ports of 127.0.0.1,
started and checked with the stack's own code (what `make up` runs), SQLite by default.

The suites start it once per session (tests/integration, tests/faults) or build on it
(tests/e2e and the compose topology add workers and deployments). ``Servers.env`` is the
environment of a client process on these servers: the variables that would point it at
another stack are dropped, so a subprocess never inherits an outer session's servers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import stack

from .ports import free_port
from .waiting import wait_until

# Variables of an outer environment (or of tests/integration's conftest) that must not leak
# into a client of these servers.
_SCRUB = ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "MASKCLS_HOME", "MASKCLS_DATA_SOURCE",
          "MASKCLS_PINS", "MASKCLS_MLFLOW_RETRY_S", "MASKCLS_DOWNLOAD_TIMEOUT_S", "PREFECT_PROFILES_PATH",
          "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
          "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT")
QUIET = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    # Bound the client's MLflow retries: an error within seconds, not a minute.
    "MASKCLS_MLFLOW_RETRY_S": "6",
}
# The servers never phone home (there is no network here, and the tests must not wait on it).
_PREFECT_SERVER_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without another stack's variables, quiet, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(QUIET)
    env.update(extra)
    return env


@dataclass
class Servers:
    """A running Prefect + MLflow pair. ``prefect``/``mlflow`` are None for a pair this process
    did not start (a developer's, named by MASKCLS_FAULTS_SERVERS): then only its URLs are known."""

    home: Path  # the servers' own MASKCLS_HOME: databases, artifacts, logs, pid files
    api_url: str
    mlflow_url: str
    prefect: stack.Service | None = None
    mlflow: stack.Service | None = None
    prefect_env: Mapping[str, str] = field(default_factory=dict)
    prefect_database_url: str | None = None
    timeout: float = 180.0

    @property
    def prefect_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """A client's environment on these servers with MASKCLS_HOME=``home``; ``extra`` wins
        (e.g. another MLFLOW_TRACKING_URI)."""
        return base_env(**{"PREFECT_API_URL": self.api_url, "MLFLOW_TRACKING_URI": self.mlflow_url,
                           "MASKCLS_HOME": str(home), **extra})

    def restart_prefect(self) -> None:
        """Stop Prefect's server (SIGTERM, then SIGKILL) and start it again: same port, same database."""
        port = urlsplit(self.api_url).port
        assert port is not None, self.api_url
        running = self.prefect or stack.Service.load(stack.StackPaths(self.home).pid_file(stack.PREFECT_SERVER))
        assert running is not None, "cannot find the reused Prefect server's pid file"
        running.stop()
        wait_until(lambda: not stack.port_open("127.0.0.1", port), 30, "the Prefect port to close")
        self.prefect = stack.start_prefect_server(self.home, port, env={**_PREFECT_SERVER_ENV, **self.prefect_env},
                                                  database_url=self.prefect_database_url)
        stack.wait_healthy(self.prefect.health_url, self.timeout, self.prefect)

    def stop(self) -> None:
        """Stop what this process started, both even if one fails (MLflow first: Prefect outlives the
        runs it tracks); a failure to stop is raised after."""
        errors = []
        for service in (self.mlflow, self.prefect):
            if service is not None:
                try:
                    service.stop()
                except RuntimeError as exc:
                    errors.append(str(exc))
        if errors:
            raise RuntimeError("; ".join(errors))

    # `with start_servers(...) as servers:` stops them on the way out (the live ones, after a restart too).
    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_servers(home: Path, prefect_port: int | None = None, mlflow_port: int | None = None,
                  prefect_env: Mapping[str, str] | None = None, prefect_database_url: str | None = None,
                  mlflow_backend_uri: str | None = None, timeout: float = 180.0) -> Servers:
    """Start both servers under ``home`` (free ports unless given) and wait until both answer
    their health checks; on any failure, stop what was started and raise."""
    prefect = mlflow = None
    try:
        prefect = stack.start_prefect_server(home, prefect_port or free_port(),
                                             env={**_PREFECT_SERVER_ENV, **(prefect_env or {})},
                                             database_url=prefect_database_url)
        mlflow = stack.start_mlflow_server(home, mlflow_port or free_port(), backend_uri=mlflow_backend_uri)
        assert prefect.url and prefect.health_url and mlflow.url and mlflow.health_url
        stack.wait_healthy(prefect.health_url, timeout, prefect)
        stack.wait_healthy(mlflow.health_url, timeout, mlflow)
    except BaseException:
        for service in (mlflow, prefect):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop()
        raise
    return Servers(home=Path(home), api_url=f"{prefect.url}/api", mlflow_url=mlflow.url, prefect=prefect,
                   mlflow=mlflow, prefect_env=dict(prefect_env or {}), prefect_database_url=prefect_database_url,
                   timeout=timeout)

