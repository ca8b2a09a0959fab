"""docker-compose.yml's layout without Docker: `python -m flows.stack up|down|status`.

`up` starts, on 127.0.0.1 (MASKCLS_BIND_HOST):
- Prefect's server and UI (MASKCLS_PREFECT_PORT, default 4200), SQLite under
  $MASKCLS_HOME/stack/prefect;
- MLflow's tracking server and UI through mlflow/start.sh (MASKCLS_MLFLOW_PORT,
  default 5000), SQLite $MASKCLS_HOME/stack/mlflow.db, served artifacts under
  $MASKCLS_HOME/stack/mlartifacts;
- the process work pool `maskcls` and MASKCLS_WORKERS (default 2) `prefect
  worker start` processes, which pass MASKCLS_HOME, MASKCLS_DATA_SOURCE,
  MLFLOW_TRACKING_URI and PREFECT_API_URL to the runs they start;
- flows/deploy.py, which registers the deployments.

It waits for each health check and prints the URLs. Logs go to
$MASKCLS_HOME/stack/logs, pid files to $MASKCLS_HOME/stack/run. A second `up`
keeps what runs and starts only what is missing. `down` stops every process the
stack started, including flow runs that workers started in their own sessions.

Other code (tests) can start single services with `start_prefect_server`,
`start_mlflow_server` and `start_worker`, and stop them with `Service.stop`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.deploy import (
    DEPLOYMENT_NAMES,
    FLOW_NAME,
    POOL_NAME,
    POOL_ONLY_FLAG,
    SWEEP,
    SWEEP_FLOW_NAME,
    SWEEP_MEMBER,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MLFLOW_START_SCRIPT = "mlflow/start.sh"
DEPLOY_SCRIPT = "flows/deploy.py"

PREFECT_SERVER = "prefect-server"
MLFLOW_SERVER = "mlflow-server"
DEPLOY = "deploy"
WORKER_PREFIX = "worker-"

# Every process the stack starts carries these in its environment, and so do
# their children (Prefect's process worker copies os.environ into flow runs).
# That is how `down` finds flow runs that left the worker's process group.
TAG_ENV = "MASKCLS_STACK_TAG"
SERVICE_ENV = "MASKCLS_STACK_SERVICE"

LOCAL_HOSTS = ("127.0.0.1", "localhost")
PREFECT_HEALTH_PATH = "/api/health"
MLFLOW_HEALTH_PATH = "/health"
DEFAULT_TIMEOUT = 180.0


# --------------------------------------------------------------------------- commands
# The command builders below are what docker-compose.yml runs as well;
# tests/integration/test_compose.py checks that the two agree.


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


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class StackPaths:
    """Where one stack keeps its state: $MASKCLS_HOME/stack/..."""

    home: Path

    @property
    def root(self) -> Path:
        return self.home / "stack"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def tag(self) -> str:
        """Value of TAG_ENV for this stack's processes."""
        return str(self.root)

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.json"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def make(self) -> None:
        for path in (self.prefect_home, self.artifacts, self.logs, self.run):
            path.mkdir(parents=True, exist_ok=True)


def _url_host(host: str) -> str:
    """Address clients use for a bind address (a wildcard bind is reached on loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


@dataclass(frozen=True)
class StackConfig:
    """Settings of `python -m flows.stack`; read from the environment by `from_env`."""

    home: Path
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    workers: int = 2
    worker_limit: int | None = 1
    mlflow_workers: int | None = 1
    mlflow_allowed_hosts: str | None = None
    data_source: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """MASKCLS_HOME, MASKCLS_BIND_HOST, MASKCLS_PREFECT_PORT, MASKCLS_MLFLOW_PORT,
        MASKCLS_WORKERS, MASKCLS_WORKER_LIMIT (runs per worker, 0 = no limit),
        MASKCLS_MLFLOW_WORKERS, MASKCLS_MLFLOW_ALLOWED_HOSTS, MASKCLS_DATA_SOURCE,
        MASKCLS_STACK_TIMEOUT (seconds per health check)."""
        env = os.environ if environ is None else environ

        def number(key: str, default: int) -> int:
            value = env.get(key, "").strip()
            return int(value) if value else default

        limit = number("MASKCLS_WORKER_LIMIT", 1)
        source = env.get("MASKCLS_DATA_SOURCE") or None
        if source and "://" not in source and Path(source).exists():
            # Workers run flows from the project root; a relative path must not
            # depend on where `make up` was typed.
            source = str(Path(source).resolve())
        return cls(
            home=Path(env.get("MASKCLS_HOME") or ".maskcls").expanduser().resolve(),
            host=env.get("MASKCLS_BIND_HOST") or "127.0.0.1",
            prefect_port=number("MASKCLS_PREFECT_PORT", 4200),
            mlflow_port=number("MASKCLS_MLFLOW_PORT", 5000),
            workers=number("MASKCLS_WORKERS", 2),
            worker_limit=limit if limit > 0 else None,
            mlflow_workers=number("MASKCLS_MLFLOW_WORKERS", 1),
            mlflow_allowed_hosts=env.get("MASKCLS_MLFLOW_ALLOWED_HOSTS") or None,
            data_source=source,
            timeout=float(env.get("MASKCLS_STACK_TIMEOUT") or DEFAULT_TIMEOUT),
        )

    @property
    def paths(self) -> StackPaths:
        return StackPaths(self.home)

    @property
    def prefect_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.prefect_port}"

    @property
    def api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.mlflow_port}"


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, start time in clock ticks) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after
    # the last ")" are fixed: state ppid pgrp session ... starttime is field 22.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True if `pid` runs (zombies count as gone) and, if given, started at `start_ticks`.

    The start time guards against a recycled pid in a stale pid file.
    """
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_ticks is None or stat[3] == start_ticks


