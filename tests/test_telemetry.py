"""Scrape-time metrics with bounded cardinality, and the rate-limited refusal log."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from otlp_stats.counting.aggregator import ValueReport, WindowReport
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.counting.sketches import DistinctEstimate
from otlp_stats.health import Health
from otlp_stats.operating.state_metrics import StateCollector
from otlp_stats.telemetry import Metrics, RateLimitedLog
from tests.support.servicetools import metric_value


def scrape(report: WindowReport | None, top_values: int = 100) -> str:
    registry = CollectorRegistry()
    registry.register(
        StateCollector(
            RequestQueue(5, 1000),
            Health(),
            lambda: {} if report is None else {"service.name": report},
            lambda: {"clock_stepped_back": 3, "window_closed": 0},
            "unknown",
            top_values,
        )
    )
    return generate_latest(registry).decode()


def report_with(values: int) -> WindowReport:
    entries = tuple(
        ValueReport(f"v{n:03d}", DistinctEstimate.exact(values - n), 1) for n in range(values)
    )
    missing = ValueReport(None, DistinctEstimate.exact(1), 1)
    return WindowReport(0, 10, False, values, DistinctEstimate.exact(values), (*entries, missing))


def test_last_window_exports_top_values_plus_one_overflow_series() -> None:
    text = scrape(report_with(150), top_values=100)
    series = [
        line
        for line in text.splitlines()
        if line.startswith("otlp_stats_last_window_distinct_messages{")
    ]
    assert len(series) == 101
    assert metric_value(text, "otlp_stats_last_window_distinct_messages", {"value": "v000"}) == 150
    # 50 values left out of the top 100 (distinct 50..1) plus the missing bucket (1).
    assert (
        metric_value(text, "otlp_stats_last_window_distinct_messages", {"value": "__overflow__"})
        == sum(range(1, 51)) + 1
    )


def test_missing_bucket_is_labelled_as_missing() -> None:
    text = scrape(report_with(2))
    assert (
        metric_value(
            text, "otlp_stats_last_window_records", {"value": "unknown", "missing": "true"}
        )
        == 1
    )


def test_queue_and_health_gauges_are_snapshots() -> None:
    text = scrape(None)
    assert metric_value(text, "otlp_stats_queue_capacity_requests", {}) == 5
    assert metric_value(text, "otlp_stats_queue_requests", {}) == 0
    assert metric_value(text, "otlp_stats_health_state", {"state": "starting"}) == 1
    assert (
        metric_value(text, "otlp_stats_late_records_total", {"reason": "clock_stepped_back"}) == 3
    )
    assert metric_value(text, "otlp_stats_late_records_total", {"reason": "window_closed"}) == 0
    assert metric_value(text, "otlp_stats_last_window_end_timestamp_seconds", {}) is None


class ListLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def test_rate_limited_log_suppresses_within_the_interval_and_says_how_many() -> None:
    now = [100.0]
    logger = ListLogger()
    log = RateLimitedLog(logger, interval=10, monotonic=lambda: now[0])
    assert log.warning("refused", n=1)
    assert not log.warning("refused", n=2)
    assert not log.warning("refused", n=3)
    assert log.warning("other")
    now[0] += 10
    assert log.warning("refused", n=4)
    assert logger.lines == [
        ("refused", {"suppressed": 0, "n": 1}),
        ("other", {"suppressed": 0}),
        ("refused", {"suppressed": 2, "n": 4}),
    ]


def test_each_key_has_its_own_per_value_series() -> None:
    registry = CollectorRegistry()
    namespaces = WindowReport(
        0,
        10,
        False,
        2,
        DistinctEstimate.exact(2),
        (ValueReport("prod", DistinctEstimate.exact(2), 2),),
    )
    registry.register(
        StateCollector(
            RequestQueue(5, 1000),
            Health(),
            lambda: {"service.name": report_with(2), "k8s.namespace.name": namespaces},
            lambda: {},
            "unknown",
            100,
        )
    )
    text = generate_latest(registry).decode()
    by_key = {"key": "k8s.namespace.name", "value": "prod"}
    assert metric_value(text, "otlp_stats_last_window_records", by_key) == 2
    assert (
        metric_value(
            text, "otlp_stats_last_window_records", {"key": "service.name", "value": "v000"}
        )
        == 1
    )
    assert (
        metric_value(
            text, "otlp_stats_last_window_records", {"key": "k8s.namespace.name", "value": "v000"}
        )
        is None
    )


def scrape_patterns(report: WindowReport, tracked: int | None, top_values: int = 100) -> str:
    registry = CollectorRegistry()
    registry.register(
        StateCollector(
            RequestQueue(5, 1000),
            Health(),
            lambda: {"service.name": report},
            lambda: {},
            "unknown",
            top_values,
            tracked_patterns=None if tracked is None else (lambda: tracked),
        )
    )
    return generate_latest(registry).decode()


def with_patterns(values: int) -> WindowReport:
    entries = tuple(
        ValueReport(f"v{n:03d}", DistinctEstimate.exact(values - n), 1, distinct_patterns=n + 1)
        for n in range(values)
    )
    return WindowReport(0, 10, False, values, DistinctEstimate.exact(values), entries)


def test_distinct_patterns_per_top_value_with_the_rest_in_one_series() -> None:
    text = scrape_patterns(with_patterns(5), tracked=42, top_values=3)
    name = "otlp_stats_last_window_distinct_patterns"
    series = [line for line in text.splitlines() if line.startswith(name + "{")]
    assert len(series) == 3 + 1
    assert metric_value(text, name, {"key": "service.name", "value": "v000"}) == 1
    assert metric_value(text, name, {"value": "v002"}) == 3
    assert metric_value(text, name, {"value": "__overflow__"}) == 4 + 5
    assert metric_value(text, "otlp_stats_tracked_patterns", {}) == 42


def test_no_pattern_series_when_patterns_are_not_counted() -> None:
    text = scrape_patterns(with_patterns(2), tracked=None)
    assert "pattern" not in text
    assert metric_value(text, "otlp_stats_last_window_distinct_messages", {"value": "v000"}) == 2


def test_hot_metrics_expose_what_prometheus_counters_and_histograms_would() -> None:
    """The plain-number metrics read at scrape time give the exposition a Counter and a
    Histogram fed the same values give: names, labels, `le` buckets (a value equal to a bound
    is in its bucket), count and sum."""
    metrics = Metrics(CollectorRegistry())
    door = metrics.door("grpc")
    metrics.door("http")  # used, nothing counted yet: its series are there, at zero
    reference = CollectorRegistry()
    requests = Counter("otlp_stats_export_requests", "x", ["transport"], registry=reference)
    accepted = Counter("otlp_stats_records_accepted", "x", ["transport"], registry=reference)
    duration = Histogram(
        "otlp_stats_export_duration_seconds",
        "x",
        ["transport"],
        buckets=door.export_duration.bounds,
        registry=reference,
    )
    for transport in ("grpc", "http"):
        requests.labels(transport)
        accepted.labels(transport)
        duration.labels(transport)
    for seconds in (0.0001, 0.0005, 0.003, 0.003, 1.0, 7.0):
        door.export_requests += 1
        door.records_accepted += 10
        door.export_duration.observe(seconds)
        requests.labels("grpc").inc()
        accepted.labels("grpc").inc(10)
        duration.labels("grpc").observe(seconds)
    assert _samples(metrics.registry, "otlp_stats_export_") == _samples(
        reference, "otlp_stats_export_"
    )
    assert _samples(metrics.registry, "otlp_stats_records_accepted") == _samples(
        reference, "otlp_stats_records_accepted"
    )


def test_worker_figures_are_read_at_scrape_time() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.hot.records_counted += 7
    metrics.hot.requests_scanned += 2
    metrics.hot.worker_duration.observe(0.002)
    metrics.hot.worker_duration.observe(20.0)
    registry = metrics.registry
    assert registry.get_sample_value("otlp_stats_records_counted_total") == 7
    assert registry.get_sample_value("otlp_stats_requests_scanned_total") == 2
    bucket = "otlp_stats_worker_processing_seconds_bucket"
    assert registry.get_sample_value(bucket, {"le": "0.0025"}) == 1
    assert registry.get_sample_value(bucket, {"le": "10.0"}) == 1
    assert registry.get_sample_value(bucket, {"le": "30.0"}) == 2
    assert registry.get_sample_value(bucket, {"le": "+Inf"}) == 2
    assert registry.get_sample_value("otlp_stats_worker_processing_seconds_count") == 2
    assert registry.get_sample_value("otlp_stats_worker_processing_seconds_sum") == 20.002


def _samples(registry: CollectorRegistry, prefix: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, repr(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith(prefix)
    }
