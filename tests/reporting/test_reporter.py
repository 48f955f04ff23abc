"""Report rendering, and when the reporter closes a window."""

from __future__ import annotations

import asyncio
import io
import json

from prometheus_client import CollectorRegistry

from otlp_stats.counting.aggregator import Aggregator, LabelTally, ValueReport, WindowReport
from otlp_stats.counting.queue import QueuedRequest, RequestQueue
from otlp_stats.counting.sketches import DistinctEstimate
from otlp_stats.reporting.reporter import Reporter, format_timestamp, render_json, render_text
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
