"""argv and environment of every process the stack runs.

docker-compose.yml runs the same commands; tests/integration/test_compose.py
checks that the two agree.
"""

from __future__ import annotations

from pathlib import Path

from maskcls.names import POOL_NAME, POOL_ONLY_FLAG

MLFLOW_START_SCRIPT = "mlflow/start.sh"
DEPLOY_SCRIPT = "flows/deploy.py"
PREFECT_HEALTH_PATH = "/api/health"
MLFLOW_HEALTH_PATH = "/health"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def url_host(host: str) -> str:
    """Address clients use for a bind address (a wildcard bind is reached on loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def prefect_server_command(host: str, port: int) -> list[str]:
    """argv of Prefect's server + UI."""
    return ["prefect", "server", "start", "--host", host, "--port", str(port)]


def prefect_server_env(
    prefect_home: Path | str, api_url: str, database_url: str
) -> dict[str, str]:
    """Environment of Prefect's server: its home, database, and the URL the UI calls."""
    return {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        # The UI calls the API at this URL from the browser; without it a server
        # bound to 0.0.0.0 would tell the browser to call 0.0.0.0.
        "PREFECT_UI_API_URL": api_url,
        # No network: no telemetry, no marketing calls from the UI.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }


def mlflow_server_command() -> list[str]:
    """argv of MLflow's server + UI (relative to the project root); configured by `mlflow_server_env`."""
    return ["bash", MLFLOW_START_SCRIPT]


def mlflow_server_env(
    backend_uri: str,
    artifacts_destination: str,
    host: str,
    port: int,
    allowed_hosts: str,
    workers: int | None = None,
) -> dict[str, str]:
    """Environment read by mlflow/start.sh."""
    env = {
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination,
        "MLFLOW_HOST": host,
        "MLFLOW_PORT": str(port),
        "MLFLOW_SERVER_ALLOWED_HOSTS": allowed_hosts,
    }
    if workers is not None:
        env["MLFLOW_WORKERS"] = str(workers)
    return env


def default_allowed_hosts(host: str, port: int) -> str:
    """Host headers MLflow accepts: loopback names plus the bind address, with and without port."""
    names = list(dict.fromkeys([*LOCAL_HOSTS, host]))
    if host in ("0.0.0.0", "::"):
        names.remove(host)
    return ",".join([*names, *(f"{name}:{port}" for name in names)])


def worker_command(
    pool: str = POOL_NAME,
    name: str | None = None,
    limit: int | None = None,
    healthcheck: bool = False,
) -> list[str]:
    """argv of one Prefect worker on the process pool `pool`."""
    argv = ["prefect", "worker", "start", "--pool", pool, "--type", "process"]
    # Never prompt to install anything: the process worker needs nothing extra.
    argv += ["--install-policy", "never"]
    if name:
        argv += ["--name", name]
    if limit is not None:
        argv += ["--limit", str(limit)]
    if healthcheck:
        argv.append("--with-healthcheck")
    return argv


def worker_env(
    home: Path | str,
    api_url: str,
    mlflow_uri: str,
    data_source: str | None,
    prefect_home: Path | str,
) -> dict[str, str]:
    """Environment of a worker; flow runs inherit it."""
    env = {
        "MASKCLS_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "MLFLOW_TRACKING_URI": mlflow_uri,
        # Shared by all workers so that Prefect's cached task results written by a
        # run on one worker are readable by a run on another.
        "PREFECT_HOME": str(prefect_home),
    }
    if data_source:
        env["MASKCLS_DATA_SOURCE"] = data_source
    return env


def deploy_command(pool_only: bool = False) -> list[str]:
    """argv of flows/deploy.py (relative to the project root)."""
    return ["python", DEPLOY_SCRIPT, *([POOL_ONLY_FLAG] if pool_only else [])]
