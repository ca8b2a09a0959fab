"""Waiting for a condition with a deadline, and failing with what was waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1,
               alive: Callable[[], bool] | None = None, log: Callable[[], str] | None = None) -> T:
    """Poll ``check`` until it returns something truthy, and return that.

    Fails (AssertionError naming ``what``) after ``timeout`` seconds, or as soon as ``alive``
    says the process being waited on has ended; ``log`` adds its text to the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if alive is not None and not alive():
            raise AssertionError(f"process ended while waiting for {what}:\n{log() if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n{log() if log else ''}")
        time.sleep(interval)
