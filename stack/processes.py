"""Processes the stack starts: spawn, pid files, environment tags, process trees, termination (psutil)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from stack.commands import LOCAL_HOSTS
from stack.health import http_ok
from stack.paths import StackPaths

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Every process the stack starts carries these in its environment, and so do
# their children (Prefect's process worker copies os.environ into flow runs).
# That is how `down` finds flow runs that left the worker's process group.
TAG_ENV = "MASKCLS_STACK_TAG"
SERVICE_ENV = "MASKCLS_STACK_SERVICE"

# The kernel's boot time, from which psutil derives a start time, can move by a
# second with clock adjustments; a recycled pid never starts that close to the original.
_CREATE_TIME_TOLERANCE = 1.0


def _live(proc: psutil.Process) -> bool:
    """`proc` still runs and is not a zombie (nobody may reap orphans in a container)."""
    try:
        return proc.is_running() and proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def pid_alive(pid: int, create_time: float | None = None) -> bool:
    """True if `pid` runs (zombies count as gone) and, if given, was created at `create_time`.

    The creation time guards against a recycled pid in a stale pid file.
    """
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > _CREATE_TIME_TOLERANCE:
            return False
    except psutil.NoSuchProcess:
        return False
    return _live(proc)


def _own_lineage() -> set[int]:
    """This process and its ancestors: never signalled, whatever their environment says."""
    me = psutil.Process()
    return {me.pid, *(parent.pid for parent in me.parents())}


def tagged_processes(tag: str, service: str | None = None) -> set[int]:
    """Live processes whose environment marks them as started by stack `tag` (and `service`)."""
    found = set()
    # Processes whose environment cannot be read (other users', zombies) get None.
    for proc in psutil.process_iter(["environ"]):
        env = proc.info["environ"] or {}
        if env.get(TAG_ENV) != tag:
            continue
        if service is not None and env.get(SERVICE_ENV) != service:
            continue
        if _live(proc):
            found.add(proc.pid)
    return found - _own_lineage()


def process_tree(roots: Iterable[int]) -> set[int]:
    """Live `roots` and all their descendants."""
    tree = set()
    for pid in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            tree |= {proc.pid for proc in (root, *root.children(recursive=True)) if _live(proc)}
    return tree - _own_lineage()


def _still_running(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `procs` that still run after waiting up to `timeout` seconds for them to end."""
    deadline = time.monotonic() + timeout
    while True:
        # wait_procs alone would wait out the whole timeout for a zombie nobody reaps.
        _, alive = psutil.wait_procs(procs, timeout=max(0.0, min(0.2, deadline - time.monotonic())))
        procs = [proc for proc in alive if _live(proc)]
        if not procs or time.monotonic() >= deadline:
            return procs


def _signal(procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        # psutil refuses to signal a pid that was recycled since `proc` was looked up.
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)


def terminate(pids: Iterable[int], timeout: float = 20.0) -> set[int]:
    """SIGTERM `pids`, SIGKILL what still runs after `timeout`; returns pids that survived."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    procs = [proc for proc in procs if _live(proc)]
    _signal(procs, signal.SIGTERM)
    procs = _still_running(procs, timeout)
    if procs:
        _signal(procs, signal.SIGKILL)
        procs = _still_running(procs, 5.0)
    return {proc.pid for proc in procs}


@dataclass
class Service:
    """A process the stack started, as recorded in its pid file."""

    name: str
    pid: int
    create_time: float
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
        return pid_alive(self.pid, self.create_time)

    def healthy(self, timeout: float = 3.0) -> bool:
        """Alive and, if it has a health URL, answering it."""
        return self.alive() and (self.health_url is None or http_ok(self.health_url, timeout))

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

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines of the service's log, introduced by its path."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"last log lines ({self.log_path}):\n" + "\n".join(text.splitlines()[-lines:])

    def save(self) -> None:
        """Write the pid file (atomically: a concurrent `status` never reads half a file)."""
        if self.pid_file is None:
            return
        record = {
            "name": self.name,
            "pid": self.pid,
            "create_time": self.create_time,
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
            return cls(
                name=record["name"],
                pid=int(record["pid"]),
                create_time=float(record["create_time"]),
                argv=list(record["argv"]),
                log_path=Path(record["log_path"]),
                tag=record["tag"],
                url=record.get("url"),
                health_url=record.get("health_url"),
                pid_file=pid_file,
                started_at=float(record.get("started_at") or 0.0),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def load_services(paths: StackPaths) -> dict[str, Service]:
    """Services recorded in the stack's pid files, by name (running or not)."""
    services = {}
    if paths.run.is_dir():
        for pid_file in sorted(paths.run.glob("*.json")):
            service = Service.load(pid_file)
            if service is not None:
                services[service.name] = service
    return services


def _resolve_program(argv: Sequence[str]) -> list[str]:
    """Run `python`/`prefect` from this interpreter's environment, whatever PATH says."""
    bin_dir = Path(sys.executable).parent
    program = argv[0]
    if program == "python":
        program = sys.executable
    elif (bin_dir / program).exists():
        program = str(bin_dir / program)
    return [program, *argv[1:]]


def _process_env(paths: StackPaths, name: str, extra: Mapping[str, str | None]) -> dict[str, str]:
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

    Its own session (and so process group) keeps Ctrl-C in the caller's terminal
    from reaching the servers.
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
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0  # exited at once: never alive; its log says why
    service = Service(
        name=name,
        pid=popen.pid,
        create_time=create_time,
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
