"""docker-compose.yml's topology without Docker: a real PostgreSQL (one server, a database each
for Prefect and MLflow), Prefect's server and MLflow's server on it, the process work pool
`maskcls` with two workers and the registered deployments. Two training runs are started at
once through Prefect's API; both must complete side by side, land in MLflow's Postgres
database, and leave one champion. Then compose's services are compared with the processes
that ran, and the whole topology must stop without leaving a process behind.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import stack
from maskcls.names import DEPLOYMENTS, FLOW_NAME, ON_DEMAND, POOL_NAME, SCHEDULED
from tests.integration import pg_util
from tests.support.data import copy_subset

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REGISTERED_MODEL = "face-mask-classifier"
PER_CLASS = 30
RUN_TIMEOUT = 360


@pytest.fixture(scope="module")
def top(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pg_util.Topology]:
    root = tmp_path_factory.mktemp("topology")
    data = copy_subset(root / "data", PER_CLASS)
    topology = pg_util.Topology(root=root, data=data, n_workers=2).start()
    try:
        yield topology
    finally:
        topology.stop()  # a no-op when test_everything_stops already did it


@pytest.fixture(scope="module")
def two_runs(top: pg_util.Topology) -> dict[str, Any]:
    """One run of each training deployment, created back to back (on-demand alone would cancel a second).

    Their learning rates differ: with the same settings the later run would, by design, take
    the earlier one's model from the cache and register nothing.
    """
    created = {name: pg_util.create_flow_run(top.api_url, f"{FLOW_NAME}/{name}",
                                             {"profile": "smoke", "learning_rate": rate})
               for name, rate in ((ON_DEMAND, 1e-3), (SCHEDULED, 3e-3))}
    ids = [run["id"] for run in created.values()]
    runs = pg_util.wait_final(top, ids, RUN_TIMEOUT)
    top.seen |= top.all_processes()
    return {name: runs[run["id"]] for name, run in created.items()}


def _proc_argv(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def _proc_env(pid: int) -> dict[str, str]:
    pairs = (item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.timeout(600)
def test_two_runs_at_once_complete_in_mlflow_on_postgres_with_one_champion(
    top: pg_util.Topology, two_runs: dict[str, Any]
) -> None:
    from mlflow import MlflowClient

    for name, run in two_runs.items():
        assert run["state"]["type"] == "COMPLETED", (
            f"{name}: {run['state']}\n{pg_util.flow_run_logs(top.api_url, run['id'])}\n{top.worker_logs()}"
        )
    # Side by side on the two workers, not one after the other.
    starts = [_timestamp(run["start_time"]) for run in two_runs.values()]
    ends = [_timestamp(run["end_time"]) for run in two_runs.values()]
    assert max(starts) < min(ends), f"the runs did not overlap: starts {starts}, ends {ends}"

    # Through MLflow's server...
    client = MlflowClient(tracking_uri=top.mlflow_url)
    experiment = client.get_experiment_by_name("face-mask")
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id], max_results=100)
    by_flow_run = {r.data.tags.get("prefect_flow_run_id"): r for r in found}
    mlflow_runs = {name: by_flow_run[run["id"]] for name, run in two_runs.items()}
    for name, run in mlflow_runs.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags["source"] == str(top.data), "the deployment's default source is the workers' data"
        assert run.data.tags["profile"] == "smoke"
        assert run.data.metrics["test_accuracy"] >= 0
        assert run.data.tags["promotion"] in ("promoted", "not_better"), run.data.tags
    run_ids = {run.info.run_id for run in mlflow_runs.values()}
    versions = {v.run_id: v for v in client.search_model_versions(f"name='{REGISTERED_MODEL}'")}
    assert run_ids <= set(versions), "each run registered a version"
    mine = [client.get_model_version(REGISTERED_MODEL, versions[r].version) for r in run_ids]

    champion = client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    assert champion.run_id in run_ids
    assert champion.tags["promotion"] == "promoted"
    (other,) = [v for v in mine if v.version != champion.version]
    # The compare-and-set ran one promotion after the other, each against what stood then.
    if other.tags["promotion"] == "promoted":
        assert champion.tags["promotion_reason"].startswith("better"), champion.tags
        assert f"champion v{other.version} " in champion.tags["promotion_reason"]
        assert other.tags["promotion_reason"] == "no champion yet"
    else:
        assert other.tags["promotion"] == "not_better", other.tags
        assert champion.tags["promotion_reason"] == "no champion yet"
        assert f"champion v{champion.version} " in other.tags["promotion_reason"]

    # ...and in the Postgres `mlflow` database itself.
    pg = top.pg
    rows = pg.query("mlflow", "SELECT run_uuid, status FROM runs WHERE run_uuid = ANY(%s)", (list(run_ids),))
    assert dict(rows) == {r: "FINISHED" for r in run_ids}
    rows = pg.query("mlflow", "SELECT value FROM tags WHERE key = 'prefect_flow_run_id' AND run_uuid = ANY(%s)",
                    (list(run_ids),))
    assert {v for (v,) in rows} == {run["id"] for run in two_runs.values()}
    rows = pg.query("mlflow", "SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'champion'",
                    (REGISTERED_MODEL,))
    assert rows == [(int(champion.version),)], "exactly one champion alias"
    rows = pg.query("mlflow", "SELECT run_id FROM model_versions WHERE name = %s", (REGISTERED_MODEL,))
    assert run_ids <= {r for (r,) in rows}
    # Prefect's runs are in its Postgres database.
    rows = pg.query("prefect", "SELECT state_type FROM flow_run WHERE id::text = ANY(%s)",
                    ([run["id"] for run in two_runs.values()],))
    assert [s for (s,) in rows] == ["COMPLETED", "COMPLETED"]
    # Artifacts went through MLflow's server into its artifacts folder, not the workers' own.
    served = top.home / "stack" / "mlartifacts"
    assert any(p.name == "model.keras" for p in served.rglob("*")), f"no model under {served}"


def _timestamp(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


@pytest.mark.timeout(120)
def test_compose_services_agree_with_what_ran(top: pg_util.Topology) -> None:
    """docker-compose.yml's commands and environment are the ones this topology ran."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]

    def env_keys(service: dict[str, Any]) -> dict[str, Any]:
        env = service.get("environment") or {}
        return env if isinstance(env, dict) else dict(item.split("=", 1) if "=" in item else (item, None)
                                                      for item in env)

    def interpolate(value: str) -> str:  # ${VAR:-default} -> default, ${VAR:?msg} -> <VAR>
        return re.sub(r"\$\{([A-Z0-9_]+)(?::-([^}]*)|:\?[^}]*)?\}",
                      lambda m: m.group(2) if m.group(2) is not None else f"<{m.group(1)}>", value)

    # Postgres: compose's init script is the one that made this server's databases.
    init = [v.split(":")[0] for v in services["postgres"]["volumes"] if "/docker-entrypoint-initdb.d" in v]
    assert [(REPO / p).resolve() for p in init] == [pg_util.INIT_SCRIPT.parent.resolve()]
    assert {"prefect", "mlflow"} <= {d for (d,) in top.pg.query("prefect", "SELECT datname FROM pg_database")}
    assert "pg_trgm" in {e for (e,) in top.pg.query("prefect", "SELECT extname FROM pg_extension")}

    # Prefect's server: the same command (host and port aside) and environment, on Postgres.
    server = services["prefect-server"]
    argv = _proc_argv(top.prefect.pid)
    port = urlsplit(top.prefect.url).port
    expected = [{"0.0.0.0": "127.0.0.1", "4200": str(port)}.get(a, a) for a in server["command"]]
    assert Path(argv[1]).name == expected[0] and argv[2:] == expected[1:], argv
    env = _proc_env(top.prefect.pid)
    assert set(env_keys(server)) <= set(env)
    ran_db, compose_db = (urlsplit(u) for u in (env["PREFECT_API_DATABASE_CONNECTION_URL"],
                                                 interpolate(env_keys(server)["PREFECT_API_DATABASE_CONNECTION_URL"])))
    assert (ran_db.scheme, ran_db.path) == (compose_db.scheme, compose_db.path) == ("postgresql+asyncpg", "/prefect")

    # MLflow's server: compose runs mlflow/start.sh, which exec's the server with this environment.
    mlflow_service = services["mlflow"]
    assert mlflow_service["command"] == stack.mlflow_server_command()
    env = _proc_env(top.mlflow.pid)
    assert set(env_keys(mlflow_service)) <= set(env)
    assert "--serve-artifacts" in _proc_argv(top.mlflow.pid)
    ran_db = urlsplit(env["MLFLOW_BACKEND_STORE_URI"])
    compose_db = urlsplit(interpolate(env_keys(mlflow_service)["MLFLOW_BACKEND_STORE_URI"]))
    assert ran_db.path == compose_db.path == "/mlflow"

    # Workers: the same pool, type, install policy and limit, and the environment compose gives them.
    worker = services["worker"]
    compose_argv = [interpolate(a) for a in worker["command"]]
    for service in top.workers:
        argv = _proc_argv(service.pid)
        for flag in ("--pool", "--type", "--install-policy", "--limit"):
            assert argv[argv.index(flag) + 1] == compose_argv[compose_argv.index(flag) + 1], flag
        assert argv[argv.index("--pool") + 1] == POOL_NAME
        env = _proc_env(service.pid)
        assert set(env_keys(worker)) <= set(env)
        assert env["MLFLOW_TRACKING_URI"] == top.mlflow_url and env["PREFECT_API_URL"] == top.api_url
    # The one-shot deploy service ran flows/deploy.py (its log is the stack's), which registered all.
    assert services["deploy"]["command"] == stack.deploy_command()
    deploy_log = (top.home / "stack" / "logs" / "deploy.log").read_text()
    for flow, name in DEPLOYMENTS:
        assert f"deployment {flow}/{name}:" in deploy_log, (flow, name)
    # Published ports bind to loopback, as this topology's servers did.
    for name in ("prefect-server", "mlflow"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
    assert urlsplit(top.prefect.url).hostname == urlsplit(top.mlflow.url).hostname == "127.0.0.1"

    # Last, so that it hides nothing above: the driver of MLflow's database. SQLAlchemy 2.1 reads
    # a bare postgresql:// as psycopg 3, which neither image installs (the lock has psycopg2).
    assert compose_db.scheme == ran_db.scheme == "postgresql+psycopg2", (
        f"compose's MLflow backend URI uses {compose_db.scheme}://; this topology's MLflow ran on "
        f"{ran_db.scheme}:// (the driver the lock installs)"
    )


@pytest.mark.timeout(180)
def test_everything_stops_and_nothing_is_left(top: pg_util.Topology) -> None:
    pg_root, ports = top.pg.root, [urlsplit(s.url).port for s in (top.prefect, top.mlflow)] + [top.pg.port]
    seen = top.seen | top.all_processes()
    assert len(seen) > 6, seen
    survivors = top.stop()
    assert survivors == set()
    assert [p for p in seen if pg_util.running(p)] == []
    assert stack.tagged_processes(stack.StackPaths(top.home).tag) == set()
    assert not any(pg_util.port_open(p) for p in ports), ports
    assert pg_root is not None and not pg_root.exists()