def _own_lineage() -> set[int]:
    """This process and its ancestors: never signalled, whatever their environment says."""
    lineage, pid = set(), os.getpid()
    while pid > 1 and pid not in lineage:
        lineage.add(pid)
        stat = _proc_stat(pid)
        if stat is None:
            break
        pid = stat[1]
    return lineage


def tagged_processes(tag: str, service: str | None = None) -> set[int]:
    """Live processes whose environment marks them as started by stack `tag` (and `service`)."""
    found = set()
    for pid in _all_pids():
        env = _environ(pid)
        if env.get(TAG_ENV) != tag:
            continue
        if service is not None and env.get(SERVICE_ENV) != service:
            continue
        if pid_alive(pid):
            found.add(pid)
    return found - _own_lineage()


def process_tree(roots: Iterable[int]) -> set[int]:
    """Live `roots`, the members of their process groups, and all their descendants."""
    stats = {pid: s for pid in _all_pids() if (s := _proc_stat(pid)) is not None}
    tree = {pid for pid in roots if pid in stats}
    groups = set(tree)
    tree |= {pid for pid, s in stats.items() if s[2] in groups}
    grew = True
    while grew:
        children = {pid for pid, s in stats.items() if s[1] in tree} - tree
        tree |= children
        grew = bool(children)
    return {pid for pid in tree if stats[pid][0] not in ("Z", "X")} - _own_lineage()


def terminate(pids: Iterable[int], timeout: float = 20.0) -> set[int]:
    """SIGTERM `pids`, SIGKILL what still runs after `timeout`; returns pids that survived."""
    pending = {pid for pid in pids if pid_alive(pid)}

    def signal_all(sig: signal.Signals) -> None:
        for pid in pending:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    signal_all(signal.SIGTERM)
    for sig_timeout, next_signal in ((timeout, signal.SIGKILL), (5.0, None)):
        deadline = time.monotonic() + sig_timeout
        while pending and time.monotonic() < deadline:
            time.sleep(0.1)
            pending = {pid for pid in pending if pid_alive(pid)}
        if not pending or next_signal is None:
            break
        signal_all(next_signal)
    return pending


# --------------------------------------------------------------------------- http


