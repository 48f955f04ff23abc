"""Window state and its single owner: the only code that changes counts.

Pure: no I/O, no clock, no awaits. Workers hand it batches stamped with arrival time (arrival
time), or already grouped by window from the records' own timestamps (event time); the reporter
asks it for the windows that a watermark has closed. Memory is bounded per window:
at most `max_values` attribute values are tracked, each with one distinct-count sketch of
bounded size; records of further values are counted in one overflow entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import xxhash

from otlp_stats.counting.messages import to_signed64
from otlp_stats.counting.sketches import (
    DEFAULT_LG_K,
    DistinctCounter,
    DistinctEstimate,
    estimate_serialized,
    union_estimate,
    union_serialized,
)
from otlp_stats.patterns.tally import (
    DEFAULT_MAX_PATTERNS,
    DEFAULT_TOP_PATTERNS,
    PatternCount,
    PatternTable,
    ReportedPatterns,
    merge_counts,
    reported_patterns,
)

# How the entry of values past --max-values is labelled, in reports, metrics and queries.
OVERFLOW_LABEL = "__overflow__"


@dataclass(slots=True)
class LabelTally:
    """One attribute value's records in a request, and their message hashes.

    A record's hash is either in `hashes` or in one of `sketches` (serialized compact theta
    sketches, DistinctCounter.merge); a hash recurs in `hashes` once per record.
    """

    records: int = 0
    hashes: list[int] = field(default_factory=list)
    sketches: list[bytes] = field(default_factory=list)
    # The records' patterns (patterns/tally.py): each pattern once, with its records and the
    # smallest of its messages as example; empty when the scanner does not count patterns.
    patterns: list[PatternCount] = field(default_factory=list)

    @classmethod
    def of_hashes(cls, hashes: list[int]) -> LabelTally:
        """Records known by their hashes alone, one per record."""
        return cls(len(hashes), hashes)

    def add(self, other: LabelTally) -> None:
        self.records += other.records
        self.hashes += other.hashes
        self.sketches += other.sketches
        self.patterns += other.patterns


# Attribute value label -> its records in one request; None is the bucket of records without
# the attribute.
ResolvedBatch = Mapping[str | None, LabelTally]

# Why a record's window was not the one its time put it in (otlp_stats_late_records_total).
# Arrival time: the clock stepped back past a reported window; counted in the oldest open one.
CLOCK_STEPPED_BACK = "clock_stepped_back"
# Event time: its window had closed when its request arrived; handed back, not counted.
WINDOW_CLOSED = "window_closed"
LATE_REASONS = (CLOCK_STEPPED_BACK, WINDOW_CLOSED)


@dataclass(frozen=True)
class Added:
    """What add_windows did with one request: records counted, and the late ones left out.

    `late` holds, per window index, the records whose window had closed when the request
    arrived; the aggregator counts none of them, and the caller decides what becomes of them.
    """

    counted: int
    late: Mapping[int, ResolvedBatch] = field(default_factory=dict)
    # With several keys, `late` under every key (the same records), by key; else empty.
    late_by_key: Mapping[str, Mapping[int, ResolvedBatch]] = field(default_factory=dict)

    @property
    def late_records(self) -> int:
        return sum(_records(batch) for batch in self.late.values())


@dataclass(frozen=True)
class ValueReport:
    value: str | None
    distinct: DistinctEstimate
    records: int
    overflow: bool = False
    # Patterns counted: how many after the similarity merge, and the top ones by records
    # (patterns/tally.py reported_patterns); 0 and empty when patterns are not counted.
    distinct_patterns: int = 0
    top_patterns: tuple[PatternCount, ...] = ()
    # Records of the value's patterns past --max-patterns, in its overflow pattern.
    pattern_overflow_records: int = 0

    @property
    def missing(self) -> bool:
        return self.value is None and not self.overflow

    @property
    def distinct_messages(self) -> int:
        return self.distinct.value


@dataclass(frozen=True)
class TallySnapshot:
    """One value's counts in a window as plain bytes: what a store keeps and replicas merge."""

    value: str | None
    records: int
    sketch: bytes
    overflow: bool = False
    # The value's patterns (patterns/tally.py), most records first; empty when not counted.
    patterns: tuple[PatternCount, ...] = ()


@dataclass(frozen=True)
class WindowSnapshot:
    start: float
    end: float
    tallies: tuple[TallySnapshot, ...]
    # The overflow entry's distinct values, as a serialized sketch (None if nothing overflowed).
    overflow_values: bytes | None = None
    # The configured attribute key these counts are per value of ("" only in snapshots written
    # before several keys existed: stores read those as the first configured key's).
    attribute_key: str = ""

    @property
    def records(self) -> int:
        return sum(tally.records for tally in self.tallies)


