"""Prints each closed window to stdout, as text or as one JSON object per line, and hands it to
the sinks (reporting/sinks/) as its JSON line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from otlp_stats.clock import Clock
from otlp_stats.counting.aggregator import OVERFLOW_LABEL, Aggregator, ValueReport, WindowReport
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.counting.sketches import DistinctEstimate
from otlp_stats.patterns.tally import PatternCount
from otlp_stats.reporting.sinks.base import ReportSinks, SinkReport
from otlp_stats.telemetry import Metrics

# The text report's values with --report-top auto: a screenful; JSON keeps every value.
TEXT_TOP_DEFAULT = 50


def format_timestamp(seconds: float) -> str:
    """RFC 3339 in UTC; milliseconds only when the window boundary is not a whole second."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _value_label(entry: ValueReport, missing_label: str) -> str:
    if entry.overflow:
        return OVERFLOW_LABEL
    return missing_label if entry.value is None else entry.value


def _distinct_fields(distinct: DistinctEstimate) -> dict[str, Any]:
    fields: dict[str, Any] = {"distinct_messages": distinct.value, "estimated": distinct.estimated}
    if distinct.estimated:
        fields["lower_bound"] = distinct.lower_bound
        fields["upper_bound"] = distinct.upper_bound
    return fields


@dataclass(frozen=True)
class PatternsShown:
    """What reports say of patterns when they are counted (without: nothing, so reports stay
    as they were before patterns): each value's distinct patterns always, its top patterns in
    JSON unless --top-patterns is 0, and under each value of the text report if asked."""

    json_top: bool = True
    text_top: bool = False


def patterns_shown(count: bool, top: int, text: bool) -> PatternsShown | None:
    """From --count-patterns, --top-patterns and --report-patterns."""
    if not count:
        return None
    return PatternsShown(json_top=top > 0, text_top=text and top > 0)


def _value_to_dict(
    entry: ValueReport,
    missing_label: str,
    overflow_values: int,
    patterns: PatternsShown | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "value": _value_label(entry, missing_label),
        "missing": entry.missing,
        "overflow": entry.overflow,
        **_distinct_fields(entry.distinct),
        "records": entry.records,
    }
    if entry.overflow:
        fields["distinct_values"] = overflow_values
    # After every field a report had before patterns, so a reader of those finds them as were.
    if patterns is not None:
        fields["distinct_patterns"] = entry.distinct_patterns
        if patterns.json_top:
            fields["top_patterns"] = [_pattern_to_dict(count) for count in entry.top_patterns]
    return fields


def _pattern_to_dict(count: PatternCount) -> dict[str, Any]:
    return {"pattern": count.pattern, "records": count.records, "example": count.example}


@dataclass(frozen=True)
class ValueSelection:
    """The values a report lists, and what the ones left out add up to."""

    shown: tuple[ValueReport, ...]
    more_values: int = 0
    more_records: int = 0


def _rank(entry: ValueReport) -> tuple[int, int, bool, str]:
    return (-entry.distinct_messages, -entry.records, entry.missing, entry.value or "")


def select_top(report: WindowReport, top: int | None) -> ValueSelection:
    """The `top` values with the most distinct messages (ties: records, then value), or all of
    them with None.

    The overflow entry is always kept, last: it stands for the values past --max-values, which
    the note under the total counts, so it is not one value to rank among the others.
    """
    if top is None:
        return ValueSelection(report.values)
    ranked = sorted((entry for entry in report.values if not entry.overflow), key=_rank)
    overflow = tuple(entry for entry in report.values if entry.overflow)
    rest = ranked[top:]
    return ValueSelection(
        (*ranked[:top], *overflow), len(rest), sum(entry.records for entry in rest)
    )


def report_tops(setting: int | None) -> tuple[int | None, int | None]:
    """The values the text and the JSON report list for a --report-top setting (None: all)."""
    if setting == 0:
        return None, None
    if setting is None:
        return TEXT_TOP_DEFAULT, None
    return setting, setting


def report_to_dict(
    report: WindowReport,
    attribute_key: str,
    missing_label: str,
    window_time: str = "arrival",
    top: int | None = None,
    patterns: PatternsShown | None = None,
) -> dict[str, Any]:
    selection = select_top(report, top)
    fields = {
        "event": "window_report",
        "attribute_key": attribute_key,
        "window_time": window_time,
        "window_start": format_timestamp(report.start),
        "window_end": format_timestamp(report.end),
        "revision": report.revision,
        "partial": report.partial,
        **_scope_fields(report),
        "records": report.records,
        **_distinct_fields(report.distinct),
        "values": [
            _value_to_dict(entry, missing_label, report.overflow_values, patterns)
            for entry in selection.shown
        ],
    }
    # Only with a top set, so the default JSON line stays what it always was.
    if top is not None:
        fields["more_values"] = {
            "values": selection.more_values,
            "records": selection.more_records,
        }
    return fields


