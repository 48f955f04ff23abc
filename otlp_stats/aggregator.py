"""Window state and its single owner: the only code that changes counts.

Pure: no I/O, no clock, no awaits. Workers hand it batches stamped with arrival time; the
reporter asks it for the windows that a watermark has closed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class ValueTally:
    """Records and distinct message hashes seen for one attribute value."""

    records: int = 0
    messages: set[int] = field(default_factory=set)


# Attribute value label -> tally; the key None is the bucket of records without the attribute.
ResolvedBatch = Mapping[str | None, ValueTally]


@dataclass(frozen=True)
class ValueReport:
    value: str | None
    distinct_messages: int
    records: int

    @property
    def missing(self) -> bool:
        return self.value is None


@dataclass(frozen=True)
class WindowReport:
    start: float
    end: float
    partial: bool
    records: int
    distinct_messages: int
    values: tuple[ValueReport, ...]


class Aggregator:
    """Owns every open window. Windows are [k*W, (k+1)*W) seconds since the Unix epoch."""

    def __init__(self, window_seconds: float, start_time: float) -> None:
        self.window_seconds = window_seconds
        self._next_index = self._index(start_time)
        self._windows: dict[int, dict[str | None, ValueTally]] = {}
        self.late_records = 0
        self.records_counted = 0

    def _index(self, timestamp: float) -> int:
        return math.floor(timestamp / self.window_seconds)

    def window_bounds(self, index: int) -> tuple[float, float]:
        return index * self.window_seconds, (index + 1) * self.window_seconds

    def add(self, arrival: float, batch: ResolvedBatch) -> None:
        """Count a batch in the window its arrival time falls in.

        A batch for a window already reported (only if the clock stepped back) goes to the
        oldest open window and is counted as late, so it is counted once rather than lost.
        """
        index = self._index(arrival)
        records = sum(tally.records for tally in batch.values())
        if index < self._next_index:
            index = self._next_index
            self.late_records += records
        window = self._windows.setdefault(index, {})
        for value, tally in batch.items():
            mine = window.get(value)
            if mine is None:
                window[value] = ValueTally(tally.records, set(tally.messages))
            else:
                mine.records += tally.records
                mine.messages |= tally.messages
        self.records_counted += records

    def next_window_end(self) -> float:
        return self.window_bounds(self._next_index)[1]

    def close_until(self, watermark: float) -> list[WindowReport]:
        """Close, in order, every window that ends at or before the watermark, empty ones too."""
        reports: list[WindowReport] = []
        while self.window_bounds(self._next_index)[1] <= watermark:
            reports.append(self._close(self._next_index, partial=False))
            self._next_index += 1
        return reports

    def close_all(self, now: float) -> list[WindowReport]:
        """At shutdown: close the complete windows, then the current one as partial."""
        reports = self.close_until(now)
        last = max([self._index(now), *self._windows])
        while self._next_index <= last:
            reports.append(self._close(self._next_index, partial=True))
            self._next_index += 1
        return reports

    def _close(self, index: int, partial: bool) -> WindowReport:
        window = self._windows.pop(index, {})
        start, end = self.window_bounds(index)
        values = sorted(
            (ValueReport(value, len(t.messages), t.records) for value, t in window.items()),
            key=_report_order,
        )
        everything: set[int] = set()
        for tally in window.values():
            everything |= tally.messages
        return WindowReport(
            start=start,
            end=end,
            partial=partial,
            records=sum(v.records for v in values),
            distinct_messages=len(everything),
            values=tuple(values),
        )


def _report_order(entry: ValueReport) -> tuple[int, int, bool, str]:
    """Most distinct messages first, then most records, then by value; missing last on ties."""
    return (-entry.distinct_messages, -entry.records, entry.missing, entry.value or "")