@dataclass(frozen=True)
class WindowReport:
    start: float
    end: float
    partial: bool
    records: int
    distinct: DistinctEstimate
    values: tuple[ValueReport, ...]
    # Estimated number of distinct values folded into the overflow entry (0 if none).
    overflow_values: int = 0
    # The window's sketches, kept only when a store persists closed windows.
    snapshot: WindowSnapshot | None = field(default=None, compare=False, repr=False)
    # Set with a shared store: "global" (merged across replicas), "local" (this replica only,
    # Redis unreachable) or "late" (this replica's share, added after the window was merged).
    scope: str | None = None
    # The replicas whose counts a global report merges.
    replicas: tuple[str, ...] = ()
    # 1 for a window's first report; a later one (late records merged into a stored window)
    # says which revision of the window it is.
    revision: int = 1
    # The configured attribute key whose values these are.
    attribute_key: str = ""

    @property
    def distinct_messages(self) -> int:
        return self.distinct.value


@dataclass
class _Tally:
    counter: DistinctCounter
    patterns: PatternTable
    records: int = 0

    def report(self, value: str | None, top_patterns: int, overflow: bool = False) -> ValueReport:
        """The value's line in its window's report."""
        patterns = _reported(self.patterns.counts(), top_patterns)
        return ValueReport(
            value,
            self.counter.estimate(),
            self.records,
            overflow,
            patterns.distinct,
            patterns.top,
            self.patterns.overflow_records,
        )


@dataclass
class WindowCounts:
    """One window's counts: a tally per attribute value, at most `max_values` of them, and the
    overflow entry past that. The aggregator keeps one per open window; late records headed for
    a stored window gather in one until they are merged into it."""

    max_values: int
    lg_k: int
    max_patterns: int = DEFAULT_MAX_PATTERNS
    values: dict[str | None, _Tally] = field(default_factory=dict)
    overflow: _Tally | None = None
    overflow_values: DistinctCounter | None = None

    def add(self, batch: ResolvedBatch) -> None:
        values = self.values
        for value, counted in batch.items():
            # A value already tracked, the usual case, without the call.
            tally = values.get(value)
            if tally is None:
                tally = self._tally_for(value)
            tally.records += counted.records
            if counted.hashes:
                tally.counter.update(counted.hashes)
            for sketch in counted.sketches:
                tally.counter.merge(sketch)
            if counted.patterns:
                tally.patterns.merge(counted.patterns)

    def _tally_for(self, value: str | None) -> _Tally:
        tally = self.values.get(value)
        if tally is not None:
            return tally
        tracked = len(self.values) - (None in self.values)
        if value is None or tracked < self.max_values:
            tally = self.values[value] = self.new_tally()
            return tally
        return self._overflow(value)

    def _overflow(self, value: str) -> _Tally:
        overflow = self._overflow_tally()
        assert self.overflow_values is not None  # created with the overflow tally
        digest = xxhash.xxh3_64_intdigest(value.encode("utf-8", errors="surrogatepass"))
        self.overflow_values.update((to_signed64(digest),))
        return overflow

    def merge(self, snapshot: WindowSnapshot) -> None:
        """Add another process's counts of the same window: sketches unioned, records summed,
        the per-window cap applied as if every record had arrived here."""
        for tally in snapshot.tallies:
            if tally.overflow:
                mine = self._overflow_tally()
                if snapshot.overflow_values is not None and self.overflow_values is not None:
                    self.overflow_values.merge(snapshot.overflow_values)
            else:
                mine = self._tally_for(tally.value)
            mine.records += tally.records
            mine.counter.merge(tally.sketch)
            mine.patterns.merge(tally.patterns)

    def _overflow_tally(self) -> _Tally:
        if self.overflow is None or self.overflow_values is None:
            self.overflow = self.new_tally()
            self.overflow_values = DistinctCounter(self.lg_k)
        return self.overflow

    def new_tally(self, sketch: bytes | None = None, records: int = 0) -> _Tally:
        """A value's tally, empty or restored from a snapshot's sketch."""
        return _Tally(DistinctCounter(self.lg_k, sketch), PatternTable(self.max_patterns), records)

    @property
    def tracked_patterns(self) -> int:
        """Patterns tracked across the window's values (the overflow entry's included)."""
        overflow = 0 if self.overflow is None else len(self.overflow.patterns)
        return sum(len(tally.patterns) for tally in self.values.values()) + overflow

    @property
    def records(self) -> int:
        overflow = 0 if self.overflow is None else self.overflow.records
        return sum(tally.records for tally in self.values.values()) + overflow

    def snapshot(self, start: float, end: float, attribute_key: str = "") -> WindowSnapshot:
        """The counts as bytes: what a store keeps and replicas merge."""
        tallies = [_tally_snapshot(value, tally) for value, tally in self.values.items()]
        overflow_values = None
        if self.overflow is not None and self.overflow_values is not None:
            tallies.append(_tally_snapshot(None, self.overflow, overflow=True))
            overflow_values = self.overflow_values.serialize()
        return WindowSnapshot(start, end, tuple(tallies), overflow_values, attribute_key)


