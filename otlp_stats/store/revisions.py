"""Late records merged into their stored window, and the window's report printed again.

With a store that keeps closed windows (SQLite, Redis), an event-time record whose window had
closed is not rejected: `LateMerge` takes it (the worker's hand-over, on the loop, like the
aggregator takes on-time records) and gathers it with the other late records of its window.
The store's writer then merges each window's late records, once, into the stored window and
every rollup period still kept, and schedules the window's revision; a revision is printed at
most once per window length per window, carrying everything merged by then, with the full
counts of the stored window. Only a window older than what every resolution keeps, or a full
backlog, is still rejected to the sender.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import count
from typing import Protocol

from otlp_stats.counting.aggregator import (
    ResolvedBatch,
    WindowCounts,
    WindowReport,
    WindowSnapshot,
    report_of_snapshot,
)
from otlp_stats.counting.late import (
    BACKLOG_FULL,
    BEYOND_RETENTION,
    LATE_FATES,
    MERGED,
    LateByKey,
    LateOutcome,
    batch_records,
    timestamp,
)
from otlp_stats.patterns.tally import DEFAULT_MAX_PATTERNS, DEFAULT_TOP_PATTERNS
from otlp_stats.store.periods import BASE, Retention, period_bounds

# Late windows waiting for their merge (gathering, or kept after a failed write); past this a
# late record of one more window is rejected, so memory stays bounded whatever arrives.
MAX_LATE_WINDOWS = 360


@dataclass(frozen=True)
class LateDelta:
    """One window's late records gathered by one process, merged into the store exactly once:
    `id` is unique, so a retried merge that had in fact gone through is recognised."""

    id: str
    snapshot: WindowSnapshot


@dataclass(frozen=True)
class Revision:
    """A stored window to print again: its full counts after the merges, and its number."""

    snapshot: WindowSnapshot
    revision: int
    replicas: tuple[str, ...] = ()


class RevisionStore(Protocol):
    """What a store that keeps closed windows does with late records (called from its writer)."""

    def merge_late(self, delta: LateDelta, now: float, spacing: float) -> bool:
        """Merge the records into the stored window and every rollup period still kept, once,
        and schedule the window's revision no sooner than `spacing` after its last one.
        False if the window cannot take them yet (Redis: not merged by the replicas yet)."""
        ...

    def take_revisions(self, now: float) -> tuple[list[Revision], float | None]:
        """The revisions due by `now`, each handed out once (to one replica), numbered; and
        when the next one is due (None: none is scheduled)."""
        ...


@dataclass(eq=False)
class _StoredWaiter:
    """One request's merged late records, waited for (--durability ack): its future is done
    once each window it touched is merged, `windows` counting those still to go."""

    future: asyncio.Future[None]
    windows: int


@dataclass(eq=False)
class _MergeGroup:
    """The deltas one late window became (one per attribute key), and who waits for them."""

    waiters: list[_StoredWaiter]
    deltas: int
    merged: set[str] = field(default_factory=set)


class LateMerge:
    """The fate of late records with a store that keeps closed windows (a LateRecords).

    With `wait_stored` (--durability ack), each request whose records were merged gets a
    future in its outcome, done once they are all in the store: its Export is answered then,
    so a kill after the answer loses none of them (store/journal.py)."""

    def __init__(
        self,
        window_seconds: float,
        rollups: Sequence[str],
        retention: Retention,
        max_values: int,
        lg_k: int,
        incarnation: str | None = None,
        attribute_key: str = "",
        max_patterns: int = DEFAULT_MAX_PATTERNS,
        wait_stored: bool = False,
    ) -> None:
        self._window = window_seconds
        self._max_patterns = max_patterns
        self._wait_stored = wait_stored
        # Per late window index gathering, the requests waiting for its merge; once its deltas
        # are made, the same waiters by delta id.
        self._waiters: dict[int, list[_StoredWaiter]] = {}
        self._groups: dict[str, _MergeGroup] = {}
        # The key a one-key service's late records are counted under.
        self._key = attribute_key
        self._rollups = tuple(rollups)
        self._retention = retention
        self._max_values = max_values
        self._lg_k = lg_k
        self._incarnation = incarnation or secrets.token_hex(8)
        self._sequence = count(1)
        # Per window index, per attribute key: each key's late records merge into its window.
        self._gathering: dict[int, dict[str, WindowCounts]] = {}
        self._retrying: list[LateDelta] = []
        self.records_by_reason = dict.fromkeys(LATE_FATES, 0)
        self.deltas_given_up = 0

    def take(
        self, arrival: float, late: Mapping[int, ResolvedBatch], by_key: LateByKey | None = None
    ) -> LateOutcome:
        keyed = by_key or {self._key: late}
        merged = 0
        rejected = dict.fromkeys((BEYOND_RETENTION, BACKLOG_FULL), 0)
        newest: dict[str, int] = {}
        gathered: list[int] = []
        for index, batch in late.items():
            records = batch_records(batch)
            reason = self._refusal(index, arrival)
            if reason is not None:
                rejected[reason] += records
                newest[reason] = max(index, newest.get(reason, index))
                continue
            gathering = self._gathering.setdefault(index, {})
            for key, windows in keyed.items():
                counts = gathering.get(key)
                if counts is None:
                    counts = gathering[key] = WindowCounts(
                        self._max_values, self._lg_k, self._max_patterns
                    )
                counts.add(windows.get(index, {}))
            merged += records
            gathered.append(index)
        self.records_by_reason[MERGED] += merged
        for reason, records in rejected.items():
            self.records_by_reason[reason] += records
        return LateOutcome(
            sum(rejected.values()),
            self._message(rejected, newest),
            merged=merged,
            stored=self._wait_for(gathered) if self._wait_stored and gathered else None,
        )

    def _wait_for(self, indexes: Sequence[int]) -> asyncio.Future[None]:
        """A future done once the late windows `indexes` are merged into the store."""
        waiter = _StoredWaiter(asyncio.get_running_loop().create_future(), len(indexes))
        for index in indexes:
            self._waiters.setdefault(index, []).append(waiter)
        return waiter.future

    def _refusal(self, index: int, arrival: float) -> str | None:
        if not self.keeps(index * self._window, arrival):
            return BEYOND_RETENTION
        waiting = len(self._gathering) + len(self._retrying)
        if index not in self._gathering and waiting >= MAX_LATE_WINDOWS:
            return BACKLOG_FULL
        return None

    def keeps(self, start: float, now: float) -> bool:
        """Whether the window starting at `start` still has a place in the store at `now`: the
        window itself, or one of its rollup periods, is within its retention."""
        if start >= self._retention.oldest_kept(BASE, now, self._window):
            return True
        return any(
            period_bounds(name, start)[0] >= self._retention.oldest_kept(name, now, self._window)
            for name in self._rollups
        )

    def _message(self, rejected: Mapping[str, int], newest: Mapping[str, int]) -> str:
        parts = []
        for reason, records in rejected.items():
            if not records:
                continue
            latest_end = timestamp((newest[reason] + 1) * self._window)
            why = (
                "are older than the store keeps (--retention)"
                if reason == BEYOND_RETENTION
                else "wait behind too many late windows not yet merged into the store"
            )
            parts.append(
                f"{records} log records rejected as late: their event-time windows (the "
                f"latest ending {latest_end}) had closed and {why}"
            )
        return "; ".join(parts)

    @property
    def waiting(self) -> int:
        """Late windows not merged yet."""
        return len(self._gathering) + len(self._retrying)

    def ready(self, first_open_index: int) -> list[LateDelta]:
        """The late records to merge now: of windows already closed by this process (their own
        counts are handed to the store before these), and those whose merge must be retried."""
        deltas, self._retrying = self._retrying, []
        for index in sorted(i for i in self._gathering if i < first_open_index):
            start = index * self._window
            gathering = self._gathering.pop(index)
            waiters = self._waiters.pop(index, None)
            group = _MergeGroup(waiters, len(gathering)) if waiters else None
            for key, counts in gathering.items():
                snapshot = counts.snapshot(start, start + self._window, key)
                # Sequence first: the incarnation may be a replica's share, "<token>:<replica>".
                delta_id = f"L{next(self._sequence)}:{self._incarnation}"
                deltas.append(LateDelta(delta_id, snapshot))
                if group is not None:
                    self._groups[delta_id] = group
        return deltas

    def stored(self, deltas: Iterable[LateDelta]) -> None:
        """On the loop: these deltas are merged into the store. A request waiting for them is
        answered once every window of its late records is (each of its keys' deltas)."""
        for delta in deltas:
            group = self._groups.pop(delta.id, None)
            if group is None:
                continue
            group.merged.add(delta.id)
            if len(group.merged) < group.deltas:
                continue
            for waiter in group.waiters:
                waiter.windows -= 1
                if waiter.windows == 0 and not waiter.future.done():
                    waiter.future.set_result(None)

    def not_stored(self, deltas: Iterable[LateDelta], error: Exception) -> None:
        """On the loop: merging these deltas failed (they may be retried): whoever waits for
        them is refused now, retryable, rather than kept waiting for a store that fails."""
        for delta in deltas:
            group = self._groups.get(delta.id)
            if group is None:
                continue
            for waiter in group.waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(error)
            # A later merge of the delta answers nobody: they were refused.
            group.waiters = []

    def has_ready(self, first_open_index: int) -> bool:
        return bool(self._retrying) or any(i < first_open_index for i in self._gathering)

    def retry(self, deltas: Sequence[LateDelta]) -> None:
        """Deltas not merged (the store failed, or the window cannot take them yet)."""
        self._retrying[:0] = deltas

    def give_up(self, delta: LateDelta) -> None:
        self.deltas_given_up += 1
        self.not_stored([delta], LateNotStored("late records given up"))
        self._groups.pop(delta.id, None)


class LateNotStored(Exception):
    """Merged late records that did not reach the store: their request is refused, retryable."""


class Reviser:
    """Drives the merges and prints the revisions, from the store's writer (keeper or merger).

    The merges run in the store's own thread (`merge`), the printing on the loop (`publish`).
    """

    def __init__(
        self,
        late: LateMerge,
        store: RevisionStore,
        print_revision: Callable[[WindowReport], None],
        spacing: float,
        lg_k: int,
        poll_every: float = math.inf,
        scope: str | None = None,
        top_patterns: int = DEFAULT_TOP_PATTERNS,
    ) -> None:
        self.late = late
        self._top_patterns = top_patterns
        self._store = store
        self._print = print_revision
        self._spacing = spacing
        self._lg_k = lg_k
        # Other replicas schedule revisions too: poll the store that often for them. Alone,
        # this process knows when the next revision is due.
        self._poll_every = poll_every
        self._scope = scope
        self._next_poll = -math.inf
        self.revisions_printed = 0

    def due(self, now: float, first_open_index: int) -> bool:
        """Whether there are late records to merge or a revision may be due."""
        return now >= self._next_poll or self.late.has_ready(first_open_index)

    def merge(
        self, deltas: Sequence[LateDelta], now: float
    ) -> tuple[list[LateDelta], list[Revision], float | None]:
        """In the store's thread: merge each delta, then take the revisions due. Returns the
        deltas the store could not take yet, the revisions, and when the next is due."""
        waiting = [
            delta for delta in deltas if not self._store.merge_late(delta, now, self._spacing)
        ]
        revisions, next_due = self._store.take_revisions(now)
        return waiting, revisions, next_due

    def publish(self, revisions: Sequence[Revision], next_due: float | None, now: float) -> None:
        """On the loop: print each revision, and note when to look again."""
        self._next_poll = min(math.inf if next_due is None else next_due, now + self._poll_every)
        for revision in revisions:
            report = replace(
                report_of_snapshot(
                    revision.snapshot,
                    partial=False,
                    lg_k=self._lg_k,
                    top_patterns=self._top_patterns,
                ),
                revision=revision.revision,
                # The stored window names its key; report_of_snapshot knows only its counts.
                attribute_key=revision.snapshot.attribute_key,
            )
            if self._scope is not None:
                report = replace(report, scope=self._scope, replicas=revision.replicas)
            self._print(report)
            self.revisions_printed += 1

    def settle(self, deltas: Sequence[LateDelta], waiting: Sequence[LateDelta]) -> None:
        """On the loop, after `merge`: the deltas it merged are in the store (their requests
        may be answered); `waiting`, those it could not merge yet, are tried again later."""
        held = {delta.id for delta in waiting}
        self.late.stored(delta for delta in deltas if delta.id not in held)

    def failed(self, deltas: Sequence[LateDelta]) -> None:
        """The store failed: keep the deltas for the next attempt."""
        self.late.not_stored(deltas, LateNotStored("the store failed to merge late records"))
        self.late.retry(deltas)
        self._next_poll = -math.inf
