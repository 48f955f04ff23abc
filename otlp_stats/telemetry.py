"""The service's own telemetry, used by every stage: Prometheus counters, logging."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass(frozen=True)
class DoorMetrics:
    """One transport's children of the per-Export metrics, bound once: `labels()` costs a lock,
    a tuple and a dict lookup, paid on every request otherwise."""

    export_requests: Counter
    records_accepted: Counter
    export_duration: Histogram


class Metrics:
    """Counters and histograms the pipeline updates as it works, in an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # `_created` series double the exposition for no use on a dashboard.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry
        self.export_requests = Counter(
            "otlp_stats_export_requests",
            "Export requests received, accepted or not.",
            ["transport"],
            registry=registry,
        )
        self.requests_refused = Counter(
            "otlp_stats_export_refused",
            "Export requests refused, by reason.",
            ["transport", "reason"],
            registry=registry,
        )
        self.records_accepted = Counter(
            "otlp_stats_records_accepted",
            "Log records acknowledged to senders (counted).",
            ["transport"],
            registry=registry,
        )
        self.records_counted = Counter(
            "otlp_stats_records_counted",
            "Log records counted into a window by the aggregator.",
            registry=registry,
        )
        self.requests_scanned = Counter(
            "otlp_stats_requests_scanned",
            "Requests whose bytes a worker's scanner walked (validated and resolved): one walk "
            "per request, however many attribute keys it resolves.",
            registry=registry,
        )
        self.records_failed = Counter(
            "otlp_stats_records_failed",
            "Records a worker failed to count through a fault of ours; their sender was refused "
            "(INTERNAL, HTTP 500). A bug if ever non-zero.",
            registry=registry,
        )
        self.export_duration = Histogram(
            "otlp_stats_export_duration_seconds",
            "Time to answer an Export request.",
            ["transport"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.worker_duration = Histogram(
            "otlp_stats_worker_processing_seconds",
            "Time a worker spends counting one request: check, resolve, hash, hand over.",
            buckets=(*_LATENCY_BUCKETS, 10, 30),
            registry=registry,
        )
        self.overflow_records = Counter(
            "otlp_stats_overflow_records",
            "Records of attribute values past the per-window cap (--max-values), counted in the "
            "report's __overflow__ entry.",
            registry=registry,
        )
        self.pattern_overflow_records = Counter(
            "otlp_stats_pattern_overflow_records",
            "Records of message patterns past --max-patterns of their value and window, counted "
            "in the value's __overflow__ pattern.",
            registry=registry,
        )
        self.windows_reported = Counter(
            "otlp_stats_windows_reported",
            "Window reports printed; partial ones come from shutdown.",
            ["partial"],
            registry=registry,
        )
        self.revisions = Counter(
            "otlp_stats_revisions",
            "Event time: revisions printed, reports of a stored window printed again with the "
            "late records merged into it since (revision 2, 3, ...).",
            registry=registry,
        )
        self.timestamps_adjusted = Counter(
            "otlp_stats_timestamps_adjusted",
            "Event time: records counted at their request's arrival instead of their own time: "
            "dated more than --max-clock-skew ahead of it (future), or without a time (missing).",
            ["reason"],
            registry=registry,
        )
        for reason in ("future", "missing"):
            self.timestamps_adjusted.labels(reason)
        self.auth_refused = Counter(
            "otlp_stats_auth_refused",
            "Requests refused for a missing, malformed or invalid bearer token, before decoding.",
            ["transport", "reason"],
            registry=registry,
        )
        self._doors: dict[str, DoorMetrics] = {}

    def door(self, transport: str) -> DoorMetrics:
        """The per-Export metrics of one transport ("grpc", "http"), bound on first use."""
        door = self._doors.get(transport)
        if door is None:
            door = self._doors[transport] = DoorMetrics(
                self.export_requests.labels(transport),
                self.records_accepted.labels(transport),
                self.export_duration.labels(transport),
            )
        return door


def configure_logging(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """One processor chain for the whole process; service logs go to stderr, never stdout."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


class RateLimitedLog:
    """Logs an event at most once per interval; the next line says how many were suppressed.

    Refusals under overload can happen thousands of times a second: this keeps stderr bounded.
    """

    def __init__(
        self,
        logger: Any,
        interval: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._monotonic = monotonic
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, event: str, **fields: Any) -> bool:
        """Log unless the same event was logged within the interval; True if it was logged."""
        now = self._monotonic()
        last = self._last.get(event)
        if last is not None and now - last < self._interval:
            self._suppressed[event] = self._suppressed.get(event, 0) + 1
            return False
        self._last[event] = now
        self._logger.warning(event, suppressed=self._suppressed.pop(event, 0), **fields)
        return True