def _tally_snapshot(value: str | None, tally: _Tally, overflow: bool = False) -> TallySnapshot:
    return TallySnapshot(
        value, tally.records, tally.counter.serialize(), overflow, tally.patterns.counts()
    )


class Aggregator:
    """Owns every open window. Windows are [k*W, (k+1)*W) seconds since the Unix epoch.

    A window [s, e) closes once the watermark (a time before which everything that arrived is
    counted) reaches e + `lateness`. Arrival time has no lateness: a record's window is the one
    its request arrived in, and nothing can arrive for it once its end has passed. Event time
    waits `lateness` for records that come out of order, and a record for a window that had
    closed by its request's arrival is late.
    """

    def __init__(
        self,
        window_seconds: float,
        start_time: float,
        max_values: int = 10_000,
        lg_k: int = DEFAULT_LG_K,
        keep_sketches: bool = False,
        lateness: float = 0.0,
        attribute_key: str = "",
        max_patterns: int = DEFAULT_MAX_PATTERNS,
        top_patterns: int = DEFAULT_TOP_PATTERNS,
    ) -> None:
        self.window_seconds = window_seconds
        # Stamped on every snapshot and report: whose values these counts are.
        self.attribute_key = attribute_key
        self.keep_sketches = keep_sketches
        self.max_values = max_values
        self.lg_k = lg_k
        self.lateness = lateness
        # Patterns tracked per value and window (the rest in an overflow pattern), and how many
        # of them a report names (0: only their number).
        self.max_patterns = max_patterns
        self.top_patterns = top_patterns
        # The windows a record arriving now may still land in are open from the start; any
        # older one closed before this process ran.
        self._next_index = self._index(start_time - lateness)
        self._windows: dict[int, WindowCounts] = {}
        self.late_records = dict.fromkeys(LATE_REASONS, 0)
        self.overflow_records = 0

    def _index(self, timestamp: float) -> int:
        return math.floor(timestamp / self.window_seconds)

    def index_of(self, timestamp: float) -> int:
        """The index of the window a time falls in."""
        return self._index(timestamp)

    def window_bounds(self, index: int) -> tuple[float, float]:
        return index * self.window_seconds, (index + 1) * self.window_seconds

    def add(self, arrival: float, batch: ResolvedBatch) -> int:
        """Arrival time: count a batch in the window its arrival time falls in; its index.

        A batch for a window already reported (only if the clock stepped back) goes to the
        oldest open window and is counted as late, so it is counted once rather than lost.
        """
        index = self._index(arrival)
        if index < self._next_index:
            index = self._next_index
            self.late_records[CLOCK_STEPPED_BACK] += _records(batch)
        self._add_to(index, batch)
        return index

    def replay(self, index: int, batch: ResolvedBatch) -> None:
        """Add counts a journal committed after the checkpoint restored, before any new batch:
        the window they were counted in is open again, however old."""
        self._add_to(index, batch)
        self._next_index = min(self._next_index, index)

    def replay_key(self, attribute_key: str, index: int, batch: ResolvedBatch) -> bool:
        """replay() for the key a journal entry names ("" is the first key's); False for a key
        no longer counted, whose entries are left out."""
        if attribute_key not in ("", self.attribute_key):
            return False
        self.replay(index, batch)
        return True

    def add_windows(self, arrival: float, windows: Mapping[int, ResolvedBatch]) -> Added:
        """Event time: count each window's batch in that window, unless the window is closed.

        A window is closed for a request that arrived at or after its end plus the lateness
        (whether or not the reporter has printed it yet, so the answer does not depend on when
        the reporter last looked), and for every request once it is printed (older than this
        process, or reported before the clock stepped back).
        """
        counted = 0
        late: dict[int, ResolvedBatch] = {}
        for index, batch in windows.items():
            if index < self._next_index or self.window_bounds(index)[1] + self.lateness <= arrival:
                late[index] = batch
                continue
            self._add_to(index, batch)
            counted += _records(batch)
        added = Added(counted, late)
        if late:
            self.late_records[WINDOW_CLOSED] += added.late_records
        return added

    def merge(self, snapshot: WindowSnapshot) -> bool:
        """Add a window's counts closed by another process (--processes), unless this
        aggregator has closed that window already: then nothing is added and False says so."""
        index = self._index(snapshot.start)
        if index < self._next_index:
            return False
        window = self._windows.get(index)
        if window is None:
            window = self._windows[index] = self._new_window()
        window.merge(snapshot)
        return True

    @property
    def open_windows(self) -> int:
        """Windows holding counts not reported yet: what a process that dies takes with it."""
        return len(self._windows)

    def _add_to(self, index: int, batch: ResolvedBatch) -> None:
        window = self._windows.get(index)
        if window is None:
            window = self._windows[index] = self._new_window()
        window.add(batch)

    def _new_window(self) -> WindowCounts:
        return WindowCounts(self.max_values, self.lg_k, self.max_patterns)

    @property
    def tracked_values(self) -> int:
        """Attribute values tracked across open windows (the cardinality the cap bounds)."""
        return sum(len(window.values) for window in self._windows.values())

    @property
    def sketch_bytes(self) -> int:
        return sum(
            tally.counter.memory_bytes
            for window in self._windows.values()
            for tally in window.values.values()
        )

    @property
    def tracked_patterns(self) -> int:
        """Patterns tracked across open windows (bounded by --max-patterns per value)."""
        return sum(window.tracked_patterns for window in self._windows.values())

    @property
    def first_open_index(self) -> int:
        """The oldest window not closed yet: every window before it is printed (or older than
        the running service), and its counts handed to the listeners."""
        return self._next_index

    def next_window_end(self) -> float:
        return self.window_bounds(self._next_index)[1]

    def close_until(self, watermark: float, empty: bool = True) -> list[WindowReport]:
        """Close, in order, every window whose end plus the lateness is at or before the
        watermark, empty ones too unless `empty` is False (replay: a gap of a year in the
        history is no reason for three million heartbeats)."""
        reports: list[WindowReport] = []
        if not empty:
            for index in sorted(self._windows):
                if not self._closes(index, watermark):
                    break
                reports.append(self._close(index, partial=False))
            # Every window before the first still open is empty: jump over them at once.
            first_open = self._index(watermark - self.lateness)
            while first_open > self._next_index and not self._closes(first_open - 1, watermark):
                first_open -= 1
            while self._closes(first_open, watermark):
                first_open += 1
            self._next_index = max(self._next_index, min([first_open, *self._windows]))
            return reports
        while self.window_bounds(self._next_index)[1] + self.lateness <= watermark:
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

    def _closes(self, index: int, watermark: float) -> bool:
        return self.window_bounds(index)[1] + self.lateness <= watermark

    def snapshot(self) -> list[WindowSnapshot]:
        """Every open window that holds records, as bytes, for a checkpoint."""
        return [
            self._snapshot_of(index, window)
            for index, window in sorted(self._windows.items())
            if window.values or window.overflow is not None
        ]

    def _snapshot_of(self, index: int, window: WindowCounts) -> WindowSnapshot:
        return window.snapshot(*self.window_bounds(index), self.attribute_key)

    def restore(self, snapshots: Sequence[WindowSnapshot]) -> None:
        """Resume windows a checkpoint saved, before any batch is added.

        A restored window that has ended by now is reported at the next watermark, so the
        earliest restored window becomes the next one to close.
        """
        for snapshot in snapshots:
            index = self._index(snapshot.start)
            window = self._windows.setdefault(index, self._new_window())
            for tally in snapshot.tallies:
                restored = window.new_tally(tally.sketch, tally.records)
                restored.patterns.merge(tally.patterns)
                if tally.overflow:
                    window.overflow = restored
                    window.overflow_values = DistinctCounter(self.lg_k, snapshot.overflow_values)
                else:
                    window.values[tally.value] = restored
            self._next_index = min(self._next_index, index)

    def _close(self, index: int, partial: bool) -> WindowReport:
        window = self._windows.pop(index, None) or self._new_window()
        start, end = self.window_bounds(index)
        snapshot = self._snapshot_of(index, window) if self.keep_sketches else None
        entries = [tally.report(value, self.top_patterns) for value, tally in window.values.items()]
        overflow_values = 0
        tallies = list(window.values.values())
        if window.overflow is not None and window.overflow_values is not None:
            overflow = window.overflow
            entries.append(overflow.report(None, self.top_patterns, overflow=True))
            overflow_values = window.overflow_values.estimate().value
            self.overflow_records += overflow.records
            tallies.append(overflow)
        entries.sort(key=_report_order)
        return WindowReport(
            start=start,
            end=end,
            partial=partial,
            records=sum(tally.records for tally in tallies),
            distinct=_total_distinct(tallies, self.lg_k),
            values=tuple(entries),
            overflow_values=overflow_values,
            snapshot=snapshot,
            attribute_key=self.attribute_key,
        )


