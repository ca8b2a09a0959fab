"""Spawning, environment tags, process trees and termination on real child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from stack.paths import StackPaths
from stack.processes import (
    SERVICE_ENV,
    TAG_ENV,
    Service,
    load_services,
    pid_alive,
    process_tree,
    spawn,
    tagged_processes,
    terminate,
)


def running(pid: int) -> bool:
    """Independent of the code under test: the pid exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[StackPaths]:
    """A stack home of its own; anything still tagged with it is killed afterwards."""
    paths = StackPaths(tmp_path.resolve())
    yield paths
    for pid in tagged_processes(paths.tag):
        psutil.Process(pid).kill()


def spawn_with_child(paths: StackPaths, name: str, pid_file: Path, detach: bool = False) -> Service:
    """A service whose shell starts one `sleep` child (in its own session if `detach`), then sleeps."""
    child = "setsid sleep 300" if detach else "sleep 300"
    service = spawn(paths, name, ["bash", "-c", f"{child} & echo $! > {pid_file}; exec sleep 300"], {})
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    return service


def test_spawn_records_the_service_and_tags_its_environment(paths: StackPaths) -> None:
    service = spawn(paths, "svc", ["sleep", "300"], {"EXTRA": "1", "HOME": None}, url="http://x")
    try:
        proc = psutil.Process(service.pid)
        # Until the child has exec'd, /proc shows the environment it forked with.
        wait_for(lambda: TAG_ENV in proc.environ())
        env = proc.environ()
        assert env[TAG_ENV] == paths.tag and env[SERVICE_ENV] == "svc"
        assert env["EXTRA"] == "1" and "HOME" not in env
        record = json.loads(paths.pid_file("svc").read_text())
        assert record["pid"] == service.pid and record["url"] == "http://x"
        loaded = load_services(paths)["svc"]
        assert (loaded.pid, loaded.create_time, loaded.url) == (service.pid, service.create_time, "http://x")
        assert loaded.alive()
        assert tagged_processes(paths.tag) == {service.pid}
        assert tagged_processes(paths.tag, "svc") == {service.pid}
        assert tagged_processes(paths.tag, "other") == set()
        assert tagged_processes(paths.tag + "-other") == set()
    finally:
        service.stop(timeout=5)
    assert not running(service.pid)
    assert not paths.pid_file("svc").exists()


def test_a_recycled_pid_is_not_the_recorded_process(paths: StackPaths) -> None:
    service = spawn(paths, "svc", ["sleep", "300"], {})
    try:
        assert pid_alive(service.pid, service.create_time)
        assert not pid_alive(service.pid, service.create_time - 3600)
    finally:
        service.stop(timeout=5)


def test_unreadable_pid_files_are_skipped(paths: StackPaths) -> None:
    paths.make()
    paths.pid_file("broken").write_text("{not json")
    paths.pid_file("old").write_text(json.dumps({"name": "old", "pid": 1}))
    assert load_services(paths) == {}


def test_process_tree_holds_the_root_and_its_descendants(paths: StackPaths, tmp_path: Path) -> None:
    service = spawn_with_child(paths, "svc", tmp_path / "child.pid")
    child = int((tmp_path / "child.pid").read_text())
    try:
        assert process_tree([service.pid]) == {service.pid, child}
        assert process_tree([child]) == {child}
    finally:
        service.stop(timeout=5)
    assert not running(child)


def test_the_callers_own_lineage_is_never_tagged(paths: StackPaths) -> None:
    """A process carrying the tag (here: a child asking about itself) leaves itself and its parents out."""
    probe = (
        "import json, os; from stack.processes import tagged_processes, process_tree; "
        f"print(json.dumps([os.getpid(), os.getppid(), sorted(tagged_processes({paths.tag!r})), "
        "sorted(process_tree([os.getpid(), os.getppid()]))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, TAG_ENV: paths.tag}, capture_output=True, text=True, check=True,
    )
    pid, parent, tagged, tree = json.loads(out.stdout)
    assert tagged == []
    # The parent's other children (siblings of the probe) may be in the tree; the lineage never is.
    assert pid not in tree and parent not in tree


def test_stop_reaches_a_child_that_left_the_session(paths: StackPaths, tmp_path: Path) -> None:
    """Like a worker's flow run: found by its environment tag, not by the process tree."""
    service = spawn_with_child(paths, "worker-9", tmp_path / "child.pid", detach=True)
    escaped = int((tmp_path / "child.pid").read_text())
    wait_for(lambda: os.getsid(escaped) != service.pid)
    assert escaped in tagged_processes(paths.tag, "worker-9")
    service.stop(timeout=5)
    assert not running(service.pid) and not running(escaped)


def test_terminate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = subprocess.Popen(["bash", "-c", f"trap '' TERM; touch {ready}; while :; do sleep 0.1; done"])
    polite = subprocess.Popen(["sleep", "300"])
    try:
        wait_for(ready.exists)
        started = time.monotonic()
        assert terminate([stubborn.pid, polite.pid], timeout=1.0) == set()
        # terminate reaped them (they are this process's children); only SIGKILL ends the stubborn one.
        assert not running(stubborn.pid) and not running(polite.pid)
        assert 1.0 <= time.monotonic() - started < 8
    finally:
        for proc in (stubborn, polite):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_terminate_ignores_pids_that_are_gone() -> None:
    done = subprocess.Popen(["true"])
    done.wait()
    assert terminate([done.pid], timeout=1.0) == set()
