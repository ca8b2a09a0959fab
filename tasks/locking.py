"""A Prefect lock manager on ``fcntl.flock``: the operating system releases a lock when its holder dies.

Prefect's own ``FileSystemLockManager`` writes a lock file and trusts it until it expires,
so a SIGKILLed holder blocks every other run with the same cache key until then. Here a
lock is an exclusive ``flock`` on ``<directory>/<key>.lock``: it lives exactly as long as
the open file description of the process that took it. A killed run therefore never
leaves a lock behind, and a second run with the same inputs waits while the first one
computes, then finds its cached result instead of computing it again.

Lock files are never deleted (deleting a flock file races with a process that has just
opened it); each is a few hundred bytes naming its last holder (pid, host, time), which is
what ``holder_info`` reads for diagnostics. ``hold_timeout`` is not supported: a lock is
held until it is released or its holder dies.

Use with ``isolation_level="SERIALIZABLE"`` on the task's cache policy::

    policy.configure(lock_manager=FcntlLockManager(settings.locks_dir), isolation_level="SERIALIZABLE")
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import anyio
from prefect.locking.protocol import LockManager

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,120}$")
_POLL_FIRST = 0.02
_POLL_MAX = 0.5


class FcntlLockManager(LockManager):
    """Cache-key locks as ``flock`` on files under ``directory`` (e.g. ``$MASKCLS_HOME/locks``).

    Locks conflict between processes and between threads of one process (each acquisition
    opens its own file description). ``holder`` is Prefect's transaction id; a holder may
    re-acquire a lock it has.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self._held: dict[str, tuple[str, int]] = {}  # key -> (holder, fd)
        self._mutex = threading.Lock()

    # A lock manager holds open file descriptors: copies share this one (Prefect deep-copies
    # cache policies) and pickles carry only the directory.
    def __deepcopy__(self, memo: dict[int, Any]) -> "FcntlLockManager":
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (FcntlLockManager, (str(self.directory),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FcntlLockManager) and other.directory == self.directory

    def __hash__(self) -> int:
        return hash(self.directory)

    def __repr__(self) -> str:
        return f"FcntlLockManager({str(self.directory)!r})"

    # ------------------------------------------------------------------ helpers
    def lock_path(self, key: str) -> Path:
        """The lock file of ``key`` (keys that are not plain file names are hashed)."""
        name = key if _SAFE.match(key) else "k-" + hashlib.sha256(key.encode()).hexdigest()[:40]
        return self.directory / f"{name}.lock"

    def _try(self, key: str) -> int | None:
        """An fd holding the exclusive lock of ``key``, or None when someone else holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _took(self, key: str, holder: str, fd: int) -> None:
        info = json.dumps({"key": key, "holder": holder, "pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.time()}).encode()
        try:  # diagnostics only: a full disk must not fail the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, info, 0)
        except OSError:
            pass
        with self._mutex:
            self._held[key] = (holder, fd)

    def _holds(self, key: str, holder: str | None) -> bool:
        with self._mutex:
            entry = self._held.get(key)
        return entry is not None and entry[0] == holder

    def _free_now(self, key: str) -> bool:
        with self._mutex:
            if key in self._held:
                return False
        fd = self._try(key)
        if fd is None:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        return True

    # ------------------------------------------------------------------ LockManager
    def _waits(self, acquire_timeout: Optional[float]) -> Iterator[float]:
        """Back-off sleeps between attempts, ending when ``acquire_timeout`` runs out."""
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        delay = _POLL_FIRST
        while True:
            if deadline is None:
                yield delay
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                yield min(delay, left)
            delay = min(delay * 1.5, _POLL_MAX)

    def _attempt(self, key: str, holder: str) -> bool:
        fd = self._try(key)
        if fd is None:
            return False
        self._took(key, holder, fd)
        return True

    def acquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None,
                     hold_timeout: Optional[float] = None) -> bool:
        if self._holds(key, holder) or self._attempt(key, holder):
            return True
        for wait in self._waits(acquire_timeout):
            time.sleep(wait)
            if self._attempt(key, holder):
                return True
        return False

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None,
                            hold_timeout: Optional[float] = None) -> bool:
        if self._holds(key, holder) or self._attempt(key, holder):
            return True
        for wait in self._waits(acquire_timeout):
            await anyio.sleep(wait)
            if self._attempt(key, holder):
                return True
        return False

    def release_lock(self, key: str, holder: str) -> None:
        with self._mutex:
            entry = self._held.get(key)
            if entry is None or entry[0] != holder:
                # Prefect releases after a rollback too; releasing a lock one does not hold is a no-op.
                return
            del self._held[key]
        fd = entry[1]
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def is_locked(self, key: str) -> bool:
        return not self._free_now(key)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        return self._holds(key, holder)

    def wait_for_lock(self, key: str, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _POLL_FIRST
        while not self._free_now(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX)
        return True

    async def await_for_lock(self, key: str, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _POLL_FIRST
        while not self._free_now(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await anyio.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX)
        return True


@contextmanager
def exclusive(directory: Path | str, key: str) -> Iterator[None]:
    """Hold the lock of ``key`` under ``directory`` for the block, waiting as long as another holder has it.

    For shared work outside Prefect's transactions (the promotion's compare-and-set): one
    holder at a time across processes and threads, released by the OS if the holder dies.
    """
    manager = FcntlLockManager(directory)
    holder = uuid.uuid4().hex
    manager.acquire_lock(key, holder)
    try:
        yield
    finally:
        manager.release_lock(key, holder)


def holder_info(path: Path | str) -> dict[str, Any] | None:
    """What the last holder of a lock file wrote about itself (pid, host, key, since), if readable."""
    try:
        return json.loads(Path(path).read_bytes() or b"null")
    except (OSError, ValueError):
        return None


def held(path: Path | str) -> bool:
    """True when some process holds the flock of this lock file right now."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken just now
    return False