def report_of_snapshot(
    snapshot: WindowSnapshot,
    partial: bool,
    lg_k: int = DEFAULT_LG_K,
    top_patterns: int = DEFAULT_TOP_PATTERNS,
) -> WindowReport:
    """The report of a window known only by its bytes (merged from replicas or from a store)."""
    entries = [_value_of_snapshot(tally, top_patterns) for tally in snapshot.tallies]
    entries.sort(key=_report_order)
    sketches = [tally.sketch for tally in snapshot.tallies]
    distinct = (
        estimate_serialized(union_serialized(sketches, lg_k))
        if sketches
        else DistinctEstimate.exact(0)
    )
    overflow_values = (
        0
        if snapshot.overflow_values is None
        else estimate_serialized(snapshot.overflow_values).value
    )
    return WindowReport(
        start=snapshot.start,
        end=snapshot.end,
        partial=partial,
        records=snapshot.records,
        distinct=distinct,
        values=tuple(entries),
        overflow_values=overflow_values,
        snapshot=snapshot,
        attribute_key=snapshot.attribute_key,
    )


def _value_of_snapshot(tally: TallySnapshot, top_patterns: int) -> ValueReport:
    patterns = _reported(tally.patterns, top_patterns)
    return ValueReport(
        None if tally.overflow else tally.value,
        estimate_serialized(tally.sketch),
        tally.records,
        tally.overflow,
        patterns.distinct,
        patterns.top,
        sum(count.records for count in tally.patterns if count.overflow),
    )


