"""Report rendering, and when the reporter closes a window."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json

import pytest
from prometheus_client import CollectorRegistry

from otlp_stats.counting.aggregator import Aggregator, LabelTally, ValueReport, WindowReport
from otlp_stats.counting.queue import QueuedRequest, RequestQueue
from otlp_stats.counting.sketches import DistinctEstimate
from otlp_stats.reporting.reporter import (
    TEXT_TOP_DEFAULT,
    Reporter,
    format_timestamp,
    render_json,
    render_text,
    report_tops,
)
from otlp_stats.telemetry import Metrics
from tests.support.fakes import FakeClock

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def exact(value: str | None, distinct: int, records: int) -> ValueReport:
    return ValueReport(value, DistinctEstimate.exact(distinct), records)


REPORT = WindowReport(
    start=T0 + 10,
    end=T0 + 20,
    partial=False,
    records=5,
    distinct=DistinctEstimate.exact(5),
    values=(
        exact("baz", 2, 2),
        exact("bar", 1, 1),
        exact("qux", 1, 1),
        exact(None, 1, 1),
    ),
)


def test_json_report_schema() -> None:
    line = render_json(REPORT, "foo", "unknown")
    assert "\n" not in line
    assert json.loads(line) == {
        "event": "window_report",
        "attribute_key": "foo",
        "window_time": "arrival",
        "window_start": "2026-01-01T00:00:10Z",
        "window_end": "2026-01-01T00:00:20Z",
        "revision": 1,
        "partial": False,
        "records": 5,
        "distinct_messages": 5,
        "estimated": False,
        "values": [
            {
                "value": "baz",
                "missing": False,
                "overflow": False,
                "distinct_messages": 2,
                "estimated": False,
                "records": 2,
            },
            {
                "value": "bar",
                "missing": False,
                "overflow": False,
                "distinct_messages": 1,
                "estimated": False,
                "records": 1,
            },
            {
                "value": "qux",
                "missing": False,
                "overflow": False,
                "distinct_messages": 1,
                "estimated": False,
                "records": 1,
            },
            {
                "value": "unknown",
                "missing": True,
                "overflow": False,
                "distinct_messages": 1,
                "estimated": False,
                "records": 1,
            },
        ],
    }


def test_text_report_lists_values_then_totals() -> None:
    text = render_text(REPORT, "foo", "(none)")
    lines = text.splitlines()
    assert lines[0] == (
        "window 2026-01-01T00:00:10Z .. 2026-01-01T00:00:20Z  key=foo  time=arrival"
    )
    assert [line.split() for line in lines[2:7]] == [
        ["baz", "2", "2"],
        ["bar", "1", "1"],
        ["qux", "1", "1"],
        ["(none)", "1", "1"],
        ["total", "5", "5"],
    ]


def test_text_report_escapes_values_that_would_break_lines() -> None:
    report = WindowReport(T0, T0 + 10, True, 1, DistinctEstimate.exact(1), (exact("a\nb", 1, 1),))
    text = render_text(report, "foo", "unknown")
    assert "(partial)" in text.splitlines()[0]
    assert '"a\\nb"' in text


def test_timestamps_show_milliseconds_only_for_fractional_boundaries() -> None:
    assert format_timestamp(T0) == "2026-01-01T00:00:00Z"
    assert format_timestamp(T0 + 0.25) == "2026-01-01T00:00:00.250Z"


class Pipeline:
    def __init__(self, clock: FakeClock) -> None:
        self.out = io.StringIO()
        self.queue = RequestQueue(10, 1 << 20)
        self.aggregator = Aggregator(10, clock.now())
        self.reporter = Reporter(
            self.aggregator,
            self.queue,
            clock,
            self.out,
            Metrics(CollectorRegistry()),
            "foo",
            "unknown",
            "json",
            tick=0.1,
        )

    def reports(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


async def test_window_is_held_until_requests_that_arrived_before_its_end_are_counted() -> None:
    clock = FakeClock(T0)
    pipeline = Pipeline(clock)
    await pipeline.reporter.start()
    pending = QueuedRequest(
        T0 + 9.5, b"request", "grpc", asyncio.get_running_loop().create_future()
    )
    pipeline.queue.put_nowait(pending)

    await clock.advance(12)  # window [T0, T0+10) has ended, but a request of it is pending
    assert pipeline.reports() == []

    taken = await pipeline.queue.get()
    pipeline.aggregator.add(taken.arrival, {"late-but-ours": LabelTally.of_hashes([1])})
    pipeline.queue.done(taken)
    await clock.advance(0.1)
    [report] = pipeline.reports()
    assert report["records"] == 1 and report["partial"] is False
    await pipeline.reporter.stop()


async def test_report_is_printed_within_a_tick_of_the_window_end() -> None:
    clock = FakeClock(T0)
    pipeline = Pipeline(clock)
    await pipeline.reporter.start()
    await clock.advance(9.95)
    assert pipeline.reports() == []
    await clock.advance(0.1)
    assert len(pipeline.reports()) == 1
    await pipeline.reporter.stop()


async def test_stop_prints_the_current_window_as_partial() -> None:
    clock = FakeClock(T0)
    pipeline = Pipeline(clock)
    await pipeline.reporter.start()
    pipeline.aggregator.add(T0 + 1, {"a": LabelTally.of_hashes([1])})
    await clock.advance(5)
    await pipeline.reporter.stop()
    [report] = pipeline.reports()
    assert report["partial"] is True and report["records"] == 1
    await pipeline.reporter.stop()  # idempotent: nothing printed twice
    assert len(pipeline.reports()) == 1
    await asyncio.sleep(0)


def test_estimates_carry_bounds_and_overflow_says_how_many_values() -> None:
    estimate = DistinctEstimate(10_100, True, 9_800, 10_400)
    report = WindowReport(
        T0,
        T0 + 10,
        False,
        30_000,
        estimate,
        (
            ValueReport("a", estimate, 20_000),
            ValueReport(None, DistinctEstimate.exact(3), 10_000, overflow=True),
        ),
        overflow_values=5_000,
    )
    entry, overflow = json.loads(render_json(report, "foo", "unknown"))["values"]
    assert entry == {
        "value": "a",
        "missing": False,
        "overflow": False,
        "distinct_messages": 10_100,
        "estimated": True,
        "lower_bound": 9_800,
        "upper_bound": 10_400,
        "records": 20_000,
    }
    assert overflow["value"] == "__overflow__" and overflow["overflow"] is True
    assert overflow["distinct_values"] == 5_000 and overflow["missing"] is False
    text = render_text(report, "foo", "unknown")
    assert "~10100" in text and "~5000 values past the per-window cap" in text


class StdoutGoneOnce(io.StringIO):
    """stdout that fails the first write (a closed pipe), then works."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write(self, text: str) -> int:
        if not self.failed:
            self.failed = True
            raise BrokenPipeError("stdout gone")
        return super().write(text)