# Local health checks must never go through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(
    url: str, data: Any = None, method: str | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """(status, parsed JSON or text) of a request; HTTP errors return their status, not raise."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """True if GET `url` answers 200."""
    try:
        return http_request(url, timeout=timeout)[0] == 200
    except (OSError, ValueError):
        return False


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((_url_host(host), port), timeout=timeout):
        return True
    return False


def _log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------- services


@dataclass
class Service:
    """A process the stack started, as recorded in its pid file."""

    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    log_path: Path
    tag: str
    url: str | None = None
    health_url: str | None = None
    pid_file: Path | None = None
    started_at: float = 0.0
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        """The recorded process still runs (and is the same process)."""
        if self._popen is not None:
            self._popen.poll()  # reaps our own child, so it does not linger as a zombie
        return pid_alive(self.pid, self.start_ticks)

    def healthy(self, timeout: float = 3.0) -> bool:
        """Alive and, if it has a health URL, answering it."""
        return self.alive() and (
            self.health_url is None or http_ok(self.health_url, timeout)
        )

    def processes(self) -> set[int]:
        """Every live process belonging to this service, flow runs of a worker included."""
        roots = {self.pid} if self.alive() else set()
        return process_tree(roots | tagged_processes(self.tag, self.name))

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the service and all its processes, SIGKILL after `timeout`, drop the pid file."""
        survivors = terminate(self.processes(), timeout)
        # Children of the main process may have been reparented during shutdown.
        survivors |= terminate(tagged_processes(self.tag, self.name), 5.0)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(5)
        if survivors:
            raise RuntimeError(f"{self.name}: processes {sorted(survivors)} survived SIGKILL")
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def save(self) -> None:
        """Write the pid file (atomically: a concurrent `status` never reads half a file)."""
        if self.pid_file is None:
            return
        record = {
            "name": self.name,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "argv": self.argv,
            "log_path": str(self.log_path),
            "tag": self.tag,
            "url": self.url,
            "health_url": self.health_url,
            "started_at": self.started_at,
        }
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(self.pid_file)

    @classmethod
    def load(cls, pid_file: Path) -> Service | None:
        """The service recorded in `pid_file`, None if there is no readable record."""
        try:
            record = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            return None
        return cls(
            name=record["name"],
            pid=int(record["pid"]),
            start_ticks=int(record["start_ticks"]),
            argv=list(record["argv"]),
            log_path=Path(record["log_path"]),
            tag=record["tag"],
            url=record.get("url"),
            health_url=record.get("health_url"),
            pid_file=pid_file,
            started_at=float(record.get("started_at") or 0.0),
        )


def _resolve_program(argv: Sequence[str]) -> list[str]:
    """Run `python`/`prefect` from this interpreter's environment, whatever PATH says."""
    bin_dir = Path(sys.executable).parent
    program = argv[0]
    if program == "python":
        program = sys.executable
    elif (bin_dir / program).exists():
        program = str(bin_dir / program)
    return [program, *argv[1:]]


