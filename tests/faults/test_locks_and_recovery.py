"""tasks/locking.py and tasks/recovery.py on their own (fast): an fcntl lock outlives nothing,
and a pid is judged dead when its process is gone or was replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prefect.locking.protocol import LockManager

from tasks.locking import FcntlLockManager, held, holder_info
from tasks.recovery import pid_dead


HOLD = textwrap.dedent("""
    import sys, time
    from tasks.locking import FcntlLockManager
    m = FcntlLockManager(sys.argv[1])
    assert m.acquire_lock("augment-abc", holder="other-process")
    print("held", flush=True)
    time.sleep(600)
""")


def test_is_a_prefect_lock_manager(tmp_path):
    m = FcntlLockManager(tmp_path / "locks")
    assert isinstance(m, LockManager)
    import copy

    assert copy.deepcopy(m) is m  # Prefect deep-copies cache policies; the held fds stay shared


def test_acquire_release_and_holder(tmp_path):
    m = FcntlLockManager(tmp_path)
    assert not m.is_locked("k")
    assert m.acquire_lock("k", "h1")
    assert m.acquire_lock("k", "h1")  # re-entrant for its holder
    assert m.is_locked("k") and m.is_lock_holder("k", "h1") and not m.is_lock_holder("k", "h2")
    # another holder (another transaction, same process) waits, and times out
    t0 = time.monotonic()
    assert not m.acquire_lock("k", "h2", acquire_timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 3
    assert not m.wait_for_lock("k", timeout=0.2)
    assert holder_info(m.lock_path("k"))["pid"] == os.getpid()
    m.release_lock("k", "h1")
    m.release_lock("k", "h1")  # releasing what one does not hold is a no-op
    assert not m.is_locked("k") and m.wait_for_lock("k", timeout=0.1)
    assert m.acquire_lock("k", "h2", acquire_timeout=0)
    m.release_lock("k", "h2")
    assert m.lock_path("a/b c").parent == tmp_path  # odd keys become plain file names


def test_lock_of_a_killed_process_is_released_by_the_os(tmp_path):
    locks = tmp_path / "locks"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(locks)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout.readline().strip() == "held"
        m = FcntlLockManager(locks)
        path = m.lock_path("augment-abc")
        assert held(path) and holder_info(path)["pid"] == proc.pid
        assert not m.acquire_lock("augment-abc", "me", acquire_timeout=0.3)
        waiting_since = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert m.acquire_lock("augment-abc", "me", acquire_timeout=10)
        assert time.monotonic() - waiting_since < 5
        assert holder_info(path)["pid"] == os.getpid()
        m.release_lock("augment-abc", "me")
        assert not held(path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("case", ["alive", "dead", "reused"])
def test_pid_dead(case):
    if case == "alive":
        assert not pid_dead(os.getppid(), since=time.time())
        return
    proc = subprocess.Popen(["sleep", "30"])
    started = time.time()
    if case == "dead":
        proc.kill()
        proc.wait()
        assert pid_dead(proc.pid, since=started)
    else:  # the pid now belongs to a process that started after the run did
        try:
            assert pid_dead(proc.pid, since=started - 3600)
            assert not pid_dead(proc.pid, since=started)
        finally:
            proc.kill()
            proc.wait()
