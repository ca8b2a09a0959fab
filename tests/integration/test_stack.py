"""`python -m stack up|status|down` for real: both servers, the work pool with two
workers, every deployment, no duplicates on a second `up`, no process left after `down`.

The process checks read /proc here rather than trusting the stack's own bookkeeping.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import stack
from maskcls.config import Settings
from maskcls.names import DEPLOYMENTS, FLOW_NAME, ON_DEMAND, POOL_NAME, SCHEDULED
from tests.support import REPO
from tests.support.data import SHARED
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

# The deployments with a one-run limit whose run form a user fills in.
FORM_DEPLOYMENTS = (ON_DEMAND, SCHEDULED)
TRAIN_PARAMETERS = (
    "profile", "source", "epochs", "learning_rate", "batch_size", "max_images", "refresh", "overrides",
)


def running(pid: int) -> bool:
    """The process exists and is not a zombie (nobody may reap orphans in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def tagged(tag: str) -> set[int]:
    """Running processes whose environment carries the stack's tag."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{stack.TAG_ENV}={tag}".encode() in environ and running(int(entry)):
            found.add(int(entry))
    return found


def recorded_pids(home: Path) -> dict[str, int]:
    """Service name -> pid, from the stack's pid files."""
    import json

    return {
        p.stem: json.loads(p.read_text())["pid"] for p in (home / "stack" / "run").glob("*.json")
    }


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def run_stack(command: str, env: dict[str, str], timeout: float = 420) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack", command],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def kill_tag(tag: str) -> None:
    """Last-resort cleanup so a failing test leaves nothing behind for the next one."""
    for pid in tagged(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "MASKCLS_HOME": str(home),
        "MASKCLS_PREFECT_PORT": str(free_port()),
        "MASKCLS_MLFLOW_PORT": str(free_port()),
        "MASKCLS_WORKERS": "2",
        "MASKCLS_DATA_SOURCE": str(SHARED),
        "MASKCLS_STACK_TIMEOUT": "180",
    }
    # The integration conftest points these at its own session servers.
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(key, None)
    yield env
    tag = str((home / "stack").resolve())
    if tagged(tag):
        run_stack("down", env, timeout=120)
    kill_tag(tag)


def read_prefect(api_url: str) -> dict:
    """The pool, its online workers and the run-form deployments, through Prefect's client."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return {
            "pool": client.read_work_pool(POOL_NAME),
            "workers": [
                w for w in client.read_workers_for_work_pool(POOL_NAME) if w.status.value == "ONLINE"
            ],
            "deployments": {
                name: client.read_deployment_by_name(f"{FLOW_NAME}/{name}") for name in FORM_DEPLOYMENTS
            },
        }


@pytest.mark.timeout(900)
def test_up_twice_then_down_leaves_nothing(stack_env: dict[str, str]) -> None:
    home = Path(stack_env["MASKCLS_HOME"])
    tag = str((home / "stack").resolve())
    prefect_port, mlflow_port = int(stack_env["MASKCLS_PREFECT_PORT"]), int(stack_env["MASKCLS_MLFLOW_PORT"])
    prefect_url, mlflow_url = f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{mlflow_port}"

    first = run_stack("up", stack_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Prefect UI:   {prefect_url}" in first.stdout
    assert f"MLflow UI:    {mlflow_url}" in first.stdout

    # Both servers answer their health checks, and the UIs are served.
    assert httpx.get(f"{prefect_url}/api/health", timeout=10).json() is True
    assert httpx.get(f"{mlflow_url}/health", timeout=10).text.strip() == "OK"
    assert "<html" in httpx.get(prefect_url, timeout=10).text.lower()
    assert "<html" in httpx.get(mlflow_url, timeout=10).text.lower()
    # Logs went to files, one per service.
    logs = home / "stack" / "logs"
    assert {"prefect-server.log", "mlflow-server.log", "worker-1.log", "worker-2.log", "deploy.log"} <= {
        p.name for p in logs.iterdir()
    }

    state = read_prefect(f"{prefect_url}/api")
    assert state["pool"].type == "process"
    assert sorted(w.name for w in state["workers"]) == ["maskcls-worker-1", "maskcls-worker-2"]
    for name, deployment in state["deployments"].items():
        assert deployment.work_pool_name == POOL_NAME, name
        assert deployment.entrypoint == "flows/train.py:train_flow", name
        # Runs start in this project directory: no image, no pushed code.
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ], name
        assert deployment.global_concurrency_limit is not None, name
        assert deployment.global_concurrency_limit.limit == 1, name
        assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW", name
        # The run form offers the workers' data source and describes every parameter.
        assert deployment.parameters.get("source") == [str(SHARED)], name  # a list of parts
        properties = deployment.parameter_openapi_schema["properties"]
        assert set(TRAIN_PARAMETERS) <= set(properties), name
        assert all(properties[p].get("description") for p in TRAIN_PARAMETERS), properties
    assert state["deployments"][ON_DEMAND].schedules == []
    (schedule,) = state["deployments"][SCHEDULED].schedules
    assert schedule.active
    defaults = Settings.from_env({})
    assert schedule.schedule.cron == defaults.retrain_cron
    assert schedule.schedule.timezone == defaults.retrain_tz

    services = recorded_pids(home)
    assert set(services) == {"prefect-server", "mlflow-server", "worker-1", "worker-2"}
    assert all(running(pid) for pid in services.values()), services
    processes = tagged(tag)
    assert set(services.values()) <= processes

    # A second `up` finds everything running and starts nothing.
    second = run_stack("up", stack_env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already running: mlflow-server, prefect-server, worker-1, worker-2" in second.stdout
    assert recorded_pids(home) == services
    assert tagged(tag) == processes
    assert len(read_prefect(f"{prefect_url}/api")["workers"]) == 2

    shown = run_stack("status", stack_env, timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = {line.split()[0]: line.split() for line in shown.stdout.splitlines() if line.strip()}
    for name, pid in services.items():
        assert rows[name][1:4] == ["running", "pid", str(pid)], shown.stdout
    # Every deployment flows/deploy.py registers is checked, not only the run-form ones.
    for flow, name in DEPLOYMENTS:
        assert rows[f"{flow}/{name}"][1] == "registered", shown.stdout

    stopped = run_stack("down", stack_env, timeout=180)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert [pid for pid in processes if running(pid)] == []
    assert tagged(tag) == set()
    assert not port_open(prefect_port) and not port_open(mlflow_port)
    assert recorded_pids(home) == {}

    after = run_stack("status", stack_env, timeout=60)
    assert after.returncode == 3, after.stdout + after.stderr


@pytest.mark.timeout(120)
def test_up_refuses_a_port_taken_by_another_process(stack_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(stack_env["MASKCLS_PREFECT_PORT"])))
        squatter.listen()
        result = run_stack("up", stack_env, timeout=60)
    assert result.returncode == 1
    assert f"port {stack_env['MASKCLS_PREFECT_PORT']}" in result.stderr
    assert tagged(str((Path(stack_env["MASKCLS_HOME"]) / "stack").resolve())) == set()


@pytest.mark.timeout(60)
def test_stop_reaches_processes_that_left_the_group(tmp_path: Path) -> None:
    """Prefect's process worker starts flow runs in their own session; stopping the worker stops them."""
    paths = stack.StackPaths(tmp_path.resolve())
    pid_file = tmp_path / "escaped.pid"
    service = stack.spawn(
        paths,
        "worker-9",
        # Like a worker and its flow run: the child leaves the process group via setsid.
        ["bash", "-c", f"setsid sleep 300 & echo $! > {pid_file}; exec sleep 300"],
        {},
    )
    try:
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        escaped = int(pid_file.read_text())
        # `setsid` needs a moment between fork and leaving the group.
        while os.getpgid(escaped) == service.pid and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running(escaped) and os.getpgid(escaped) != service.pid

        service.stop(timeout=5)

        assert not running(service.pid)
        assert not running(escaped)
        assert not paths.pid_file("worker-9").exists()
    finally:
        kill_tag(paths.tag)