def _process_env(
    paths: StackPaths, name: str, extra: Mapping[str, str | None]
) -> dict[str, str]:
    env = dict(os.environ)
    # mlflow/start.sh and Prefect's own subprocesses look programs up on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), *LOCAL_HOSTS]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the file as they happen
    env["DO_NOT_TRACK"] = "1"  # no telemetry from Prefect or MLflow: no network here
    env[TAG_ENV] = paths.tag
    env[SERVICE_ENV] = name
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def spawn(
    paths: StackPaths,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str | None],
    url: str | None = None,
    health_url: str | None = None,
    cwd: Path = PROJECT_ROOT,
) -> Service:
    """Start `argv` in its own session with output appended to logs/<name>.log; writes its pid file.

    Its own session (and so process group) lets `stop` signal the whole group
    without touching the caller, and keeps Ctrl-C in the caller's terminal from
    reaching the servers.
    """
    paths.make()
    log_path = paths.log_file(name)
    with log_path.open("ab") as log:
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        log.write(f"\n=== {stamp} start: {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            _resolve_program(argv),
            cwd=cwd,
            env=_process_env(paths, name, env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stat = _proc_stat(popen.pid)
    service = Service(
        name=name,
        pid=popen.pid,
        start_ticks=stat[3] if stat else 0,
        argv=list(argv),
        log_path=log_path,
        tag=paths.tag,
        url=url,
        health_url=health_url,
        pid_file=paths.pid_file(name),
        started_at=time.time(),
        _popen=popen,
    )
    service.save()
    return service


def wait_healthy(
    url: str, timeout: float = DEFAULT_TIMEOUT, service: Service | None = None
) -> None:
    """Poll GET `url` until it answers 200; fail early if `service` dies meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(url):
            return
        if service is not None and not service.alive():
            raise RuntimeError(
                f"{service.name} exited before {url} answered; last log lines "
                f"({service.log_path}):\n{_log_tail(service.log_path)}"
            )
        time.sleep(0.5)
    log = f"; last log lines ({service.log_path}):\n{_log_tail(service.log_path)}" if service else ""
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s{log}")


def _check_port_free(host: str, port: int, name: str) -> None:
    if port_open(host, port):
        raise RuntimeError(
            f"cannot start {name}: port {port} on {host} is taken by a process this "
            f"stack did not start (set MASKCLS_{'PREFECT' if 'prefect' in name else 'MLFLOW'}_PORT)"
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
    _check_port_free(host, port, PREFECT_SERVER)
    paths.make()
    url = f"http://{_url_host(host)}:{port}"
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
    _check_port_free(host, port, MLFLOW_SERVER)
    paths.make()
    url = f"http://{_url_host(host)}:{port}"
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


def worker_online(api_url: str, pool: str, worker_name: str, since: float) -> bool:
    """The pool lists `worker_name` as ONLINE with a heartbeat after `since` (epoch seconds)."""
    try:
        status, workers = http_request(
            f"{api_url}/work_pools/{urllib.parse.quote(pool)}/workers/filter", data={}, method="POST"
        )
    except (OSError, ValueError):
        return False
    if status != 200 or not isinstance(workers, list):
        return False
    for worker in workers:
        if worker.get("name") != worker_name or worker.get("status") != "ONLINE":
            continue
        beat = worker.get("last_heartbeat_time")
        # A record left by an earlier worker of the same name must not count.
        if beat and dt.datetime.fromisoformat(beat).timestamp() >= since - 5:
            return True
    return False


def wait_worker_online(
    service: Service, api_url: str, pool: str = POOL_NAME, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Wait until worker `service` has registered with the pool."""
    worker_name = f"maskcls-{service.name}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker_online(api_url, pool, worker_name, service.started_at):
            return
        if not service.alive():
            raise RuntimeError(
                f"{service.name} exited; last log lines ({service.log_path}):\n"
                f"{_log_tail(service.log_path)}"
            )
        time.sleep(1)
    raise TimeoutError(f"{service.name} did not come online in pool {pool!r} within {timeout:.0f}s")


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
        raise RuntimeError(
            f"flows/deploy.py failed ({code}); last log lines ({service.log_path}):\n"
            f"{_log_tail(service.log_path)}"
        )


def work_pool_exists(api_url: str, pool: str = POOL_NAME) -> bool:
    """The work pool `pool` exists on the server."""
    try:
        status, _ = http_request(f"{api_url}/work_pools/{urllib.parse.quote(pool)}")
    except (OSError, ValueError):
        return False
    return status == 200


def deployments_registered(api_url: str) -> bool:
    """Both deployments exist on the server."""
    for name in DEPLOYMENT_NAMES:
        try:
            status, _ = http_request(f"{api_url}/deployments/name/{FLOW_NAME}/{name}")
        except (OSError, ValueError):
            return False
        if status != 200:
            return False
    return True


def load_services(paths: StackPaths) -> dict[str, Service]:
    """Services recorded in the stack's pid files, by name (running or not)."""
    services = {}
    if paths.run.is_dir():
        for pid_file in sorted(paths.run.glob("*.json")):
            service = Service.load(pid_file)
            if service is not None:
                services[service.name] = service
    return services


# --------------------------------------------------------------------------- commands


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

    deploy_needed = bool(started) or not deployments_registered(config.api_url)
    if deploy_needed:
        run_deploy(
            paths.home, config.api_url, data_source=config.data_source, timeout=config.timeout
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
        f"Deployments:  {', '.join(f'{FLOW_NAME}/{n}' for n in (*DEPLOYMENT_NAMES, SWEEP_MEMBER))}, "
        f"{SWEEP_FLOW_NAME}/{SWEEP}"
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


def status(config: StackConfig) -> list[dict[str, Any]]:
    """What runs: one row per recorded service, printed, plus the deployments."""
    rows = []
    for name, service in load_services(config.paths).items():
        alive = service.alive()
        healthy = alive and (service.health_url is None or http_ok(service.health_url))
        rows.append(
            {"name": name, "pid": service.pid, "alive": alive, "healthy": healthy, "url": service.url}
        )
        state = "running" if healthy else ("unhealthy" if alive else "stopped")
        _say(f"{name:<15} {state:<9} pid {service.pid:<7} {service.url or ''}")
    if not rows:
        _say("nothing recorded; start with `make up`")
    elif any(r["name"] == PREFECT_SERVER and r["healthy"] for r in rows):
        registered = deployments_registered(config.api_url)
        _say(f"deployments     {'registered' if registered else 'missing'}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: up | down | status."""
    parser = argparse.ArgumentParser(prog="python -m flows.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    config = StackConfig.from_env()
    try:
        if args.command == "up":
            up(config)
        elif args.command == "down":
            down(config)
        else:
            rows = status(config)
            return 0 if rows and all(r["healthy"] for r in rows) else 3
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up":
            print("What did start keeps running; `make down` stops it.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
