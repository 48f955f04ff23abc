"""The outbox seam: where sinks keep undelivered reports across a restart (the store owns it)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from otlp_stats.reporting.sinks.uri import redact


class KeptReport(NamedTuple):
    """One report left in the outbox: its order, idempotency key, JSON line and the sinks
    that had not delivered it."""

    seq: int
    key: str
    line: str
    sinks: tuple[str, ...]


class Outbox(Protocol):
    """Called from the sinks' thread (keep, forget) and at start (left); never concurrently
    with itself on one connection's transaction (the implementation locks)."""

    def keep(self, sinks: Sequence[str], key: str, line: str) -> int:
        """One row per sink, in one transaction; the report's sequence number."""
        ...

    def forget(self, sink: str, seq: int) -> None: ...

    def left(self) -> list[KeptReport]:
        """What is still undelivered, oldest first."""
        ...

    def close(self) -> None: ...


def sink_id(uri: str) -> str:
    """Stable across restarts, and without the password: a changed password keeps the rows."""
    return hashlib.sha256(redact(uri).encode("utf-8")).hexdigest()[:16]


def idempotency_key(fields: dict[str, Any], replica: str) -> str:
    """`<window start>/<key>/<revision>/<replica or ->`: one report of one window, whoever
    delivers it and however often."""
    return "/".join(
        (
            str(fields["window_start"]),
            str(fields["attribute_key"]),
            str(fields["revision"]),
            replica or "-",
        )
    )
