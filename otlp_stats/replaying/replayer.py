"""Replays inputs through the service's own scanner, aggregator and reporter, in event time.

No arrival clock here: the watermark follows the data. It is the latest event time read so
far minus `--allowed-lateness`: a window is reported once the data has moved that far past its
end, and a record for a window already closed is late, and meets the fate the live service
gives late records, through the same LateRecords seam: with a store that keeps closed windows
(SQLite, Redis) the Reviser merges it into its stored window and rollups and prints the
window's revision; with the memory store it is rejected (counted in the summary line). At the
end of the input every window left is reported, complete: nothing more will come for it, and
every late record still gathered is merged. Windows without records are not reported (a gap
of months in a history is not two million heartbeats).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from otlp_stats.clock import Clock
from otlp_stats.counting.aggregator import Added, Aggregator, WindowReport, WindowSnapshot
from otlp_stats.counting.keyed import KeyedAggregator
from otlp_stats.counting.late import LateRecords
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import AttributeKeys, EventTime, Scanner, Tally, default_scanner
from otlp_stats.errors import MalformedRequest
from otlp_stats.patterns.masker import Masker, PatternCuts
from otlp_stats.receiving.otlp_json import json_to_wire
from otlp_stats.replaying.frames import FrameCounter, FrameFields
from otlp_stats.replaying.framing import Frame, line_batches, otlp_frames, unwrap_message
from otlp_stats.reporting.reporter import Reporter
from otlp_stats.store.base import StateStore
from otlp_stats.store.revisions import MAX_LATE_WINDOWS, Reviser

_NS = 1_000_000_000
# Replayed times are history: none is "ahead of its arrival", so no record is moved for it.
_NO_SKEW_LIMIT = 2**64 - 1
# Closed windows are written to the store in batches of this many (one transaction each).
_COMMIT_EVERY = 256
# Late windows gathered before they are merged at once: well before the LateMerge's bound, past
# which it would reject them as a backlog (the live service merges every few seconds; replay,
# when this many wait).
_MERGE_LATE_AT = MAX_LATE_WINDOWS // 2


class StopReplay(Exception):
    """--strict: the first malformed frame ends the replay (its message says where)."""


@dataclass
class ReplayCounts:
    """What the summary line says."""

    records: int = 0
    windows: int = 0
    late: int = 0
    merged: int = 0
    rejected: int = 0
    revisions: int = 0
    # Whether late records can be merged (a store that keeps closed windows): the summary says
    # how many were.
    merges_late: bool = False
    malformed: int = 0
    untimed: int = 0
    # Records whose pattern the masker cut at --max-pattern-tokens, --max-pattern-length.
    cuts: PatternCuts = field(default_factory=PatternCuts)
    started: float = field(default_factory=time.monotonic)

    def summary(self, inputs: int) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return (
            f"replayed {inputs} input{'s' if inputs != 1 else ''}: {self.records} records in "
            f"{self.windows} windows, {self.late} late ({self._late_fates()}), "
            f"{self.malformed} malformed skipped{self._cuts()}, {seconds:.1f} s, "
            f"{self.records / seconds:,.0f} records/s"
        )

    def _cuts(self) -> str:
        """Said only when some patterns were cut: the service's metric, for a replay."""
        cuts = self.cuts
        if not (cuts.tokens or cuts.length):
            return ""
        return (
            f", patterns cut: {cuts.tokens} records at --max-pattern-tokens, "
            f"{cuts.length} at --max-pattern-length"
        )

    def _late_fates(self) -> str:
        if not self.merges_late:
            return f"{self.rejected} rejected"
        return f"{self.merged} merged, {self.rejected} rejected, {self.revisions} revisions"


