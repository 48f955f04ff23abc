"""Builds the service's sinks from the `--report-sink` URIs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from otlp_stats.reporting.sinks.base import DEFAULT_QUEUE_SIZE, QueuedSink, ReportSinks, SinkTarget
from otlp_stats.reporting.sinks.file import RotatingFile
from otlp_stats.reporting.sinks.outbox import Outbox, sink_id
from otlp_stats.reporting.sinks.redis_stream import RedisStream
from otlp_stats.reporting.sinks.uri import (
    FileSpec,
    OtlpSpec,
    RedisStreamSpec,
    SinkSpec,
    StdoutSpec,
    WebhookSpec,
    parse_sink_uri,
)
from otlp_stats.reporting.sinks.webhook import Webhook


def open_sinks(
    uris: Sequence[str],
    log: Any,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    replica: str = "",
    backoff_first: float = 0.5,
    outbox: Outbox | None = None,
) -> ReportSinks:
    """stdout is the reporter's own; every other URI gets a queued sink. Not started. With an
    `outbox`, the sinks that keep reports (all but OTLP) keep their undelivered ones there."""
    specs = [(uri, parse_sink_uri(uri)) for uri in uris]
    queued = [
        QueuedSink(
            spec.scheme,
            _target(spec, replica),
            queue_size,
            _retries(spec),
            log,
            backoff_first,
            sink_id=None if isinstance(spec, OtlpSpec) else sink_id(uri),
        )
        for uri, spec in specs
        if not isinstance(spec, StdoutSpec)
    ]
    stdout = any(isinstance(spec, StdoutSpec) for _, spec in specs)
    return ReportSinks(queued, stdout, log, outbox, replica)


def _retries(spec: SinkSpec) -> int:
    # A local file has nobody to wait for but a disk with room: a few tries, then give up.
    return 3 if isinstance(spec, FileSpec | StdoutSpec) else spec.retries


def _target(spec: SinkSpec, replica: str) -> SinkTarget:
    if isinstance(spec, FileSpec):
        return RotatingFile(spec)
    if isinstance(spec, WebhookSpec):
        return Webhook(spec)
    if isinstance(spec, RedisStreamSpec):
        return RedisStream(spec)
    if isinstance(spec, OtlpSpec):
        from otlp_stats.reporting.sinks.otlp import OtlpMetrics

        return OtlpMetrics(spec, replica)
    raise ValueError(f"no sink for {spec!r}")
