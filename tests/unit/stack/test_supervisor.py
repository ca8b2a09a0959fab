"""StackConfig from Settings, and `status` against a fake Prefect server and real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maskcls.config import Settings
from maskcls.names import DEPLOYMENTS
from stack import cli
from stack.paths import StackPaths
from stack.processes import Service, spawn
from stack.services import PREFECT_SERVER
from stack.supervisor import StackConfig, status
from tests.unit.stack.fake_http import FakeServer


def config_for(home: Path, **env: str) -> StackConfig:
    return StackConfig.from_settings(Settings.from_env({"MASKCLS_HOME": str(home), **env}))


def test_a_linked_data_source_keeps_the_path_the_user_gave(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    config = config_for(tmp_path / "home", MASKCLS_DATA_SOURCE=str(tmp_path / "link"))
    assert config.data_source == str(tmp_path / "link")


def test_config_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    config = config_for(
        tmp_path / "home", MASKCLS_WORKER_LIMIT="0", MASKCLS_DATA_SOURCE="data",
        MASKCLS_BIND_HOST="0.0.0.0", MASKCLS_PREFECT_PORT="4300", MASKCLS_STACK_TIMEOUT="5",
    )
    assert config.home == (tmp_path / "home").resolve()
    assert config.worker_limit is None  # 0 means no limit
    assert config.data_source == str((tmp_path / "data").resolve())  # workers run elsewhere
    assert config.api_url == "http://127.0.0.1:4300/api"  # a wildcard bind is reached on loopback
    assert config.timeout == 5.0
    defaults = config_for(tmp_path / "home")
    assert (defaults.host, defaults.prefect_port, defaults.mlflow_port, defaults.workers) == (
        "127.0.0.1", 4200, 5000, 2,
    )
    assert defaults.worker_limit == 1 and defaults.data_source is None


@pytest.fixture
def prefect_service(tmp_path: Path, fake_server: FakeServer) -> Iterator[Service]:
    """A recorded prefect-server: a real process whose health URL is the fake server's."""
    service = spawn(
        StackPaths(tmp_path.resolve()), PREFECT_SERVER, ["sleep", "300"], {},
        url=fake_server.url, health_url=f"{fake_server.url}/api/health",
    )
    yield service
    service.stop(timeout=5)


def test_status_lists_every_deployment_and_fails_on_a_missing_one(
    tmp_path: Path, fake_server: FakeServer, prefect_service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = DEPLOYMENTS[-1]
    fake_server.routes = {"GET /api/health": (200, True)} | {
        f"GET /api/deployments/name/{flow}/{name}": (200, {"id": name}) for flow, name in DEPLOYMENTS[:-1]
    }
    config = config_for(tmp_path, MASKCLS_PREFECT_PORT=str(fake_server.port))

    found = status(config)

    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines[PREFECT_SERVER][1:4] == ["running", "pid", str(prefect_service.pid)]
    for flow, name in DEPLOYMENTS:
        assert lines[f"{flow}/{name}"][1] == ("missing" if (flow, name) == missing else "registered")
    assert found.missing_deployments == ["/".join(missing)]
    assert not found.ok

    fake_server.routes[f"GET /api/deployments/name/{missing[0]}/{missing[1]}"] = (200, {"id": "x"})
    assert status(config).ok


def test_status_of_a_stopped_service_is_not_ok(
    tmp_path: Path, fake_server: FakeServer, prefect_service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    prefect_service.stop(timeout=5)
    prefect_service.save()  # the pid file of a process that died
    found = status(config_for(tmp_path, MASKCLS_PREFECT_PORT=str(fake_server.port)))
    assert found.services[0]["alive"] is False and found.missing_deployments is None
    assert not found.ok
    assert capsys.readouterr().out.split()[:2] == [PREFECT_SERVER, "stopped"]


def test_cli_status_exits_3_when_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKCLS_HOME", str(tmp_path))
    result = CliRunner().invoke(cli.app, ["status"])
    assert result.exit_code == cli.NOT_OK, result.output
    assert "nothing recorded" in result.output


def test_cli_reports_a_bad_setting_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKCLS_PREFECT_PORT", "not-a-port")
    result = CliRunner().invoke(cli.app, ["status"])
    assert result.exit_code == 1
    assert "MASKCLS_PREFECT_PORT" in result.output and "Traceback" not in result.output
