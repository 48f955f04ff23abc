"""The replay command runs in-process here: its logging set-up must not outlive each test.

`store_url` is each store a replay writes history into: an SQLite file, and a real
redis-server on a free loopback port, started for the test and stopped after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.support.redistools import RedisServer


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`otlp-stats replay` configures structlog for the process, writing to the sys.stderr of
    the moment: under capsys a capture that is closed after the test, which would break the
    logging of every later test."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