def _scope_fields(report: WindowReport) -> dict[str, Any]:
    """Only with a shared store: whether the report is global, and who contributed."""
    if report.scope is None:
        return {}
    return {"scope": report.scope, "replicas": list(report.replicas)}


def render_json(
    report: WindowReport,
    attribute_key: str,
    missing_label: str,
    window_time: str = "arrival",
    top: int | None = None,
    patterns: PatternsShown | None = None,
) -> str:
    return _json_line(
        report_to_dict(report, attribute_key, missing_label, window_time, top, patterns)
    )


def _json_line(fields: dict[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def render_text(
    report: WindowReport,
    attribute_key: str,
    missing_label: str,
    window_time: str = "arrival",
    top: int | None = None,
    patterns: PatternsShown | None = None,
) -> str:
    title = f"window {format_timestamp(report.start)} .. {format_timestamp(report.end)}"
    if report.revision > 1:
        title += f" (revision {report.revision})"
    if report.partial:
        title += " (partial)"
    if report.scope is not None:
        title += f" [{report.scope}: {', '.join(report.replicas)}]"
    lines = [f"{title}  key={attribute_key}  time={window_time}"]
    selection = select_top(report, top)
    labels = [_printable(_value_label(entry, missing_label)) for entry in selection.shown]
    width = max([len(label) for label in labels] + [len("total")])
    header = f"  {'value':<{width}}  {'distinct':>10}  {'records':>10}"
    lines.append(header if patterns is None else f"{header}  {'patterns':>10}")
    for label, entry in zip(labels, selection.shown, strict=True):
        distinct = _text_distinct(entry.distinct)
        line = f"  {label:<{width}}  {distinct:>10}  {entry.records:>10}"
        if patterns is None:
            lines.append(line)
            continue
        lines.append(f"{line}  {entry.distinct_patterns:>10}")
        if patterns.text_top:
            lines += _text_top_patterns(entry.top_patterns, width)
    if selection.more_values:
        lines.append(
            f"  … {selection.more_values:,} more values: {selection.more_records:,} records"
        )
    total = _text_distinct(report.distinct)
    lines.append(f"  {'total':<{width}}  {total:>10}  {report.records:>10}")
    if report.overflow_values:
        lines.append(
            f"  ({OVERFLOW_LABEL}: ~{report.overflow_values} values past the per-window cap)"
        )
    return "\n".join(lines) + "\n\n"


def _text_top_patterns(counts: tuple[PatternCount, ...], width: int) -> list[str]:
    """A value's top patterns under it: each one's records in the records column, then the
    pattern (the JSON report has an example of each too)."""
    indent = " " * (2 + width + 2 + 10 + 2)
    return [f"{indent}{count.records:>10}  {_printable(count.pattern)}" for count in counts]


def _text_distinct(distinct: DistinctEstimate) -> str:
    """Estimated counts read "~1234"; exact ones are plain."""
    return f"~{distinct.value}" if distinct.estimated else str(distinct.value)


def _printable(label: str) -> str:
    """Keep one value on one line: a value with control characters is shown escaped."""
    return label if label.isprintable() else json.dumps(label, ensure_ascii=False)


class Reporter:
    """Closes windows once their end has passed and nothing that arrived before it is pending.

    The watermark is the earlier of now and the arrival time of the oldest request still queued
    or in a worker's hands, so a window is printed only once all its records are counted; with
    event time the aggregator also waits its lateness past the window's end.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        queue: RequestQueue,
        clock: Clock,
        out: TextIO,
        metrics: Metrics,
        attribute_key: str,
        missing_label: str,
        report_format: str,
        tick: float = 0.1,
        logger: Any = None,
        window_time: str = "arrival",
        sinks: ReportSinks | None = None,
        report_top: int | None = None,
        patterns: PatternsShown | None = None,
    ) -> None:
        self._aggregator = aggregator
        self._queue = queue
        self._clock = clock
        self._out = out
        self._metrics = metrics
        self._attribute_key = attribute_key
        self._missing_label = missing_label
        self._json = report_format == "json"
        # --report-top as each format reads it; the sinks' JSON follows the JSON report's.
        self._text_top, self._json_top = report_tops(report_top)
        # None: patterns are not counted, and reports say nothing of them.
        self._patterns = patterns
        self._tick = tick
        self._window_time = window_time
        # None: stdout only, as before sinks existed.
        self._sinks = sinks
        self._log = logger if logger is not None else structlog.get_logger("otlp_stats")
        self._task: asyncio.Task[None] | None = None
        self.last_report: WindowReport | None = None
        # The last report of each key (the metrics' per-key figures), in the keys' order.
        self.last_reports: dict[str, WindowReport] = {}
        # Told of every window closed, after it is printed (the state store saves it).
        self._listeners: list[Callable[[WindowReport], None]] = []
        # False when replicas share a store: a listener prints the merged report instead.
        self.prints_closed = True

    def add_listener(self, listener: Callable[[WindowReport], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[WindowReport], None]) -> None:
        self._listeners.remove(listener)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reporter")

    async def stop(self) -> None:
        """Stop the loop, then print every window left, the current one marked partial."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        for report in self._aggregator.close_all(self._clock.now()):
            self.publish(report)

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self._tick)
            self.publish_closed()

    def watermark(self) -> float:
        """Every request that arrived before this time is counted."""
        watermark = self._clock.now()
        oldest = self._queue.oldest_arrival()
        if oldest is not None:
            watermark = min(watermark, oldest)
        return watermark

    def watermark_lag(self) -> float:
        """How far behind the arrival clock a window closes: what the oldest unfinished request
        holds it back by, plus the lateness event time waits."""
        return self._clock.now() - self.watermark() + self._aggregator.lateness

    def publish_closed(self) -> None:
        for report in self._aggregator.close_until(self.watermark()):
            self.publish(report)

    def publish(self, report: WindowReport) -> None:
        """Print the report (unless replicas print merged ones) and tell the listeners.

        Each step is on its own: stdout gone or a listener's bug must neither keep the report
        from the others nor end the reporter's loop, which would leave every later window
        unreported. The window is already closed, so a failed step is logged, not retried.
        """
        steps = [self.print_report] if self.prints_closed or report.partial else []
        for step in (*steps, *self._listeners):
            try:
                step(report)
            except Exception:
                self._log.exception(
                    "report_step_failed",
                    window_start=format_timestamp(report.start),
                    step=getattr(step, "__qualname__", repr(step)),
                )

    def print_report(self, report: WindowReport) -> None:
        self._write(report)
        self.last_report = report
        self.last_reports[self._key_of(report)] = report
        self._metrics.windows_reported.labels("true" if report.partial else "false").inc()
        past_max_patterns = sum(entry.pattern_overflow_records for entry in report.values)
        if past_max_patterns:
            self._metrics.pattern_overflow_records.inc(past_max_patterns)
        overflow = next((entry for entry in report.values if entry.overflow), None)
        if overflow is not None:
            self._metrics.overflow_records.inc(overflow.records)
            # At most one line per window: bounded by construction.
            self._log.warning(
                "values_over_cap",
                window_start=format_timestamp(report.start),
                overflow_records=overflow.records,
                overflow_values=report.overflow_values,
            )

    def print_revision(self, report: WindowReport) -> None:
        """A closed window printed again, late records merged into it (its revision 2, 3, ...).

        Not the last report the metrics show: that stays the newest window.
        """
        self._write(report)
        self._metrics.revisions.inc()

    def _write(self, report: WindowReport) -> None:
        line = None
        if self._sinks is None or self._sinks.stdout:
            rendered = self._render(report)
            self._print(rendered)
            line = rendered if self._json else None
        if self._sinks is not None and self._sinks.sinks:
            # The sinks render the JSON on their own thread, unless stdout just did.
            self._sinks.offer(SinkReport(report, self._fields_of, _json_line, line))

    def _render(self, report: WindowReport) -> str:
        if self._json:
            return _json_line(self._fields_of(report))
        return render_text(
            report,
            self._key_of(report),
            self._missing_label,
            self._window_time,
            self._text_top,
            self._patterns,
        )

    def _fields_of(self, report: WindowReport) -> dict[str, Any]:
        return report_to_dict(
            report,
            self._key_of(report),
            self._missing_label,
            self._window_time,
            self._json_top,
            self._patterns,
        )

    def _key_of(self, report: WindowReport) -> str:
        """The report's own key; a report without one (a window stored before several keys
        existed) is the first configured key's."""
        return report.attribute_key or self._attribute_key

    def _print(self, rendered: str) -> None:
        self._out.write(rendered)
        if self._json:
            self._out.write("\n")
        self._out.flush()