def _reported(counts: tuple[PatternCount, ...], top: int) -> ReportedPatterns:
    # Many values of a window have no pattern (not counted) or one: nothing to merge then.
    if len(counts) < 2:
        return ReportedPatterns(len(counts), counts[: max(0, top)])
    return reported_patterns(counts, top)


def merge_snapshots(
    snapshots: Sequence[WindowSnapshot],
    lg_k: int = DEFAULT_LG_K,
    max_patterns: int = DEFAULT_MAX_PATTERNS,
) -> WindowSnapshot:
    """One window's snapshots from several replicas as one: sketches unioned, records summed,
    pattern tables merged."""
    by_key: dict[tuple[bool, str | None], list[TallySnapshot]] = {}
    for snapshot in snapshots:
        for tally in snapshot.tallies:
            by_key.setdefault((tally.overflow, tally.value), []).append(tally)
    tallies = tuple(
        TallySnapshot(
            value,
            sum(t.records for t in group),
            group[0].sketch
            if len(group) == 1
            else union_serialized((t.sketch for t in group), lg_k),
            overflow,
            group[0].patterns
            if len(group) == 1
            else merge_counts((t.patterns for t in group), max_patterns),
        )
        for (overflow, value), group in by_key.items()
    )
    overflow_blobs = [s.overflow_values for s in snapshots if s.overflow_values is not None]
    return WindowSnapshot(
        snapshots[0].start,
        snapshots[0].end,
        tallies,
        union_serialized(overflow_blobs, lg_k) if overflow_blobs else None,
        snapshots[0].attribute_key,
    )


def _records(batch: ResolvedBatch) -> int:
    return sum(counted.records for counted in batch.values())


def _total_distinct(tallies: list[_Tally], lg_k: int) -> DistinctEstimate:
    if len(tallies) == 1:
        return tallies[0].counter.estimate()
    if not tallies:
        return DistinctEstimate.exact(0)
    return union_estimate((tally.counter for tally in tallies), lg_k)


def _report_order(entry: ValueReport) -> tuple[bool, int, int, bool, str]:
    """Most distinct messages first, then most records, then by value; missing and overflow
    last among equals, and the overflow entry after every tracked value."""
    return (
        entry.overflow,
        -entry.distinct_messages,
        -entry.records,
        entry.missing,
        entry.value or "",
    )
