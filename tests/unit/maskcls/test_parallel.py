"""maskcls.parallel: an ordered map over threads, the same as a plain loop for any number of workers."""

from __future__ import annotations

import threading
import time

import cv2
import pytest

from maskcls.parallel import cpu_count, map_ordered, resolve_workers


def _slow_square(k: int) -> int:
    # Later items finish first, so an unordered map would show it.
    time.sleep(0.002 * ((7 * k) % 5))
    return k * k


@pytest.mark.parametrize("workers, chunk", [(1, None), (2, None), (3, 2), (4, 1)])
def test_results_come_in_the_items_order(workers: int, chunk: int | None) -> None:
    items = list(range(23))
    assert list(map_ordered(_slow_square, items, workers, chunk)) == [k * k for k in items]


def test_an_iterator_of_items_is_read_lazily_in_chunks() -> None:
    pulled: list[int] = []

    def items():
        for k in range(10):
            pulled.append(k)
            yield k

    out = map_ordered(lambda k: k, items(), workers=2, chunk=3)
    assert next(out) == 0
    assert len(pulled) <= 6  # the current chunk and the one submitted ahead of it
    assert list(out) == list(range(1, 10))


def test_an_error_comes_at_its_place_after_the_results_before_it() -> None:
    def fn(k: int) -> int:
        if k in (5, 9):
            raise ValueError(f"bad item {k}")
        return k

    for workers in (1, 3):
        got: list[int] = []
        with pytest.raises(ValueError, match="bad item 5"):
            got.extend(map_ordered(fn, range(12), workers, chunk=2))
        assert got == [0, 1, 2, 3, 4]


def test_leaving_early_cancels_the_work_not_started() -> None:
    done: list[int] = []

    def fn(k: int) -> int:
        done.append(k)
        return k

    out = map_ordered(fn, range(1000), workers=2, chunk=4)
    assert next(out) == 0
    out.close()
    assert len(done) < 1000


def test_one_worker_is_a_plain_loop_in_the_calling_thread() -> None:
    threads = set(map_ordered(lambda _: threading.get_ident(), range(5), workers=1))
    assert threads == {threading.get_ident()}


def test_several_workers_use_other_threads_and_opencv_is_restored_after() -> None:
    before = cv2.getNumThreads()
    seen = list(map_ordered(lambda _: (threading.get_ident(), cv2.getNumThreads()), range(8), workers=2))
    assert threading.get_ident() not in {ident for ident, _ in seen}
    assert {n for _, n in seen} == {1}  # OpenCV's own pool held at one thread while ours run
    assert cv2.getNumThreads() == before


def test_workers_zero_or_none_is_every_core_and_negative_is_refused() -> None:
    assert resolve_workers(None) == resolve_workers(0) == cpu_count() >= 1
    assert resolve_workers(3) == 3
    with pytest.raises(ValueError, match="workers"):
        resolve_workers(-1)
