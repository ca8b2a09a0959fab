"""Start single services: Prefect's server, MLflow's server, a worker, the one-shot deploy.

Tests and benchmarks use these directly; `stack.supervisor.up` composes them.
Each returns a `Service` without waiting for it (see `stack.health.wait_healthy`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from maskcls.names import POOL_NAME
from stack.commands import (
    MLFLOW_HEALTH_PATH,
    PREFECT_HEALTH_PATH,
    default_allowed_hosts,
    deploy_command,
    mlflow_server_command,
    mlflow_server_env,
    prefect_server_command,
    prefect_server_env,
    url_host,
    worker_command,
    worker_env,
)
from stack.health import DEFAULT_TIMEOUT, port_open
from stack.paths import StackPaths
from stack.processes import Service, spawn

PREFECT_SERVER = "prefect-server"
MLFLOW_SERVER = "mlflow-server"
DEPLOY = "deploy"
WORKER_PREFIX = "worker-"


def _check_port_free(host: str, port: int, name: str, variable: str) -> None:
    if port_open(host, port):
        raise RuntimeError(
            f"cannot start {name}: port {port} on {host} is taken by a process this "
            f"stack did not start (set {variable})"
        )


def start_prefect_server(
    home: Path | str,
    port: int,
    env: Mapping[str, str | None] | None = None,
    database_url: str | None = None,
    host: str = "127.0.0.1",
) -> Service:
    """Start Prefect's server + UI with PREFECT_HOME under `home`/stack (does not wait).

    `database_url` (e.g. postgresql+asyncpg://...) replaces the SQLite database
    $home/stack/prefect/prefect.db; `env` adds or (with None) removes variables,
    e.g. PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS.
    """
    paths = StackPaths(Path(home).resolve())
    _check_port_free(host, port, PREFECT_SERVER, "MASKCLS_PREFECT_PORT")
    paths.make()
    url = f"http://{url_host(host)}:{port}"
    db = database_url or f"sqlite+aiosqlite:///{paths.prefect_home / 'prefect.db'}"
    service_env: dict[str, str | None] = {
        **prefect_server_env(paths.prefect_home, f"{url}/api", db),
        # The server must not take an outer PREFECT_API_URL for its own.
        "PREFECT_API_URL": f"{url}/api",
        **(env or {}),
    }
    return spawn(
        paths,
        PREFECT_SERVER,
        prefect_server_command(host, port),
        service_env,
        url=url,
        health_url=f"{url}{PREFECT_HEALTH_PATH}",
    )


def start_mlflow_server(
    home: Path | str,
    port: int,
    backend_uri: str | None = None,
    artifacts_dir: Path | str | None = None,
    host: str = "127.0.0.1",
    env: Mapping[str, str | None] | None = None,
    allowed_hosts: str | None = None,
    workers: int | None = 1,
) -> Service:
    """Start MLflow's server + UI through mlflow/start.sh (does not wait).

    Defaults: SQLite $home/stack/mlflow.db and artifacts in $home/stack/mlartifacts.
    """
    paths = StackPaths(Path(home).resolve())
    _check_port_free(host, port, MLFLOW_SERVER, "MASKCLS_MLFLOW_PORT")
    paths.make()
    url = f"http://{url_host(host)}:{port}"
    service_env: dict[str, str | None] = {
        **mlflow_server_env(
            backend_uri=backend_uri or f"sqlite:///{paths.mlflow_db}",
            artifacts_destination=str(artifacts_dir or paths.artifacts),
            host=host,
            port=port,
            allowed_hosts=allowed_hosts or default_allowed_hosts(host, port),
            workers=workers,
        ),
        **(env or {}),
    }
    return spawn(
        paths,
        MLFLOW_SERVER,
        mlflow_server_command(),
        service_env,
        url=url,
        health_url=f"{url}{MLFLOW_HEALTH_PATH}",
    )


def start_worker(
    home: Path | str,
    index: int,
    api_url: str,
    mlflow_uri: str,
    data_source: str | None = None,
    pool: str = POOL_NAME,
    limit: int | None = 1,
    env: Mapping[str, str | None] | None = None,
) -> Service:
    """Start worker number `index` (named maskcls-worker-<index>) on `pool` (does not wait)."""
    paths = StackPaths(Path(home).resolve())
    name = f"{WORKER_PREFIX}{index}"
    service_env: dict[str, str | None] = {
        **worker_env(paths.home, api_url, mlflow_uri, data_source, paths.prefect_home),
        **(env or {}),
    }
    return spawn(
        paths,
        name,
        worker_command(pool, name=f"maskcls-{name}", limit=limit),
        service_env,
    )


def run_deploy(
    home: Path | str,
    api_url: str,
    data_source: str | None = None,
    pool_only: bool = False,
    env: Mapping[str, str | None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Run flows/deploy.py against `api_url` to completion (output in logs/deploy.log)."""
    paths = StackPaths(Path(home).resolve())
    service_env: dict[str, str | None] = {
        "PREFECT_API_URL": api_url,
        "MASKCLS_HOME": str(paths.home),
        "MASKCLS_DATA_SOURCE": data_source,
        "PREFECT_HOME": str(paths.prefect_home),
        **(env or {}),
    }
    service = spawn(paths, DEPLOY, deploy_command(pool_only), service_env)
    assert service._popen is not None
    try:
        code = service._popen.wait(timeout)
    except subprocess.TimeoutExpired:
        service.stop()
        raise TimeoutError(f"flows/deploy.py did not finish within {timeout:.0f}s") from None
    if service.pid_file is not None:
        service.pid_file.unlink(missing_ok=True)
    if code != 0:
        raise RuntimeError(f"flows/deploy.py failed ({code}); {service.log_tail()}")
