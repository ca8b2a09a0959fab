"""Fixtures of the stack's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.stack.fake_http import FakeServer, serve


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """An HTTP server on 127.0.0.1 answering `fake_server.routes`."""
    with serve() as fake:
        yield fake
