"""`maskcls train` as a new user runs it (no PREFECT_API_URL: a temporary Prefect server of its
own) stopped with SIGTERM or SIGINT mid-run: it exits, and leaves no process behind.

The run's descendants are collected with psutil while it runs, so a server that outlived it
(re-parented to init) is still found afterwards.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import psutil
import pytest

from tests.support.data import PAST_COPIES, copy_subset
from tests.support.servers import base_env
from tests.support.waiting import wait_until

from .conftest import Cli, CliRun


class Descendants:
    """Every process seen below ``pid`` while it ran (polled in a thread until ``stop``)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.seen: dict[int, psutil.Process] = {}
        self.commands: dict[int, str] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            try:
                for proc in self.root.children(recursive=True):
                    self.seen.setdefault(proc.pid, proc)
                    try:  # read again each time: a child caught between fork and exec shows its parent's
                        self.commands[proc.pid] = " ".join(proc.cmdline())[:160]
                    except psutil.Error:
                        self.commands.setdefault(proc.pid, "?")
            except psutil.NoSuchProcess:
                return
            self._done.wait(0.1)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)

    def alive(self) -> dict[int, str]:
        """Those still running (zombies count as gone), with their command lines."""
        left = {}
        for pid, proc in list(self.seen.items()):  # the polling thread may still add to it
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left[pid] = self.commands[pid]
            except psutil.NoSuchProcess:
                pass
        return left


def _flow_running(run: CliRun) -> bool:
    return "Beginning flow run" in run.stdout() + run.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_train_leaves_no_process_behind(sig: signal.Signals, cli: Cli, tmp_path: Path) -> None:
    data = copy_subset(tmp_path / "photos", 8, offset=PAST_COPIES + 40)
    env = base_env(MASKCLS_HOME=str(tmp_path / "home"))  # no PREFECT_API_URL, no MLFLOW_TRACKING_URI
    assert "PREFECT_API_URL" not in env
    run = cli.start(["train", "--profile", "smoke", "--source", str(data)], env)
    tree = Descendants(run.pid)
    try:
        wait_until(lambda: _flow_running(run), 240, "the flow run to begin", alive=run.alive, log=run.log)
        servers = [pid for pid, cmd in dict(tree.commands).items() if "uvicorn" in cmd and "prefect" in cmd]
        assert servers, f"no Prefect server among the run's processes: {tree.commands}"
        run.proc.send_signal(sig)
        code = run.wait(90)
    finally:
        tree.stop()
    assert code != 0, run.log()
    try:  # a stopping process gets its last seconds before it counts as left behind
        wait_until(lambda: not tree.alive(), 15, f"no process left after {sig.name}", log=lambda: str(tree.alive()))
    finally:
        for pid in tree.alive():  # an orphan must not outlive the test either
            tree.seen[pid].kill()
