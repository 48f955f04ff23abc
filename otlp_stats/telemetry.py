"""The service's own telemetry, used by every stage: Prometheus counters, logging.

The metrics every Export updates are plain numbers (`DoorMetrics`, `Metrics.hot`), read at
scrape time by a collector: a prometheus_client Counter.inc or Histogram.observe takes a lock
and a few calls each, and a small request made eight of them, a tenth of its own CPU. They are
only ever updated on the event loop's thread, so no lock is needed.
"""

from __future__ import annotations

import logging
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import structlog
from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class BucketCounts:
    """A histogram as plain numbers: observe() is a bisect and two additions; the cumulative
    buckets Prometheus wants are summed at scrape time."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(bound) for bound in bounds)
        # One count per bound, and the last for values above them all (+Inf).
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are `le`: a value equal to a bound is in that bound's bucket.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by `le` label, +Inf last, as the exposition has them."""
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            cumulative.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
        return cumulative


class DoorMetrics:
    """One transport's per-Export figures: otlp_stats_export_requests_total,
    otlp_stats_records_accepted_total and otlp_stats_export_duration_seconds."""

    __slots__ = ("export_duration", "export_requests", "records_accepted")

    def __init__(self) -> None:
        self.export_requests = 0
        self.records_accepted = 0
        self.export_duration = BucketCounts(_LATENCY_BUCKETS)


class HotMetrics:
    """The service-wide figures a worker updates per request."""

    __slots__ = (
        "pattern_cut_length",
        "pattern_cut_tokens",
        "records_counted",
        "requests_scanned",
        "worker_duration",
    )

    def __init__(self) -> None:
        self.records_counted = 0
        self.requests_scanned = 0
        self.worker_duration = BucketCounts((*_LATENCY_BUCKETS, 10, 30))
        # Records whose message pattern the masker cut at --max-pattern-tokens, at
        # --max-pattern-length (a request's count, added once it is tallied).
        self.pattern_cut_tokens = 0
        self.pattern_cut_length = 0


class _HotCollector(Collector):
    """Exposes the plain-number metrics under the names and help the Counters and Histograms
    they replace had."""

    def __init__(self, hot: HotMetrics, doors: dict[str, DoorMetrics]) -> None:
        self._hot = hot
        self._doors = doors

    def collect(self) -> Iterator[Metric]:
        doors = list(self._doors.items())
        requests = CounterMetricFamily(
            "otlp_stats_export_requests",
            "Export requests received, accepted or not.",
            labels=["transport"],
        )
        accepted = CounterMetricFamily(
            "otlp_stats_records_accepted",
            "Log records acknowledged to senders (counted).",
            labels=["transport"],
        )
        duration = HistogramMetricFamily(
            "otlp_stats_export_duration_seconds",
            "Time to answer an Export request.",
            labels=["transport"],
        )
        for transport, door in doors:
            requests.add_metric([transport], door.export_requests)
            accepted.add_metric([transport], door.records_accepted)
            counts = door.export_duration
            duration.add_metric([transport], counts.buckets(), counts.sum)
        yield requests
        yield accepted
        yield duration
        hot = self._hot
        yield CounterMetricFamily(
            "otlp_stats_records_counted",
            "Log records counted into a window by the aggregator.",
            value=hot.records_counted,
        )
        yield CounterMetricFamily(
            "otlp_stats_requests_scanned",
            "Requests whose bytes a worker's scanner walked (validated and resolved): one walk "
            "per request, however many attribute keys it resolves.",
            value=hot.requests_scanned,
        )
        worker = HistogramMetricFamily(
            "otlp_stats_worker_processing_seconds",
            "Time a worker spends counting one request: check, resolve, hash, hand over.",
        )
        worker.add_metric([], hot.worker_duration.buckets(), hot.worker_duration.sum)
        yield worker
        cut = CounterMetricFamily(
            "otlp_stats_pattern_cut_records",
            "Records whose message pattern the masker cut at a bound: tokens (the rest of a "
            "message past --max-pattern-tokens is one <*>) or length (a pattern past "
            "--max-pattern-length bytes ends in <*>); a record cut at both is in both.",
            labels=["bound"],
        )
        cut.add_metric(["tokens"], hot.pattern_cut_tokens)
        cut.add_metric(["length"], hot.pattern_cut_length)
        yield cut


class Metrics:
    """Counters and histograms the pipeline updates as it works, in an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # `_created` series double the exposition for no use on a dashboard.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry
        self.requests_refused = Counter(
            "otlp_stats_export_refused",
            "Export requests refused, by reason.",
            ["transport", "reason"],
            registry=registry,
        )
        self.records_failed = Counter(
            "otlp_stats_records_failed",
            "Records a worker failed to count through a fault of ours; their sender was refused "
            "(INTERNAL, HTTP 500). A bug if ever non-zero.",
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
        self.hot = HotMetrics()
        # By transport ("grpc", "http"): exposed from the first use on, at zero until counted.
        self._doors: dict[str, DoorMetrics] = {}
        registry.register(_HotCollector(self.hot, self._doors))

    def door(self, transport: str) -> DoorMetrics:
        """The per-Export metrics of one transport, created on first use."""
        door = self._doors.get(transport)
        if door is None:
            door = self._doors[transport] = DoorMetrics()
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
