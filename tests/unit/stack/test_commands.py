"""The command builders that `up` runs and docker-compose.yml is checked against."""

from __future__ import annotations

from maskcls.names import POOL_NAME, POOL_ONLY_FLAG
from stack.commands import (
    default_allowed_hosts,
    deploy_command,
    mlflow_server_env,
    prefect_server_command,
    prefect_server_env,
    url_host,
    worker_command,
    worker_env,
)


def test_prefect_server_command_and_env() -> None:
    assert prefect_server_command("0.0.0.0", 4300) == [
        "prefect", "server", "start", "--host", "0.0.0.0", "--port", "4300",
    ]
    env = prefect_server_env("/p", "http://127.0.0.1:4300/api", "sqlite+aiosqlite:///db")
    assert env["PREFECT_HOME"] == "/p"
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4300/api"
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == "sqlite+aiosqlite:///db"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_mlflow_env_sets_workers_only_when_given() -> None:
    base = mlflow_server_env("sqlite:///m.db", "/a", "127.0.0.1", 5000, "h")
    assert base["MLFLOW_PORT"] == "5000" and "MLFLOW_WORKERS" not in base
    assert mlflow_server_env("sqlite:///m.db", "/a", "127.0.0.1", 5000, "h", workers=3)["MLFLOW_WORKERS"] == "3"


def test_allowed_hosts_drop_a_wildcard_bind_and_add_ports() -> None:
    assert default_allowed_hosts("0.0.0.0", 5000).split(",") == [
        "127.0.0.1", "localhost", "127.0.0.1:5000", "localhost:5000",
    ]
    assert "10.0.0.5:5000" in default_allowed_hosts("10.0.0.5", 5000).split(",")


def test_url_host_reaches_a_wildcard_bind_on_loopback() -> None:
    assert [url_host(h) for h in ("0.0.0.0", "::", "", "10.0.0.5")] == [
        "127.0.0.1", "127.0.0.1", "127.0.0.1", "10.0.0.5",
    ]


def test_worker_command_flags() -> None:
    assert worker_command() == [
        "prefect", "worker", "start", "--pool", POOL_NAME, "--type", "process", "--install-policy", "never",
    ]
    argv = worker_command("p", name="maskcls-worker-1", limit=2, healthcheck=True)
    assert argv[argv.index("--name") + 1] == "maskcls-worker-1"
    assert argv[argv.index("--limit") + 1] == "2"
    assert argv[-1] == "--with-healthcheck"


def test_worker_env_passes_the_data_source_only_when_set() -> None:
    env = worker_env("/h", "http://a/api", "http://m", None, "/h/stack/prefect")
    assert env == {
        "MASKCLS_HOME": "/h",
        "PREFECT_API_URL": "http://a/api",
        "MLFLOW_TRACKING_URI": "http://m",
        "PREFECT_HOME": "/h/stack/prefect",
    }
    assert worker_env("/h", "a", "m", "/data", "/p")["MASKCLS_DATA_SOURCE"] == "/data"


def test_deploy_command() -> None:
    assert deploy_command() == ["python", "flows/deploy.py"]
    assert deploy_command(pool_only=True) == ["python", "flows/deploy.py", POOL_ONLY_FLAG]
