"""The service's own telemetry: Prometheus metrics, the scrape-time state collector, logging."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otlp_stats.counting.aggregator import OVERFLOW_LABEL, WindowReport
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.health import Health, HealthState

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


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
        self.windows_reported = Counter(
            "otlp_stats_windows_reported",
            "Window reports printed; partial ones come from shutdown.",
            ["partial"],
            registry=registry,
        )
        self.auth_refused = Counter(
            "otlp_stats_auth_refused",
            "Requests refused for a missing, malformed or invalid bearer token, before decoding.",
            ["transport", "reason"],
            registry=registry,
        )


class StateCollector(Collector):
    """Gauges that are a snapshot of state, computed at scrape time rather than on every change.

    The last closed window's per-value figures export at most `top_values` series each, plus one
    `__overflow__` series summing the rest, so label cardinality stays bounded whatever arrives.
    """

    def __init__(
        self,
        queue: RequestQueue,
        health: Health,
        last_report: Callable[[], WindowReport | None],
        late_records: Callable[[], int],
        missing_label: str,
        top_values: int,
        window_state: Callable[[], tuple[int, int]] = lambda: (0, 0),
        values_truncated: Callable[[], int] = lambda: 0,
    ) -> None:
        self._queue = queue
        self._health = health
        self._last_report = last_report
        self._late_records = late_records
        self._missing_label = missing_label
        self._top_values = top_values
        self._window_state = window_state
        self._values_truncated = values_truncated

    def collect(self) -> Iterator[Metric]:
        yield from self._queue_metrics()
        yield self._health_metric()
        late = CounterMetricFamily(
            "otlp_stats_late_records",
            "Records whose window had already been reported (clock stepped back).",
        )
        late.add_metric([], self._late_records())
        yield late
        truncated = CounterMetricFamily(
            "otlp_stats_values_truncated",
            "Attribute values longer than --max-value-length, cut and suffixed with a hash.",
        )
        truncated.add_metric([], self._values_truncated())
        yield truncated
        tracked, sketch_bytes = self._window_state()
        yield GaugeMetricFamily(
            "otlp_stats_tracked_values",
            "Attribute values tracked in open windows (bounded by --max-values per window).",
            value=tracked,
        )
        yield GaugeMetricFamily(
            "otlp_stats_sketch_bytes",
            "Hash entries held by the open windows' distinct-count sketches, bytes.",
            value=sketch_bytes,
        )
        report = self._last_report()
        if report is not None:
            yield from self._window_metrics(report)

    def _queue_metrics(self) -> Iterator[Metric]:
        for name, help_text, value in (
            ("otlp_stats_queue_requests", "Requests queued or in work.", self._queue.depth),
            ("otlp_stats_queue_bytes", "Request bytes queued or in work.", self._queue.depth_bytes),
            (
                "otlp_stats_queue_capacity_requests",
                "Queue limit in requests.",
                self._queue.max_requests,
            ),
            ("otlp_stats_queue_capacity_bytes", "Queue limit in bytes.", self._queue.max_bytes),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)

    def _health_metric(self) -> Metric:
        family = GaugeMetricFamily(
            "otlp_stats_health_state", "1 for the current health state.", labels=["state"]
        )
        for state in HealthState:
            family.add_metric([state.value], 1 if self._health.state is state else 0)
        return family

    def _window_metrics(self, report: WindowReport) -> Iterator[Metric]:
        end = GaugeMetricFamily(
            "otlp_stats_last_window_end_timestamp_seconds",
            "End of the last reported window, Unix seconds.",
            value=report.end,
        )
        distinct = GaugeMetricFamily(
            "otlp_stats_last_window_distinct_messages",
            "Distinct messages per attribute value in the last reported window (top values).",
            labels=["value", "missing"],
        )
        records = GaugeMetricFamily(
            "otlp_stats_last_window_records",
            "Records per attribute value in the last reported window (top values).",
            labels=["value", "missing"],
        )
        shown, rest = report.values[: self._top_values], report.values[self._top_values :]
        for entry in shown:
            if entry.overflow:
                rest = (*rest, entry)
                continue
            labels = [self._missing_label if entry.missing else str(entry.value)]
            labels.append("true" if entry.missing else "false")
            distinct.add_metric(labels, entry.distinct_messages)
            records.add_metric(labels, entry.records)
        if rest:
            distinct.add_metric([OVERFLOW_LABEL, "false"], sum(e.distinct_messages for e in rest))
            records.add_metric([OVERFLOW_LABEL, "false"], sum(e.records for e in rest))
        yield from (end, distinct, records)


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