async def test_a_failed_print_neither_starves_listeners_nor_stops_later_windows() -> None:
    clock = FakeClock(T0)
    pipeline = Pipeline(clock)
    out = StdoutGoneOnce()
    pipeline.reporter._out = out
    heard: list[WindowReport] = []
    pipeline.reporter.add_listener(heard.append)
    await pipeline.reporter.start()
    pipeline.aggregator.add(T0 + 1, {"a": LabelTally.of_hashes([1, 2])})
    await clock.advance(10.05)  # the first window closes; its print fails
    await clock.advance(10.0)  # the second window closes and prints
    await pipeline.reporter.stop()
    assert [report.records for report in heard[:2]] == [2, 0]
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert printed[0]["window_start"] == "2026-01-01T00:00:10Z"


async def test_event_time_reports_wait_for_the_lateness_and_say_their_clock() -> None:
    clock = FakeClock(T0 + 5)  # [T0 - 10, T0) closed as the service started: [T0, T0 + 10) is next
    out = io.StringIO()
    queue = RequestQueue(10, 1 << 20)
    aggregator = Aggregator(10, clock.now(), lateness=5)
    reporter = Reporter(
        aggregator,
        queue,
        clock,
        out,
        Metrics(CollectorRegistry()),
        "foo",
        "unknown",
        "json",
        window_time="event",
    )
    await reporter.start()
    window = aggregator._index(T0)
    await clock.advance(7)
    assert reporter.watermark_lag() == 5
    # A disordered record for the first window, 2 s after its end: still in time.
    aggregator.add_windows(T0 + 12, {window: {"a": LabelTally.of_hashes([1])}})
    await clock.advance(2.95)
    assert out.getvalue() == ""
    await clock.advance(0.1)
    [report] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert report["window_time"] == "event" and report["revision"] == 1
    assert report["window_start"] == format_timestamp(T0) and report["records"] == 1
    await reporter.stop()


# --report-top: a report of many values lists the top ones and one line for the rest.
MANY = WindowReport(
    start=T0,
    end=T0 + 10,
    partial=False,
    records=21,
    distinct=DistinctEstimate.exact(12),
    values=(
        exact("b", 3, 3),
        exact("a", 3, 3),
        exact("c", 3, 9),
        exact(None, 1, 4),
        exact("d", 2, 2),
    ),
)


def _value_lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()[2:] if line]


