"""Patterns in the reports: JSON fields, the text column and list, the sinks, the counter of
records past --max-patterns; and nothing of them when patterns are not counted."""

from __future__ import annotations

import io
import json
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry

from otlp_stats.clock import SystemClock
from otlp_stats.counting.aggregator import Aggregator, ValueReport, WindowReport
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.counting.sketches import DistinctEstimate
from otlp_stats.patterns.tally import OVERFLOW_PATTERN, PatternCount
from otlp_stats.reporting.reporter import (
    PatternsShown,
    Reporter,
    patterns_shown,
    render_json,
    render_text,
)
from otlp_stats.reporting.sinks.base import SinkReport
from otlp_stats.reporting.sinks.build import open_sinks
from otlp_stats.reporting.sinks.otlp import PATTERNS_METRIC, build_request
from otlp_stats.telemetry import Metrics

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
KEY = "service.name"

CHECKOUT_TOP = (
    PatternCount("payment <*> accepted in <*>ms", 30, "payment 1 accepted in 8ms"),
    PatternCount("cart <*> emptied", 7, "cart 7 emptied"),
)
REPORT = WindowReport(
    start=T0,
    end=T0 + 10,
    partial=False,
    records=45,
    distinct=DistinctEstimate.exact(12),
    values=(
        ValueReport("checkout", DistinctEstimate.exact(10), 40, False, 4, CHECKOUT_TOP, 2),
        ValueReport(
            None, DistinctEstimate.exact(2), 5, False, 1, (PatternCount("boot", 5, "boot"),)
        ),
    ),
)
SHOWN = PatternsShown()


def test_json_values_carry_distinct_and_top_patterns_after_their_other_fields() -> None:
    checkout, missing = json.loads(render_json(REPORT, KEY, "unknown", patterns=SHOWN))["values"]
    assert list(checkout) == [
        *("value", "missing", "overflow", "distinct_messages", "estimated", "records"),
        *("distinct_patterns", "top_patterns"),
    ]
    assert checkout["distinct_patterns"] == 4
    assert checkout["top_patterns"] == [
        {"pattern": p.pattern, "records": p.records, "example": p.example} for p in CHECKOUT_TOP
    ]
    assert checkout["top_patterns"][1] == {
        "pattern": "cart <*> emptied",
        "records": 7,
        "example": "cart 7 emptied",
    }
    assert missing["top_patterns"] == [{"pattern": "boot", "records": 5, "example": "boot"}]


def test_json_without_the_list_when_top_patterns_is_zero() -> None:
    shown = patterns_shown(count=True, top=0, text=True)
    values = json.loads(render_json(REPORT, KEY, "unknown", patterns=shown))["values"]
    assert [value["distinct_patterns"] for value in values] == [4, 1]
    assert all("top_patterns" not in value for value in values)


def test_reports_are_as_before_patterns_when_they_are_not_counted() -> None:
    assert patterns_shown(count=False, top=3, text=True) is None
    before = render_json(REPORT, KEY, "unknown")
    assert render_json(REPORT, KEY, "unknown", patterns=None) == before
    assert "pattern" not in before
    assert "pattern" not in render_text(REPORT, KEY, "unknown", patterns=None)


def test_text_has_a_patterns_column_and_no_list_unless_asked() -> None:
    lines = render_text(REPORT, KEY, "unknown", patterns=SHOWN).splitlines()
    assert lines[1].split() == ["value", "distinct", "records", "patterns"]
    assert [line.split() for line in lines[2:5]] == [
        ["checkout", "10", "40", "4"],
        ["unknown", "2", "5", "1"],
        ["total", "12", "45"],
    ]


def test_text_lists_the_top_patterns_under_each_value_when_asked() -> None:
    shown = patterns_shown(count=True, top=3, text=True)
    lines = render_text(REPORT, KEY, "unknown", patterns=shown).splitlines()
    assert lines[1:8] == [
        "  value       distinct     records    patterns",
        "  checkout          10          40           4",
        "                                30  payment <*> accepted in <*>ms",
        "                                 7  cart <*> emptied",
        "  unknown            2           5           1",
        "                                 5  boot",
        "  total             12          45",
    ]


def test_a_pattern_with_a_control_character_stays_on_its_line() -> None:
    value = ValueReport("a", DistinctEstimate.exact(1), 1, False, 1, (PatternCount("x\ry", 1, ""),))
    report = WindowReport(T0, T0 + 10, False, 1, DistinctEstimate.exact(1), (value,))
    text = render_text(report, KEY, "unknown", patterns=PatternsShown(text_top=True))
    assert '"x\\ry"' in text and "\r" not in text


def test_the_otlp_sink_adds_a_gauge_of_distinct_patterns_per_value() -> None:
    item = SinkReport(
        REPORT, lambda r: json.loads(render_json(r, KEY, "unknown", patterns=SHOWN)), json.dumps
    )
    (resource_metrics,) = build_request(item, "replica-a").resource_metrics
    (scope,) = resource_metrics.scope_metrics
    by_name = {metric.name: metric for metric in scope.metrics}
    gauge = by_name[PATTERNS_METRIC].gauge
    points = {
        tuple(a.value.string_value or str(a.value.bool_value) for a in p.attributes): p.as_int
        for p in gauge.data_points
    }
    assert points == {
        (KEY, "checkout", "False", "False", "False"): 4,
        (KEY, "unknown", "True", "False", "False"): 1,
    }
    # The same attributes as the distinct messages' gauge, point for point.
    distinct = by_name["otlp_stats.distinct_messages"].gauge.data_points
    assert [p.attributes for p in gauge.data_points] == [p.attributes for p in distinct]
    assert {p.time_unix_nano for p in gauge.data_points} == {int((T0 + 10) * 1e9)}


def test_the_otlp_sink_has_no_pattern_gauge_when_patterns_are_not_counted() -> None:
    item = SinkReport(REPORT, lambda r: json.loads(render_json(r, KEY, "unknown")), json.dumps)
    (resource_metrics,) = build_request(item, "").resource_metrics
    names = [metric.name for metric in resource_metrics.scope_metrics[0].metrics]
    assert PATTERNS_METRIC not in names


def reporter(out: io.StringIO, metrics: Metrics, report_format: str, **options: object) -> Reporter:
    return Reporter(
        Aggregator(10, T0), RequestQueue(1, 1), SystemClock(), out, metrics, KEY, "unknown",
        report_format, **options,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_a_file_sink_gets_the_json_with_the_patterns(tmp_path: Path) -> None:
    path = tmp_path / "reports.jsonl"
    sinks = open_sinks(["stdout", f"file://{path}"], structlog.get_logger("test"))
    sinks.start()
    out = io.StringIO()
    reporter(out, Metrics(CollectorRegistry()), "text", sinks=sinks, patterns=SHOWN).print_report(
        REPORT
    )
    await sinks.stop(5.0)
    assert path.read_text().splitlines() == [render_json(REPORT, KEY, "unknown", patterns=SHOWN)]
    assert "patterns" in out.getvalue()


def test_records_past_max_patterns_are_counted_when_reported() -> None:
    registry = CollectorRegistry()
    past = ValueReport(
        "b", DistinctEstimate.exact(1), 9, False, 2, (PatternCount(OVERFLOW_PATTERN, 3, ""),), 3
    )
    report = WindowReport(T0, T0 + 10, False, 49, REPORT.distinct, (*REPORT.values, past))
    reporter(io.StringIO(), Metrics(registry), "json", patterns=SHOWN).print_report(report)
    assert registry.get_sample_value("otlp_stats_pattern_overflow_records_total") == 2 + 3
