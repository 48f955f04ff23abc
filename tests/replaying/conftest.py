"""The replay command runs in-process here: its logging set-up must not outlive each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`otlp-stats replay` configures structlog for the process, writing to the sys.stderr of
    the moment: under capsys a capture that is closed after the test, which would break the
    logging of every later test."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)