def test_text_top_lists_most_distinct_first_ties_by_records_then_value() -> None:
    text = render_text(MANY, "foo", "unknown", top=3)
    assert _value_lines(text) == [
        ["c", "3", "9"],
        ["a", "3", "3"],
        ["b", "3", "3"],
        ["…", "2", "more", "values:", "6", "records"],
        ["total", "12", "21"],
    ]


def test_text_rest_line_groups_thousands() -> None:
    values = tuple(exact(f"v{i:05d}", 1, 1) for i in range(10_000))
    report = WindowReport(T0, T0 + 10, False, 10_000, DistinctEstimate.exact(10_000), values)
    lines = render_text(report, "foo", "unknown", top=50).rstrip("\n").splitlines()
    assert len(lines) == 2 + 50 + 2
    assert lines[-2] == "  … 9,950 more values: 9,950 records"
    assert lines[-1].split() == ["total", "10000", "10000"]


def test_text_top_larger_than_the_values_adds_no_rest_line() -> None:
    assert len(_value_lines(render_text(MANY, "foo", "unknown", top=5))) == 5 + 1
    assert "more values" not in render_text(MANY, "foo", "unknown", top=9)


def test_json_top_keeps_the_top_values_and_says_what_the_rest_adds_up_to() -> None:
    fields = json.loads(render_json(MANY, "foo", "unknown", top=2))
    assert [entry["value"] for entry in fields["values"]] == ["c", "a"]
    assert fields["more_values"] == {"values": 3, "records": 9}
    assert fields["records"] == 21 and fields["distinct_messages"] == 12


def test_json_without_top_has_every_value_and_no_more_values_field() -> None:
    fields = json.loads(render_json(MANY, "foo", "unknown"))
    assert len(fields["values"]) == 5 and "more_values" not in fields


def test_the_overflow_entry_is_kept_after_the_top_values() -> None:
    report = WindowReport(
        T0,
        T0 + 10,
        False,
        20,
        DistinctEstimate.exact(16),
        (
            exact("a", 5, 5),
            exact("b", 1, 1),
            ValueReport(None, DistinctEstimate.exact(10), 14, True),
        ),
        overflow_values=7,
    )
    fields = json.loads(render_json(report, "foo", "unknown", top=1))
    assert [entry["value"] for entry in fields["values"]] == ["a", "__overflow__"]
    assert fields["more_values"] == {"values": 1, "records": 1}
    assert "~7 values past the per-window cap" in render_text(report, "foo", "unknown", top=1)


def test_report_tops_per_format() -> None:
    assert report_tops(None) == (TEXT_TOP_DEFAULT, None)  # auto: 50 for text, JSON all
    assert report_tops(0) == (None, None)
    assert report_tops(7) == (7, 7)


def _wide_report(values: int) -> WindowReport:
    entries = tuple(exact(f"v{i:03d}", values - i, values - i) for i in range(values))
    total = sum(entry.records for entry in entries)
    return WindowReport(T0, T0 + 10, False, total, DistinctEstimate.exact(total), entries)


@pytest.mark.parametrize(
    ("report_format", "setting", "listed"),
    [("text", None, 50), ("text", 0, 60), ("json", None, 60), ("json", 5, 5), ("text", 5, 5)],
)
def test_reporter_lists_what_report_top_says_for_its_format(
    report_format: str, setting: int | None, listed: int
) -> None:
    out = io.StringIO()
    reporter = Reporter(
        Aggregator(10, T0),
        RequestQueue(10, 1 << 20),
        FakeClock(T0),
        out,
        Metrics(CollectorRegistry()),
        "foo",
        "unknown",
        report_format,
        report_top=setting,
    )
    reporter.print_report(_wide_report(60))
    if report_format == "json":
        fields = json.loads(out.getvalue())
        assert len(fields["values"]) == listed
        assert ("more_values" in fields) is (setting is not None)
    else:
        value_lines = [line for line in out.getvalue().splitlines() if line.startswith("  v0")]
        assert len(value_lines) == listed
        assert ("more values" in out.getvalue()) is (listed < 60)


def test_each_report_names_its_own_key_and_an_unkeyed_one_is_the_first_keys() -> None:
    out = io.StringIO()
    reporter = Reporter(
        Aggregator(10, T0),
        RequestQueue(10, 1 << 20),
        FakeClock(T0),
        out,
        Metrics(CollectorRegistry()),
        "service.name",
        "unknown",
        "json",
    )
    base = _wide_report(2)
    for key in ("service.name", "severity_text", ""):
        reporter.print_report(dataclasses.replace(base, attribute_key=key))
    keys = [json.loads(line)["attribute_key"] for line in out.getvalue().splitlines()]
    assert keys == ["service.name", "severity_text", "service.name"]
    assert list(reporter.last_reports) == ["service.name", "severity_text"]
