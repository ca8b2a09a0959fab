"""What the CLI tests share: a fresh MASKCLS_HOME and the logging configuration put back."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import cli


@pytest.fixture
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh MASKCLS_HOME, and the logging configuration put back as it was after each test."""
    home = tmp_path / "home"
    monkeypatch.setenv("MASKCLS_HOME", str(home))
    for name in ("MASKCLS_WORKERS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, filters = list(root.handlers), {h: list(h.filters) for h in root.handlers}
    cli_handlers, cli_propagate = list(cli.log.handlers), cli.log.propagate
    yield home
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    for handler, kept in filters.items():
        handler.filters[:] = kept
    cli.log.handlers[:] = cli_handlers
    cli.log.propagate = cli_propagate
