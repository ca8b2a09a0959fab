"""A throwaway PostgreSQL server, and docker-compose.yml's topology on it without Docker.

`Postgres` runs initdb/pg_ctl in a fresh folder under /tmp on a free port of
127.0.0.1. PostgreSQL refuses to run as root, and CI runs as root: then every
server command runs as the `postgres` user (`runuser -u postgres --`) and the
folder belongs to that user. The databases are made by the same script the
compose `postgres` service runs on its first start (docker/postgres-init/).

`topology()` starts, like compose: Postgres, Prefect's server on its `prefect`
database, MLflow's server on its `mlflow` database (through mlflow/start.sh,
served artifacts), the process work pool `maskcls` with N workers, and
flows/deploy.py; it stops all of it on exit and fails if any process is left.
Nothing here skips: a missing PostgreSQL is an error.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import REPO
from tests.support.ports import free_port
from tests.support.servers import start_servers

INIT_SCRIPT = REPO / "docker" / "postgres-init" / "10-create-databases.sh"
PG_USER = "postgres"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def running(pid: int) -> bool:
    """The process exists and is not a zombie (nobody may reap orphans in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def descendants(root: int) -> set[int]:
    """`root` and every live process below it."""
    parents = {pid: _ppid(pid) for pid in (int(e) for e in os.listdir("/proc") if e.isdigit())}
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    return {pid for pid in tree if running(pid)}


def pg_bin_dir() -> Path:
    """PostgreSQL's server programs: MASKCLS_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    if os.environ.get("MASKCLS_PG_BIN"):
        return Path(os.environ["MASKCLS_PG_BIN"])
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "PostgreSQL server programs not found (initdb): install postgresql (apt-get install -y "
        "postgresql) or set MASKCLS_PG_BIN to the folder holding initdb and pg_ctl"
    )


@dataclass
class Postgres:
    """One PostgreSQL server in its own folder; `start()`, then `stop()` (which removes the folder)."""

    port: int = field(default_factory=free_port)
    bin_dir: Path = field(default_factory=pg_bin_dir)
    superuser_password: str = field(default_factory=lambda: secrets.token_hex(12))
    prefect_password: str = field(default_factory=lambda: secrets.token_hex(12))
    mlflow_password: str = field(default_factory=lambda: secrets.token_hex(12))
    root: Path | None = None
    pid: int | None = None

    # ------------------------------------------------------------------ as the postgres user
    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run_as_owner(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", PG_USER, "--"] if self._as_root else []
        result = subprocess.run(prefix + argv, cwd=self.root, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
                               f"\n{self.log_tail()}")
        return result

    def _own(self, path: Path) -> None:
        if self._as_root:
            entry = pwd.getpwnam(PG_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def log_tail(self, lines: int = 30) -> str:
        if self.root is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Postgres:
        """initdb, start on 127.0.0.1:port, and create the `prefect` and `mlflow` databases."""
        if self._as_root:
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                raise RuntimeError(f"running as root needs a {PG_USER!r} user to run PostgreSQL") from None
        # Under /tmp, not pytest's tmp_path: that one is private to root (0700) and the
        # postgres user could not enter it.
        self.root = Path(tempfile.mkdtemp(prefix="maskcls-pg-"))
        self._own(self.root)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        initdb = str(self.bin_dir / "initdb")
        # Passwords over TCP (as compose's URLs use them), trust on the private socket only.
        self._run_as_owner([initdb, "-D", str(self.data_dir), "-U", PG_USER, "--pwfile", str(pwfile),
                            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                            "--no-locale", "--no-sync"])
        pwfile.unlink()
        options = " ".join([
            "-c listen_addresses=127.0.0.1", f"-c port={self.port}",
            f"-c unix_socket_directories={self.root}",
            # A test database: durability buys nothing and costs seconds on every commit.
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            "-c max_connections=200", "-c shared_buffers=64MB",
        ])
        self._run_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
                            "-o", options, "-w", "-t", "60", "start"])
        self.pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        self.create_databases()
        return self

    def client_env(self, user: str = PG_USER, password: str | None = None) -> dict[str, str]:
        """libpq's environment for psql over TCP."""
        return {
            "PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": user,
            "PGPASSWORD": self.superuser_password if password is None else password,
            "PGDATABASE": "postgres",
        }

    def create_databases(self) -> None:
        """Run compose's init script: roles and databases `prefect` and `mlflow` (+ pg_trgm)."""
        env = {
            **os.environ, **self.client_env(),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PREFECT_DB_PASSWORD": self.prefect_password,
            "MLFLOW_DB_PASSWORD": self.mlflow_password,
        }
        for key in ("POSTGRES_USER", "POSTGRES_DB", "PREFECT_DB_USER", "MLFLOW_DB_USER"):
            env.pop(key, None)
        result = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{INIT_SCRIPT} failed:\n{result.stdout}\n{result.stderr}")

    @property
    def prefect_url(self) -> str:
        """Prefect's PREFECT_API_DATABASE_CONNECTION_URL (compose's form, this host and port)."""
        return f"postgresql+asyncpg://prefect:{self.prefect_password}@127.0.0.1:{self.port}/prefect"

    @property
    def mlflow_url(self) -> str:
        """MLflow's --backend-store-uri (this host and port).

        The driver is named: SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3,
        which is not installed (the lock has psycopg2-binary).
        """
        return f"postgresql+psycopg2://mlflow:{self.mlflow_password}@127.0.0.1:{self.port}/mlflow"

    def connect(self, database: str):
        """A psycopg2 connection to `database` as its owner."""
        import psycopg2

        password = {"prefect": self.prefect_password, "mlflow": self.mlflow_password}[database]
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=database, password=password,
                                dbname=database, connect_timeout=10)

    def query(self, database: str, sql: str, params: Any = None) -> list[tuple]:
        """Rows of one statement in `database` (its own connection, closed after)."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def processes(self) -> set[int]:
        """The postmaster and its backends."""
        return descendants(self.pid) if self.pid and running(self.pid) else set()

    def stop(self) -> None:
        """Fast shutdown; SIGKILL what is left; remove the folder."""
        if self.root is None:
            return
        pids = self.processes()
        if self.pid and running(self.pid):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                                    "-w", "-t", "30", "stop"], timeout=60)
        deadline = time.monotonic() + 10
        while any(running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


# --------------------------------------------------------------------------- the topology


# Flow runs pick up work within seconds (the default poll is 10 s), and TF stays quiet.
WORKER_ENV = {
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
}


@dataclass
class Topology:
    """docker-compose.yml's services as native processes: `start()`, then `stop()`."""

    root: Path
    data: Path
    n_workers: int = 2
    worker_env: Mapping[str, str] | None = None
    timeout: float = 180
    pg: Postgres | None = None
    prefect: Any = None  # stack.Service
    mlflow: Any = None
    workers: list[Any] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    stopped: bool = False

    @property
    def home(self) -> Path:
        return (self.root / "home").resolve()

    @property
    def api_url(self) -> str:
        return f"{self.prefect.url}/api"

    @property
    def mlflow_url(self) -> str:
        return self.mlflow.url

    def services(self) -> list[Any]:
        return [s for s in (self.prefect, self.mlflow, *self.workers) if s is not None]

    def start(self) -> Topology:
        """Postgres, both servers on it, the pool, its workers and the deployments; waits for health."""
        import stack

        try:
            self.pg = Postgres().start()
            servers = start_servers(self.home, prefect_database_url=self.pg.prefect_url,
                                    mlflow_backend_uri=self.pg.mlflow_url, timeout=self.timeout)
            self.prefect, self.mlflow = servers.prefect, servers.mlflow
            # The pool first, so the workers do not race to create it (as `make up` does).
            stack.run_deploy(self.home, self.api_url, pool_only=True, timeout=self.timeout)
            for index in range(1, self.n_workers + 1):
                self.workers.append(stack.start_worker(
                    self.home, index, self.api_url, self.mlflow.url, str(self.data),
                    env={**WORKER_ENV, **(self.worker_env or {})},
                ))
            stack.run_deploy(self.home, self.api_url, data_source=str(self.data), timeout=self.timeout)
            for worker in self.workers:
                stack.wait_worker_online(worker, self.api_url, timeout=self.timeout)
        except BaseException:
            self.stop()
            raise
        self.seen |= self.all_processes()
        return self

    def all_processes(self) -> set[int]:
        """Every live process of the topology: services, their flow runs, Postgres."""
        import stack

        pids = set(self.pg.processes()) if self.pg else set()
        for service in self.services():
            pids |= service.processes()
        return pids | stack.tagged_processes(stack.StackPaths(self.home).tag)

    def env(self) -> dict[str, str]:
        """Environment of a client of this stack (the CLI): the workers' servers, home and data."""
        return {
            "PREFECT_API_URL": self.api_url,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MASKCLS_HOME": str(self.home),
            "MASKCLS_DATA_SOURCE": str(self.data),
            "PREFECT_HOME": str(self.home / "stack" / "prefect"),
        }

    def worker_logs(self, lines: int = 60) -> str:
        out = []
        for service in self.services():
            if service.log_path and Path(service.log_path).exists():
                tail = Path(service.log_path).read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {service.name} ({service.log_path})\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> set[int]:
        """Workers (with their flow runs), then the servers, then Postgres; returns the pids that survived.

        Idempotent. Every pid seen while the topology ran is checked, not only the services' own.
        """
        import stack

        if self.stopped:
            return {p for p in self.seen if running(p)}
        self.stopped = True
        with contextlib.suppress(Exception):
            self.seen |= self.all_processes()
        errors: list[str] = []
        for service in [*self.workers, self.mlflow, self.prefect]:
            if service is None:
                continue
            try:
                service.stop()
            except RuntimeError as exc:
                errors.append(str(exc))
        leftovers = stack.tagged_processes(stack.StackPaths(self.home).tag)
        if leftovers:
            stack.terminate(stack.process_tree(leftovers), timeout=10)
        if self.pg is not None:
            self.pg.stop()
        deadline = time.monotonic() + 10
        while any(running(p) for p in self.seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = {p for p in self.seen if running(p)}
        if errors and not survivors:
            raise RuntimeError("; ".join(errors))
        return survivors


@contextlib.contextmanager
def topology(root: Path, data: Path, workers: int = 2, worker_env: Mapping[str, str] | None = None,
             timeout: float = 180) -> Iterator[Topology]:
    """A started `Topology`, stopped on exit (which raises if a process outlived it after a clean body)."""
    top = Topology(root=root, data=data, n_workers=workers, worker_env=worker_env, timeout=timeout).start()
    ok = False
    try:
        yield top
        ok = True
    finally:
        survivors = top.stop()
        if survivors and ok:
            raise RuntimeError(f"processes outlived the topology's shutdown: {sorted(survivors)}")


# --------------------------------------------------------------------------- Prefect's REST API

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def api(api_url: str, path: str, data: Any = None, method: str | None = None) -> Any:
    """One call to Prefect's REST API; raises on an error status."""
    from stack import http_request

    status, body = http_request(f"{api_url}{path}", data=data, method=method, timeout=30)
    if status >= 300:
        raise RuntimeError(f"{method or ('POST' if data is not None else 'GET')} {path}: {status} {body}")
    return body


def create_flow_run(api_url: str, deployment: str, parameters: Mapping[str, Any] | None = None) -> dict:
    """Start a run of `flow/deployment` through the API, as the UI's Run button does."""
    dep = api(api_url, f"/deployments/name/{deployment}")
    return api(api_url, f"/deployments/{dep['id']}/create_flow_run", data={"parameters": dict(parameters or {})})


def wait_final(top: Topology, flow_run_ids: list[str], timeout: float) -> dict[str, dict]:
    """Poll until every flow run is in a final state; the runs by id. Fails with the logs on timeout."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for run_id in flow_run_ids:
            if run_id not in done:
                run = api(top.api_url, f"/flow_runs/{run_id}")
                if (run.get("state") or {}).get("type") in FINAL_STATES:
                    done[run_id] = run
        if len(done) == len(flow_run_ids):
            return done
        time.sleep(2)
    states = {i: (done.get(i) or api(top.api_url, f"/flow_runs/{i}"))["state"]["name"] for i in flow_run_ids}
    raise TimeoutError(f"flow runs not finished after {timeout:.0f}s: {states}\n{top.worker_logs()}")


def task_run_states(api_url: str, flow_run_id: str) -> dict[str, str]:
    """{task name without its "-<n>" suffix: state name} of a flow run's task runs."""
    runs = api(api_url, "/task_runs/filter", data={"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
    return {r["name"].rsplit("-", 1)[0]: r["state"]["name"] for r in runs if r.get("state")}


def flow_run_logs(api_url: str, flow_run_id: str, limit: int = 200) -> str:
    logs = api(api_url, "/logs/filter", data={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": limit,
                                              "sort": "TIMESTAMP_ASC"})
    return "\n".join(f"{entry['level']} {entry['message']}" for entry in logs)
