"""docker-compose.yml, parsed (no Docker here): its services, commands, ports, environment,
health checks and start order, and that it runs what `python -m stack up` runs.

The commands and environment names come from the stack package's builders, not from copies here.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import stack
from maskcls.config import Settings
from maskcls.names import POOL_NAME

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICES = {"postgres", "prefect-server", "mlflow", "worker", "deploy"}
PROJECT_IMAGE_SERVICES = ("prefect-server", "worker", "deploy")
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against `env` (default: unset)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env and env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return f"<{name}>"  # required: compose refuses to start without it
        return ""

    return VARIABLE.sub(one, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services with variables at their defaults (as with an .env that sets only the secrets)."""
    return interpolate(raw["services"])


def env_of(service: dict[str, Any]) -> dict[str, Any]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return environment


def depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def healthcheck_urls(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    return re.findall(r"https?://[^'\"\s]+", " ".join(test) if isinstance(test, list) else test)


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port."""
    result = []
    for port in service.get("ports", []):
        assert isinstance(port, str), f"use the short 'ip:host:container' form: {port!r}"
        ip, host_port, container_port = port.rsplit(":", 2)
        result.append((ip, int(host_port), int(container_port)))
    return result


def test_services_and_volumes(raw: dict[str, Any]) -> None:
    assert set(raw["services"]) == SERVICES
    assert {"postgres-data", "mlflow-artifacts", "maskcls-home"} <= set(raw["volumes"])


def test_ports_are_published_on_loopback_only_and_the_database_not_at_all(services: dict[str, Any]) -> None:
    defaults = stack.StackConfig.from_settings(Settings.from_env({}))
    assert "ports" not in services["postgres"]
    assert "ports" not in services["worker"], "scaled workers cannot share a host port"
    assert "ports" not in services["deploy"]
    assert published(services["prefect-server"]) == [("127.0.0.1", defaults.prefect_port, 4200)]
    assert published(services["mlflow"]) == [("127.0.0.1", defaults.mlflow_port, 5000)]
    # The published port follows the same variable the stack reads.
    changed = interpolate(yaml.safe_load(COMPOSE_FILE.read_text())["services"],
                          {"MASKCLS_PREFECT_PORT": "4300", "MASKCLS_MLFLOW_PORT": "5300"})
    assert published(changed["prefect-server"]) == [("127.0.0.1", 4300, 4200)]
    assert published(changed["mlflow"]) == [("127.0.0.1", 5300, 5000)]
    assert env_of(changed["prefect-server"])["PREFECT_UI_API_URL"] == "http://127.0.0.1:4300/api"


def test_postgres_creates_both_databases(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15")
    init_mounts = [v for v in postgres["volumes"] if v.split(":")[1] == "/docker-entrypoint-initdb.d"]
    assert len(init_mounts) == 1
    init_dir = REPO / init_mounts[0].split(":")[0]
    scripts = sorted(init_dir.glob("*.sh"))
    assert scripts, f"no init script in {init_dir}"
    sql = "\n".join(s.read_text() for s in scripts)
    assert "CREATE DATABASE prefect" in sql and "CREATE DATABASE mlflow" in sql
    env = env_of(postgres)
    for key in ("POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD"):
        assert env[key] == f"<{key}>", f"{key} must be required from .env, not defaulted"
    assert any("/var/lib/postgresql/data" in v for v in postgres["volumes"])
    test = " ".join(postgres["healthcheck"]["test"])
    assert "-d prefect" in test and "-d mlflow" in test


def test_prefect_server_runs_the_stack_command_on_postgres(services: dict[str, Any]) -> None:
    server = services["prefect-server"]
    assert server["command"] == stack.prefect_server_command("0.0.0.0", 4200)
    env = env_of(server)
    expected = stack.prefect_server_env("/home", "http://x/api", "sqlite://")
    assert set(expected) <= set(env)
    url = urlsplit(env["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert url.scheme == "postgresql+asyncpg"
    assert (url.hostname, url.port, url.path) == ("postgres", 5432, "/prefect")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == expected["PREFECT_SERVER_ANALYTICS_ENABLED"]
    assert depends(server) == {"postgres": "service_healthy"}
    assert healthcheck_urls(server) == [f"http://127.0.0.1:4200{stack.PREFECT_HEALTH_PATH}"]


def test_mlflow_runs_the_shared_start_script_on_postgres(services: dict[str, Any]) -> None:
    mlflow = services["mlflow"]
    assert mlflow["command"] == stack.mlflow_server_command()
    assert mlflow["build"] == {"context": ".", "dockerfile": "mlflow/Dockerfile"}
    dockerfile = (REPO / "mlflow" / "Dockerfile").read_text()
    # The command's relative script path resolves inside the image.
    assert "WORKDIR /app" in dockerfile
    assert f"COPY {stack.MLFLOW_START_SCRIPT} ./{stack.MLFLOW_START_SCRIPT}" in dockerfile
    env = env_of(mlflow)
    expected = stack.mlflow_server_env("sqlite://", "/a", "0.0.0.0", 5000, "h", workers=2)
    assert set(expected) <= set(env)
    # Every variable the stack sets is one mlflow/start.sh (or MLflow itself) reads.
    script = (REPO / stack.MLFLOW_START_SCRIPT).read_text()
    for key in expected:
        assert key in script, key
    assert (env["MLFLOW_HOST"], env["MLFLOW_PORT"]) == ("0.0.0.0", "5000")
    backend = urlsplit(env["MLFLOW_BACKEND_STORE_URI"])
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed.
    assert backend.scheme == "postgresql+psycopg2"
    assert (backend.hostname, backend.port, backend.path) == ("postgres", 5432, "/mlflow")
    artifacts = env["MLFLOW_ARTIFACTS_DESTINATION"]
    assert any(v.startswith("mlflow-artifacts:") and v.split(":")[1] == artifacts for v in mlflow["volumes"])
    assert "--serve-artifacts" in script
    # Workers reach MLflow by its service name; the server must accept that Host header,
    # and the browser's on the published port.
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    worker_host = urlsplit(env_of(services["worker"])["MLFLOW_TRACKING_URI"]).netloc
    for host in (worker_host, "127.0.0.1:5000", "localhost:5000"):
        assert any(fnmatch.fnmatch(host, pattern) for pattern in allowed), host
    assert depends(mlflow) == {"postgres": "service_healthy"}
    assert healthcheck_urls(mlflow) == [f"http://127.0.0.1:5000{stack.MLFLOW_HEALTH_PATH}"]


def test_worker_runs_the_stack_worker_command_and_scales(services: dict[str, Any]) -> None:
    worker = services["worker"]
    defaults = stack.StackConfig.from_settings(Settings.from_env({}))
    assert worker["command"] == stack.worker_command(POOL_NAME, limit=defaults.worker_limit, healthcheck=True)
    assert "container_name" not in worker, "--scale worker=N needs generated names"
    env = env_of(worker)
    assert set(stack.worker_env("/h", "http://a/api", "http://m", "/data/x", "/p")) <= set(env)
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert urlsplit(env["MLFLOW_TRACKING_URI"]).netloc == "mlflow:5000"
    # Taken from the shell or .env; unset (the pinned default) when neither sets it.
    assert env["MASKCLS_DATA_SOURCE"] is None
    # All replicas share one MASKCLS_HOME (cache, store, locks) on one volume.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
    assert mounts["/data"] == "maskcls-home"
    assert env["MASKCLS_HOME"].startswith("/data/") and env["PREFECT_HOME"].startswith("/data/")
    assert depends(worker) == {
        "prefect-server": "service_healthy",
        "mlflow": "service_healthy",
        "deploy": "service_completed_successfully",
    }
    assert healthcheck_urls(worker) == ["http://127.0.0.1:8080/health"]


def test_deploy_is_one_shot_and_waits_for_the_server(services: dict[str, Any]) -> None:
    deploy = services["deploy"]
    assert deploy["command"] == stack.deploy_command()
    assert str(deploy.get("restart")) == "no"
    env = env_of(deploy)
    assert env["PREFECT_API_URL"] == env_of(services["worker"])["PREFECT_API_URL"]
    for key in ("MASKCLS_DATA_SOURCE", "MASKCLS_RETRAIN_CRON", "MASKCLS_RETRAIN_TZ"):
        assert key in env and env[key] is None, key
    assert depends(deploy) == {"prefect-server": "service_healthy"}


def test_project_image_is_built_from_the_lock_then_the_project(raw: dict[str, Any]) -> None:
    for name in PROJECT_IMAGE_SERVICES:
        service = raw["services"][name]
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
        assert service["image"] == raw["services"]["worker"]["image"], name
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    assert lines[[line.startswith("FROM") for line in lines].index(True)] == "FROM python:3.11-slim"
    lock = lines.index("RUN pip install -r requirements.lock")
    project = lines.index("RUN pip install --no-deps -e .")
    assert lines.index("COPY requirements.lock ./") < lock < lines.index("COPY flows ./flows") < project
    for service in ("prefect-server", "mlflow", "worker"):
        assert raw["services"][service]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), service


def test_credentials_come_from_an_env_file_that_git_ignores(raw: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert {"POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD"} <= required
    example = (REPO / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.M))
    assert required <= defined
    # Every variable compose interpolates is documented in the example.
    used = {name for name, _, _ in VARIABLE.findall(text)}
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, flags=re.M))
    assert used <= documented, used - documented
    assert ".env" in (REPO / ".gitignore").read_text().split()
