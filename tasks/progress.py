"""Progress of a long stage step, as lines in the task run's log."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger


def progress(label: str) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback for the maskcls loops that logs ``label: done/total``."""
    log = get_run_logger()
    return lambda done, total: log.info(f"{label}: {done}/{total}")