class Replayer:
    """Feeds frames to the aggregator, closes windows as the data's watermark passes them."""

    def __init__(
        self,
        aggregator: Aggregator,
        reporter: Reporter,
        late_records: LateRecords,
        clock: Clock,
        attribute_key: AttributeKeys,
        labels: LabelRenderer,
        limit: int,
        frame_fields: FrameFields | None = None,
        store: StateStore | None = None,
        on_malformed: Callable[[str], None] = lambda message: None,
        strict: bool = False,
        reviser: Reviser | None = None,
        masker: Masker | None = None,
    ) -> None:
        """`late_records` decides the fate of late records; with a `reviser` (a store that
        keeps closed windows) it is the reviser's LateMerge, whose merges this replayer drives
        as the live service's keeper does."""
        self._aggregator = aggregator
        self._reporter = reporter
        self._late = late_records
        self._clock = clock
        self._labels = labels
        self._limit = limit
        self._window_ns = window_ns = max(1, round(aggregator.window_seconds * _NS))
        self._scanner: Scanner = default_scanner(
            attribute_key, EventTime(window_ns, _NO_SKEW_LIMIT), masker
        )
        # Several keys: one walk per request, a tally per key, into a KeyedAggregator.
        self._keyed = aggregator if isinstance(aggregator, KeyedAggregator) else None
        if self._keyed is not None and frame_fields is not None:
            raise ValueError("JSON lines carry one value field: one key")
        self._frames = (
            FrameCounter(frame_fields, window_ns, round(aggregator.lateness * _NS), labels, masker)
            if frame_fields is not None
            else None
        )
        self._store = store
        self._reviser = reviser
        self._closed: list[WindowSnapshot] = []
        self._on_malformed = on_malformed
        self._strict = strict
        self._latest_ns = 0
        self.counts = ReplayCounts(merges_late=reviser is not None)
        reporter.add_listener(self._window_closed)

    def replay(self, name: str, stream: BinaryIO, progress: Callable[[], None]) -> None:
        """Count one input's frames; windows are reported as the data passes them."""
        if self._frames is not None:
            for first, lines in line_batches(stream):
                batch = self._frames.tally(first, lines, self._latest_ns)
                self._count_cuts(batch.cuts.tokens, batch.cuts.length)
                for number, reason in batch.malformed:
                    self._malformed(f"{name}:{number}", reason)
                self._count(batch.windows, batch.latest_ns)
                if batch.late_windows:
                    # Late to a line before them in the batch: the aggregator finds them so
                    # against the batch's latest time, and counts them as late as it always does.
                    self._count(batch.late_windows, batch.latest_ns, batch.latest_ns)
                progress()
            return
        for frame in otlp_frames(stream, self._limit):
            self._replay_request(name, frame)
            if frame.number % 64 == 0:
                progress()
        progress()

    def _replay_request(self, name: str, frame: Frame) -> None:
        try:
            wire = unwrap_message(frame.payload, self._limit)
            if wire[:1] == b"{":
                wire = json_to_wire(wire)
            checked = self._scanner.check(wire)
        except MalformedRequest as error:
            self._malformed(frame.where(name), str(error))
            return
        if not checked.records:
            return
        if self._keyed is not None:
            tallies = self._scanner.tally_windows_keys(checked, self._labels, self._latest_ns)
            tally = tallies[0]
            windows: Mapping[int, Tally] | list[dict[int, Tally]] = [t.windows for t in tallies]
        else:
            tally = self._scanner.tally_windows(checked, self._labels, self._latest_ns)
            windows = tally.windows
        self.counts.untimed += tally.missing
        self._count_cuts(*checked.cut_records())
        # The latest window's start: the scanner gives windows, not times, so the watermark
        # may lag the data by up to a window more than the lateness, never less.
        latest = max(tally.windows, default=0) * self._window_ns
        self._count(windows, latest)

    def _count_cuts(self, tokens: int, length: int) -> None:
        self.counts.cuts.tokens += tokens
        self.counts.cuts.length += length

    def _count(
        self,
        windows: Mapping[int, Tally] | Sequence[Mapping[int, Tally]],
        latest_ns: int,
        judged_at_ns: int | None = None,
    ) -> None:
        """Count a batch (per key, with several) against the latest time before it, then move
        the watermark on: the records of one request are not late to each other (as when it
        is sent live)."""
        watermark = (self._latest_ns if judged_at_ns is None else judged_at_ns) / _NS
        added = self._add(watermark, windows)
        self.counts.records += added.counted
        if added.late:
            # Retention counts from the wall clock (as the store's does): whether a late window
            # still has a place in the store is judged now, not at the data's watermark.
            outcome = self._late.take(self._clock.now(), added.late, added.late_by_key)
            self.counts.late += added.late_records
            self.counts.rejected += outcome.rejected
            self.counts.merged += outcome.merged
            if self._reviser is not None and self._reviser.late.waiting >= _MERGE_LATE_AT:
                self.commit()
        self._latest_ns = max(self._latest_ns, latest_ns)
        watermark = self._latest_ns / _NS
        for report in self._aggregator.close_until(watermark, empty=False):
            self._reporter.publish(report)

    def _add(
        self, watermark: float, windows: Mapping[int, Tally] | Sequence[Mapping[int, Tally]]
    ) -> Added:
        if isinstance(windows, Sequence):
            assert self._keyed is not None
            return self._keyed.add_windows_keys(watermark, windows)
        return self._aggregator.add_windows(watermark, windows)

    def _malformed(self, where: str, reason: str) -> None:
        self.counts.malformed += 1
        message = f"{where}: {reason}"
        if self._strict:
            raise StopReplay(message)
        self._on_malformed(message)

    def _window_closed(self, report: WindowReport) -> None:
        # A window is reported once per key: counted once, as its first key's.
        if report.attribute_key in ("", self._scanner.keys[0]):
            self.counts.windows += 1
        if self._store is not None and report.snapshot is not None:
            self._closed.append(report.snapshot)
            if len(self._closed) >= _COMMIT_EVERY:
                self.commit()

    def commit(self) -> None:
        """Save the windows closed since the last commit, and their rollups, in the store; then
        merge the late records gathered for closed windows into them, and print revisions."""
        if self._store is not None and self._closed:
            closed, self._closed = self._closed, []
            # Retention counts from the wall clock, as the live service's does.
            self._store.commit(closed, None, self._clock.now())
        if self._reviser is not None:
            self._revise(self._reviser)

    def _revise(self, reviser: Reviser) -> None:
        """What the live keeper's revise loop does, at once: the windows the late records
        belong to are saved by now (commit, just before), so every gathered window is ready."""
        deltas = reviser.late.ready(self._aggregator.first_open_index)
        if not deltas:
            return
        now = self._clock.now()
        waiting, revisions, next_due = reviser.merge(deltas, now)
        # Redis: a window a live replica's share is still to be merged into waits for it.
        reviser.late.retry(waiting)
        printed = reviser.revisions_printed
        reviser.publish(revisions, next_due, now)
        self.counts.revisions += reviser.revisions_printed - printed

    @property
    def unmerged_windows(self) -> int:
        """Late windows left unmerged at the end (Redis: replicas had yet to merge them)."""
        return self._reviser.late.waiting if self._reviser is not None else 0

    def finish(self) -> ReplayCounts:
        """End of input: report every window left (all complete), and save them."""
        end = (self._latest_ns / _NS) + self._aggregator.lateness + self._aggregator.window_seconds
        for report in self._aggregator.close_until(end + 1.0, empty=False):
            self._reporter.publish(report)
        self.commit()
        return self.counts
