"""Gauges of the service's state (queue, health, last window), computed when /metrics is scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otlp_stats.counting.aggregator import OVERFLOW_LABEL, WindowReport
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.health import Health, HealthState


class StateCollector(Collector):
    """Gauges that are a snapshot of state, computed at scrape time rather than on every change.

    The last closed window's per-value figures export, per attribute key (label `key`), at most
    `top_values` series each, plus one `__overflow__` series summing the rest, so label
    cardinality stays bounded whatever arrives: keys (16 at most) x (top_values + 2).
    """

    def __init__(
        self,
        queue: RequestQueue,
        health: Health,
        last_reports: Callable[[], Mapping[str, WindowReport]],
        late_records: Callable[[], Mapping[str, int]],
        missing_label: str,
        top_values: int,
        window_state: Callable[[], tuple[int, int]] = lambda: (0, 0),
        values_truncated: Callable[[], int] = lambda: 0,
        watermark_lag: Callable[[], float] = lambda: 0.0,
        tracked_patterns: Callable[[], int] | None = None,
    ) -> None:
        """`tracked_patterns`: patterns tracked in open windows; None when patterns are not
        counted, and then no pattern series at all."""
        self._queue = queue
        self._health = health
        self._last_reports = last_reports
        self._late_records = late_records
        self._missing_label = missing_label
        self._top_values = top_values
        self._window_state = window_state
        self._values_truncated = values_truncated
        self._watermark_lag = watermark_lag
        self._tracked_patterns = tracked_patterns

    def collect(self) -> Iterator[Metric]:
        yield from self._queue_metrics()
        yield self._health_metric()
        late = CounterMetricFamily(
            "otlp_stats_late_records",
            "Records whose window had closed: clock_stepped_back (arrival time; counted in the "
            "oldest open window), window_closed (event time; rejected to the sender).",
            labels=["reason"],
        )
        for reason, records in self._late_records().items():
            late.add_metric([reason], records)
        yield late
        yield GaugeMetricFamily(
            "otlp_stats_watermark_lag_seconds",
            "How far behind the arrival clock windows close: the oldest unfinished request's "
            "wait, plus --allowed-lateness with event time.",
            value=self._watermark_lag(),
        )
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
        if self._tracked_patterns is not None:
            yield GaugeMetricFamily(
                "otlp_stats_tracked_patterns",
                "Message patterns tracked in open windows (bounded by --max-patterns per value "
                "and window).",
                value=self._tracked_patterns(),
            )
        reports = self._last_reports()
        if reports:
            yield from self._window_metrics(reports)

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

    def _window_metrics(self, reports: Mapping[str, WindowReport]) -> Iterator[Metric]:
        end = GaugeMetricFamily(
            "otlp_stats_last_window_end_timestamp_seconds",
            "End of the last reported window, Unix seconds.",
            value=max(report.end for report in reports.values()),
        )
        distinct = GaugeMetricFamily(
            "otlp_stats_last_window_distinct_messages",
            "Distinct messages per attribute value in the last reported window (top values), "
            "per attribute key.",
            labels=["key", "value", "missing"],
        )
        records = GaugeMetricFamily(
            "otlp_stats_last_window_records",
            "Records per attribute value in the last reported window (top values), per "
            "attribute key.",
            labels=["key", "value", "missing"],
        )
        patterns = GaugeMetricFamily(
            "otlp_stats_last_window_distinct_patterns",
            "Distinct message patterns per attribute value in the last reported window (top "
            "values), per attribute key.",
            labels=["key", "value", "missing"],
        )
        families = [distinct, records]
        if self._tracked_patterns is not None:
            families.append(patterns)
        for key, report in reports.items():
            self._add_values(key, report, families)
        yield from (end, *families)

    def _add_values(
        self, key: str, report: WindowReport, families: list[GaugeMetricFamily]
    ) -> None:
        """Per value: distinct messages, records and (if counted) distinct patterns."""
        shown, rest = report.values[: self._top_values], report.values[self._top_values :]
        for entry in shown:
            if entry.overflow:
                rest = (*rest, entry)
                continue
            labels = [key, self._missing_label if entry.missing else str(entry.value)]
            labels.append("true" if entry.missing else "false")
            figures = (entry.distinct_messages, entry.records, entry.distinct_patterns)
            for family, figure in zip(families, figures, strict=False):
                family.add_metric(labels, figure)
        if rest:
            labels = [key, OVERFLOW_LABEL, "false"]
            sums = (
                sum(e.distinct_messages for e in rest),
                sum(e.records for e in rest),
                sum(e.distinct_patterns for e in rest),
            )
            for family, figure in zip(families, sums, strict=False):
                family.add_metric(labels, figure)
