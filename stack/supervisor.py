"""docker-compose.yml's layout without Docker: `up`, `down` and `status` of the local stack.

`up` starts, on 127.0.0.1 (MASKCLS_BIND_HOST):
- Prefect's server and UI (MASKCLS_PREFECT_PORT, default 4200), SQLite under
  $MASKCLS_HOME/stack/prefect;
- MLflow's tracking server and UI through mlflow/start.sh (MASKCLS_MLFLOW_PORT,
  default 5000), SQLite $MASKCLS_HOME/stack/mlflow.db, served artifacts under
  $MASKCLS_HOME/stack/mlartifacts;
- the process work pool `maskcls` and MASKCLS_WORKERS (default 2) `prefect
  worker start` processes, which pass MASKCLS_HOME, MASKCLS_DATA_SOURCE,
  MLFLOW_TRACKING_URI and PREFECT_API_URL to the runs they start;
- flows/deploy.py, which registers every deployment in maskcls/names.py.

It waits for each health check and prints the URLs. Logs go to
$MASKCLS_HOME/stack/logs, pid files to $MASKCLS_HOME/stack/run. A second `up`
keeps what runs and starts only what is missing. `down` stops every process the
stack started, including flow runs that workers started in their own sessions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maskcls.names import DEPLOYMENTS, POOL_NAME
from stack.commands import url_host
from stack.health import (
    http_ok,
    missing_deployments,
    wait_healthy,
    wait_worker_online,
    work_pool_exists,
)
from stack.paths import StackPaths
from stack.processes import (
    Service,
    load_services,
    process_tree,
    tagged_processes,
    terminate,
)
from stack.services import (
    DEPLOY,
    MLFLOW_SERVER,
    PREFECT_SERVER,
    WORKER_PREFIX,
    run_deploy,
    start_mlflow_server,
    start_prefect_server,
    start_worker,
)

if TYPE_CHECKING:
    from maskcls.config import Settings


@dataclass(frozen=True)
class StackConfig:
    """What `up`, `down` and `status` work on; built from the entry point's `Settings` by `from_settings`
    (whose fields hold the defaults)."""

    home: Path
    host: str
    prefect_port: int
    mlflow_port: int
    workers: int
    #: Flow runs at once per worker; None means no limit.
    worker_limit: int | None
    mlflow_workers: int | None
    mlflow_allowed_hosts: str | None
    #: None: the workers and deployments keep the pinned default download.
    data_source: str | None
    #: Seconds each service may take to get healthy.
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> StackConfig:
        """The stack's fields of `settings`: MASKCLS_HOME, MASKCLS_BIND_HOST, MASKCLS_PREFECT_PORT,
        MASKCLS_MLFLOW_PORT, MASKCLS_WORKERS, MASKCLS_WORKER_LIMIT (0 = no limit),
        MASKCLS_MLFLOW_WORKERS, MASKCLS_MLFLOW_ALLOWED_HOSTS, MASKCLS_DATA_SOURCE (None when
        unset: the workers keep the pinned default), MASKCLS_STACK_TIMEOUT."""
        source = settings.data_source_given
        if source and "://" not in source and Path(source).exists():
            # Workers run flows from the project root; a relative path must not
            # depend on where `make up` was typed. Links stay as given: the path the
            # user named is the one the run form and the runs show.
            source = os.path.abspath(source)
        return cls(
            home=settings.home,
            host=settings.bind_host,
            prefect_port=settings.prefect_port,
            mlflow_port=settings.mlflow_port,
            workers=settings.workers,
            worker_limit=settings.worker_limit or None,
            mlflow_workers=settings.mlflow_workers,
            mlflow_allowed_hosts=settings.mlflow_allowed_hosts,
            data_source=source,
            timeout=settings.stack_timeout,
        )

    @property
    def paths(self) -> StackPaths:
        return StackPaths(self.home)

    @property
    def prefect_url(self) -> str:
        return f"http://{url_host(self.host)}:{self.prefect_port}"

    @property
    def api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{url_host(self.host)}:{self.mlflow_port}"


@dataclass(frozen=True)
class StackStatus:
    """What `status` found: one row per recorded service, and the deployments the server lacks."""

    services: list[dict[str, Any]]
    #: None when no healthy Prefect server could be asked.
    missing_deployments: list[str] | None

    @property
    def ok(self) -> bool:
        """Every recorded service runs and is healthy, and every deployment is registered."""
        return (
            bool(self.services)
            and all(row["healthy"] for row in self.services)
            and self.missing_deployments == []
        )


def _say(message: str) -> None:
    print(message, flush=True)


def _running(
    services: Mapping[str, Service], name: str, timeout: float, url: str | None = None
) -> Service | None:
    """The recorded service `name` if it runs (waiting for its health if it is still starting)."""
    service = services.get(name)
    if service is None:
        return None
    if not service.alive():
        # Stale pid file of a process that died: clear it so a fresh one starts.
        service.stop(timeout=5)
        return None
    if url is not None and service.url != url:
        raise RuntimeError(
            f"{name} already runs at {service.url}, not {url}: `make down` first to move it"
        )
    if service.health_url:
        wait_healthy(service.health_url, timeout, service)
    return service


def up(config: StackConfig) -> dict[str, Service]:
    """Start what is not running yet, wait for health, register the deployments."""
    paths = config.paths
    paths.make()
    services = load_services(paths)
    started: list[str] = []

    prefect = _running(services, PREFECT_SERVER, config.timeout, config.prefect_url)
    if prefect is None:
        prefect = start_prefect_server(paths.home, config.prefect_port, host=config.host)
        started.append(PREFECT_SERVER)
    mlflow = _running(services, MLFLOW_SERVER, config.timeout, config.mlflow_url)
    if mlflow is None:
        mlflow = start_mlflow_server(
            paths.home,
            config.mlflow_port,
            host=config.host,
            allowed_hosts=config.mlflow_allowed_hosts,
            workers=config.mlflow_workers,
        )
        started.append(MLFLOW_SERVER)
    assert prefect.health_url and mlflow.health_url
    wait_healthy(prefect.health_url, config.timeout, prefect)
    _say(f"prefect-server  ready  {prefect.url}")

    # The pool exists before workers start, so they do not race to create it.
    if not work_pool_exists(config.api_url):
        run_deploy(paths.home, config.api_url, pool_only=True, timeout=config.timeout)

    workers: list[Service] = []
    for index in range(1, config.workers + 1):
        name = f"{WORKER_PREFIX}{index}"
        worker = _running(services, name, config.timeout)
        if worker is None:
            worker = start_worker(
                paths.home,
                index,
                config.api_url,
                config.mlflow_url,
                config.data_source,
                limit=config.worker_limit,
            )
            started.append(name)
        workers.append(worker)
    # Workers beyond MASKCLS_WORKERS (it was lowered since the last `up`) stop.
    for name, service in services.items():
        if name.startswith(WORKER_PREFIX) and int(name[len(WORKER_PREFIX) :]) > config.workers:
            service.stop()
            _say(f"{name}  stopped (MASKCLS_WORKERS={config.workers})")

    deploy_needed = bool(started) or bool(missing_deployments(config.api_url))
    if deploy_needed:
        run_deploy(
            paths.home, config.api_url, data_source=config.data_source, timeout=config.timeout
        )
        missing = missing_deployments(config.api_url)
        if missing:
            raise RuntimeError(
                f"flows/deploy.py finished but the server lacks {', '.join(missing)}; "
                f"see {paths.log_file(DEPLOY)}"
            )
    wait_healthy(mlflow.health_url, config.timeout, mlflow)
    _say(f"mlflow-server   ready  {mlflow.url}")
    for worker in workers:
        wait_worker_online(worker, config.api_url, timeout=config.timeout)
        _say(f"{worker.name:<15} ready  pid {worker.pid}")

    result = {PREFECT_SERVER: prefect, MLFLOW_SERVER: mlflow, **{w.name: w for w in workers}}
    already = sorted(set(result) - set(started))
    if already:
        _say(f"already running: {', '.join(already)}")
    _say(
        "\n"
        f"Prefect UI:   {config.prefect_url}\n"
        f"Prefect API:  {config.api_url}\n"
        f"MLflow UI:    {config.mlflow_url}\n"
        f"Work pool:    {POOL_NAME} ({len(workers)} workers)\n"
        f"Deployments:  {', '.join(f'{flow}/{name}' for flow, name in DEPLOYMENTS)}"
        f"{'' if deploy_needed else ' (already registered)'}\n"
        f"Data source:  {config.data_source or '(the pinned default download)'}\n"
        f"Logs:         {paths.logs}\n"
        "Stop with `make down`."
    )
    return result


def _stop_order(name: str) -> int:
    # Workers first (they own flow runs), then the servers they talk to.
    if name.startswith(WORKER_PREFIX) or name == DEPLOY:
        return 0
    return 1 if name == MLFLOW_SERVER else 2


def down(config: StackConfig) -> list[str]:
    """Stop every process of the stack; returns the names of services that were running."""
    paths = config.paths
    services = load_services(paths)
    stopped = []
    for name in sorted(services, key=lambda n: (_stop_order(n), n)):
        service = services[name]
        was_running = service.alive()
        service.stop()
        if was_running:
            stopped.append(name)
            _say(f"{name:<15} stopped")
    # Anything else this stack started (a flow run whose worker was killed, a
    # deploy interrupted mid-way) is found by its environment tag.
    leftovers = tagged_processes(paths.tag)
    if leftovers:
        survivors = terminate(process_tree(leftovers))
        _say(f"stopped {len(leftovers)} leftover process(es)")
        if survivors:
            raise RuntimeError(f"processes {sorted(survivors)} survived SIGKILL")
    if not stopped and not leftovers:
        _say("nothing was running")
    return stopped


def status(config: StackConfig) -> StackStatus:
    """What runs, printed: one line per recorded service, then one per deployment flows/deploy.py registers."""
    rows = []
    for name, service in load_services(config.paths).items():
        alive = service.alive()
        healthy = alive and (service.health_url is None or http_ok(service.health_url))
        rows.append(
            {"name": name, "pid": service.pid, "alive": alive, "healthy": healthy, "url": service.url}
        )
        state = "running" if healthy else ("unhealthy" if alive else "stopped")
        _say(f"{name:<15} {state:<9} pid {service.pid:<7} {service.url or ''}")
    missing = None
    if not rows:
        _say("nothing recorded; start with `make up`")
    elif any(r["name"] == PREFECT_SERVER and r["healthy"] for r in rows):
        missing = missing_deployments(config.api_url)
        for flow, name in DEPLOYMENTS:
            label = f"{flow}/{name}"
            _say(f"{label:<33} {'missing' if label in missing else 'registered'}")
    return StackStatus(services=rows, missing_deployments=missing)
