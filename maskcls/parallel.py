"""Map a function over items on every core, results in the items' order, memory bounded.

Decoding (OpenCV's ``imdecode``), resizing and hashing release the GIL, so threads are
enough to use every core for the data stages, and nothing has to be pickled. Results
come back in order, and an exception comes out at its item's place, after the results
before it: a caller sees exactly what a plain loop over the items would give.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Items handed to the pool at once, per worker; at most two such chunks are in flight.
CHUNK_PER_WORKER = 64


def cpu_count() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """The number of threads for ``workers``: None or 0 means every core."""
    if workers is None or workers == 0:
        return cpu_count()
    if workers < 0:
        raise ValueError(f"workers must be 0 (every core) or a positive number, not {workers}")
    return workers


_cv2_lock = threading.Lock()
_cv2_users = 0
_cv2_before = 0


@contextmanager
def _opencv_single_threaded() -> Iterator[None]:
    """Hold OpenCV's own thread pool at one thread while our workers run, restored after.

    N workers that each fan a resize out over every core would oversubscribe them.
    ``cv2.setNumThreads`` is process-wide, so nested or concurrent pools count their users
    and the last one out restores the previous setting.
    """
    import cv2

    global _cv2_users, _cv2_before
    with _cv2_lock:
        if _cv2_users == 0:
            _cv2_before = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _cv2_users += 1
    try:
        yield
    finally:
        with _cv2_lock:
            _cv2_users -= 1
            if _cv2_users == 0:
                cv2.setNumThreads(_cv2_before)


def map_ordered(
    fn: Callable[[T], R], items: Iterable[T], workers: int | None = None, chunk: int | None = None
) -> Iterator[R]:
    """``fn`` over ``items`` on ``workers`` threads (None or 0: every core), yielded in order.

    One worker is a plain loop in the calling thread. With more, the items go to a
    ``ThreadPoolExecutor`` in chunks of ``chunk`` (default ``CHUNK_PER_WORKER`` per worker):
    the next chunk is submitted before the current one is yielded, so the workers never
    wait on the consumer, and at most two chunks of results are held at once. Leaving
    the iteration early (an exception from ``fn``, or the caller's) cancels the work not
    yet started.
    """
    n = resolve_workers(workers)
    if n == 1:
        yield from map(fn, items)
        return
    size = chunk or n * CHUNK_PER_WORKER
    source = iter(items)
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="maskcls-data")
    try:
        with _opencv_single_threaded():
            ahead: Iterator[R] | None = None
            while batch := list(itertools.islice(source, size)):
                current = pool.map(fn, batch)
                if ahead is not None:
                    yield from ahead
                ahead = current
            if ahead is not None:
                yield from ahead
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
