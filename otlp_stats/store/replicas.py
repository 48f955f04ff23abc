"""Replicas sharing one Redis: flush each closed window, and merge and report it exactly once.

Each replica counts locally. When a window closes, its share (per-value sketches) is flushed to
Redis; `merge_grace` after the window's end every replica tries to claim it, and the one that
wins merges every flushed share, saves the merged window and its rollups, and prints the one
global report. A share flushed after its window was merged (a replica that lagged or was cut
off) is unioned into the merged window by its own replica, which prints it as a "late" report.
With Redis unreachable a replica prints its own share as a "local" report, keeps
the flush for a retry (bounded, with backoff), and carries on counting.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otlp_stats.clock import Clock
from otlp_stats.counting.aggregator import (
    WindowReport,
    WindowSnapshot,
    merge_snapshots,
    report_of_snapshot,
)
from otlp_stats.patterns.tally import DEFAULT_MAX_PATTERNS, DEFAULT_TOP_PATTERNS
from otlp_stats.store.journal import Committer, JournalEntry, journal_metrics
from otlp_stats.store.redis import SHARE_TTL_SECONDS, ShareId, StoreUnavailable
from otlp_stats.store.revisions import Reviser

_T = TypeVar("_T")
# Windows whose flush waits for Redis; past this the oldest is given up (and counted).
MAX_PENDING_FLUSHES = 360
_BACKOFF_FIRST = 0.5
_BACKOFF_MOST = 10.0
TICK = 0.2
# At shutdown, how long past the merge grace running replicas get to merge before this one does.
_STOP_MARGIN = 5 * TICK
_SIZE_EVERY = 10.0


class SharedStore(Protocol):
    """What the merger needs of Redis (store/redis.py); every call may raise StoreUnavailable."""

    def flush(self, share: ShareId, snapshot: WindowSnapshot, journal: bool = False) -> None: ...
    def claim(self, attribute_key: str, start: float, replica: str, timeout: float) -> bool: ...
    def is_merged(self, attribute_key: str, start: float) -> bool: ...
    def collect(
        self, attribute_key: str, start: float, end: float
    ) -> list[tuple[ShareId, WindowSnapshot]]: ...
    def save_merged(
        self, merged: WindowSnapshot, shares: Sequence[ShareId], now: float
    ) -> bool: ...
    def add_late(self, share: ShareId, snapshot: WindowSnapshot, now: float) -> bool: ...
    def stored_bytes(self) -> int: ...
    def close(self) -> None: ...


@dataclass(eq=False)  # removed from the backlog by identity, never by value
class _Window:
    report: WindowReport
    flushed: bool = False
    printed: bool = False


class ReplicaMerger:
    def __init__(
        self,
        store: SharedStore,
        replica: str,
        clock: Clock,
        print_report: Callable[[WindowReport], None],
        merge_grace: float,
        claim_timeout: float,
        lg_k: int,
        logger: Any,
        incarnation: str | None = None,
        reviser: Reviser | None = None,
        first_open_index: Callable[[], int] = lambda: 0,
        committer: Committer | None = None,
        replay: Callable[[JournalEntry], int] = lambda entry: 0,
        max_patterns: int = DEFAULT_MAX_PATTERNS,
        top_patterns: int = DEFAULT_TOP_PATTERNS,
    ) -> None:
        self.store = store
        self._top_patterns = top_patterns
        # The bound of each value's pattern table in a window merged from the shares.
        self._max_patterns = max_patterns
        # With --durability ack: this replica's journal in Redis (store/redisjournal.py),
        # replayed at start by `replay` (it says how many records it added), and deleted
        # window by window as the shares flush.
        self.committer = committer
        self._replay = replay
        # Event time: late records merged into the merged windows, revisions printed once.
        self.reviser = reviser
        self._first_open_index = first_open_index
        self.replica = replica
        # Unique per process run: a replica restarting within a window must add its share,
        # not replace the one its previous run flushed.
        self._share = ShareId(replica, incarnation or secrets.token_hex(8))
        self._clock = clock
        self._print = print_report
        self._grace = merge_grace
        self._claim_timeout = claim_timeout
        self._lg_k = lg_k
        self._log = logger
        self._windows: deque[_Window] = deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="otlp-stats-redis")
        self._task: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._backoff = _BACKOFF_FIRST
        self.reachable = True
        self.local_reports = 0
        self.global_reports = 0
        self.dropped_flushes = 0
        self.late_shares = 0
        self.stored_bytes = 0
        self._size_read_at = 0.0

    async def restore(self) -> int:
        """With --durability ack: what this replica journaled for windows whose share it never
        flushed (it was killed), back into them; the records replayed."""
        if self.committer is None:
            return 0
        records = 0
        for entry in await self._recover(self.committer):
            records += self._replay(entry)
        self._log.info("state_restored", windows=0, records=records, journaled_records=records)
        return records

    async def _recover(self, committer: Committer) -> list[JournalEntry]:
        """The journal, however long Redis takes to answer: counting before it is loaded would
        let this run's flushes delete entries never replayed (acknowledged, then lost). Probes
        say "starting" meanwhile; nothing could be acknowledged anyway."""
        backoff = _BACKOFF_FIRST
        while True:
            try:
                return await committer.recover()
            except StoreUnavailable as error:
                self._log.warning("journal_load_waiting", error=str(error), retry_in=backoff)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MOST)

    async def _flush(self, window: _Window) -> None:
        await self._call(
            self.store.flush, self._share, window.report.snapshot, self.committer is not None
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-merger")

    async def checkpoint_now(self) -> None:
        """Nothing to checkpoint: a stopping replica flushes its partial window instead."""

    def window_closed(self, report: WindowReport) -> None:
        if report.snapshot is None:
            return
        self._windows.append(_Window(report, printed=report.partial))
        while len(self._windows) > MAX_PENDING_FLUSHES:
            self._give_up(self._windows[0], "flush_given_up")

    def _give_up(self, window: _Window, event: str) -> None:
        """Drop a window from the backlog, after its local report."""
        self._windows.remove(window)
        self.dropped_flushes += 1
        self._print_local(window)
        self._log.error(event, window_start=window.report.start)

    @property
    def pending(self) -> int:
        return sum(not window.flushed for window in self._windows)

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(TICK)
            try:
                await self.step()
            except Exception:
                # A bug must not stop the reports of every later window: log it, go on.
                self._log.exception("replica_merge_failed")

    async def step(self) -> None:
        """Flush what closed, then merge whatever is due; a Redis error pauses both."""
        now = self._clock.now()
        if now < self._retry_at:
            self._print_overdue(now)
            return
        if not self.reachable:
            # Redis may have restarted empty: flush again every share not merged yet (a flush
            # replaces the replica's earlier one, so this never counts twice).
            for window in self._windows:
                window.flushed = False
        try:
            if self.committer is not None and self.pending:
                # The flush deletes the windows' journals: every entry of theirs goes first.
                await self.committer.drain()
            for window in list(self._windows):
                if not window.flushed:
                    await self._flush(window)
                    window.flushed = True
            for window in list(self._windows):
                if window.report.partial:
                    self._windows.remove(window)
                elif now > window.report.end + SHARE_TTL_SECONDS:
                    self._give_up(window, "merge_given_up")
                elif now >= window.report.end + self._grace:
                    await self._settle(window, now)
            if self.reviser is not None:
                await self._revise(self.reviser, now)
        except StoreUnavailable as error:
            self._unreachable(error, now)
            self._print_overdue(now)
            return
        if not self.reachable:
            self._log.info("store_reachable_again")
        self.reachable = True
        self._backoff = _BACKOFF_FIRST
        if now >= self._size_read_at + _SIZE_EVERY:
            # Read here, not at scrape time: a scrape must never wait on Redis.
            self._size_read_at = now
            self.stored_bytes = await self._call(self.store.stored_bytes)

    async def _settle(self, window: _Window, now: float) -> None:
        """Each attribute key's window is claimed, merged and reported on its own."""
        start, end = window.report.start, window.report.end
        key = _attribute_key(window)
        if await self._call(self.store.claim, key, start, self.replica, self._claim_timeout):
            # Flushed again (it replaces the earlier flush): if Redis restarted empty between
            # the flush and now without this replica noticing, its share is still merged.
            await self._flush(window)
            shares = await self._call(self.store.collect, key, start, end)
            parts = [share for _, share in shares]
            merged = replace(
                merge_snapshots(parts, self._lg_k, self._max_patterns),
                attribute_key=key,
            )
            held = [share_id for share_id, _ in shares]
            if await self._call(self.store.save_merged, merged, held, now):
                report = replace(
                    report_of_snapshot(
                        merged, partial=False, lg_k=self._lg_k, top_patterns=self._top_patterns
                    ),
                    scope="global",
                    replicas=tuple(sorted({share_id.replica for share_id in held})),
                    attribute_key=window.report.attribute_key,
                )
                self._print(report)
                self.global_reports += 1
                self._windows.remove(window)
            # Otherwise another replica merged it first (its claim expired while it merged
            # and ours followed): the next step adds this share late if that merge missed it.
        elif await self._call(self.store.is_merged, key, start):
            await self._add_late(window, now)
            self._windows.remove(window)
        elif now > end + self._grace + 2 * self._claim_timeout:
            # Claimed by a replica that never finished, and no claim came free again.
            self._print_local(window)
            self._windows.remove(window)

    async def _revise(self, reviser: Reviser, now: float) -> None:
        """Late records into the merged windows (after this replica's shares, flushed above),
        and the revisions due, whichever replica's late records they hold: the replica whose
        transaction takes a revision prints it, so each is printed once."""
        if not reviser.due(now, self._first_open_index()):
            return
        deltas = reviser.late.ready(self._first_open_index())
        try:
            waiting, revisions, next_due = await self._call(reviser.merge, deltas, now)
        except (StoreUnavailable, asyncio.CancelledError):
            # Retried whole: a delta merged already is recognised by its id, never added twice.
            reviser.failed(deltas)
            raise
        reviser.settle(deltas, waiting)
        for delta in waiting:
            # Not merged yet: wait for the replicas' merge, as long as their shares live.
            if now > delta.snapshot.end + SHARE_TTL_SECONDS:
                reviser.late.give_up(delta)
                self._log.error("late_records_given_up", window_start=delta.snapshot.start)
            else:
                reviser.late.retry([delta])
        reviser.publish(revisions, next_due, now)

    async def _settle_before_stopping(self, window: _Window) -> None:
        """A complete window this replica closed but nobody merged yet, at shutdown.

        This may be the last replica running (one replica, or all of them restarting). Running
        replicas get the first chance: wait out the merge grace and a little more (at most
        --merge-grace + 1 s), then merge it here only if no replica has. If one has, its merge
        took this share, or the share is added late (a no-op when the merge held it).
        """
        wait = window.report.end + self._grace + _STOP_MARGIN - self._clock.now()
        if wait > 0:
            await self._clock.sleep(wait)
        if await self._call(self.store.is_merged, _attribute_key(window), window.report.start):
            await self._add_late(window, self._clock.now())
            self._windows.remove(window)
        else:
            await self._settle(window, self._clock.now())

    async def _add_late(self, window: _Window, now: float) -> None:
        """The window was merged without this share: union it in, and say so in a report."""
        if await self._call(self.store.add_late, self._share, window.report.snapshot, now):
            self.late_shares += 1
            self._log.warning("late_share_added", window_start=window.report.start)
            # Only this share, marked "late": the global report of the window was printed
            # without it, and this one must not be mistaken for it.
            self._print(replace(window.report, scope="late", replicas=(self.replica,)))

    def _unreachable(self, error: Exception, now: float) -> None:
        if self.reachable:
            self._log.warning("store_unreachable", error=str(error))
        self.reachable = False
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MOST)

    def _print_overdue(self, now: float) -> None:
        """Redis is down: windows due for a report get a local one, so none goes unreported."""
        for window in self._windows:
            if not window.printed and now >= window.report.end + self._grace:
                self._print_local(window)

    def _print_local(self, window: _Window) -> None:
        if window.printed:
            return
        window.printed = True
        self.local_reports += 1
        self._print(replace(window.report, scope="local", replicas=(self.replica,)))

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    async def stop(self) -> None:
        """Flush the windows closed at shutdown (the partial one too) with one last attempt."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            for window in self._windows:
                if not window.flushed:
                    await self._flush(window)
                    window.flushed = True
            for window in list(self._windows):
                if not window.report.partial:
                    await self._settle_before_stopping(window)
            if self.reviser is not None:
                # Every window is closed: merge the late records still waiting, once more.
                await self._revise(self.reviser, self._clock.now())
        except StoreUnavailable as error:
            self._log.error("final_flush_failed", error=str(error), windows=self.pending)
        for window in self._windows:
            if not window.flushed:  # flushed shares are merged and reported by the others
                self._print_local(window)
        await self._call(self.store.close)
        self._executor.shutdown(wait=True)

    def collector(self) -> Collector:
        return ReplicaCollector(self)

    def readiness_detail(self) -> dict[str, str]:
        if self.reachable:
            return {"store": "redis"}
        return {"store": "redis unreachable: reports are local, flushes retried"}


def _attribute_key(window: _Window) -> str:
    """The key the window's counts are of ("" from before several keys: the store's first)."""
    snapshot = window.report.snapshot
    return snapshot.attribute_key if snapshot is not None else window.report.attribute_key


class ReplicaCollector(Collector):
    def __init__(self, merger: ReplicaMerger) -> None:
        self._merger = merger

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "otlp_stats_store_bytes",
            "Bytes the state store holds (Redis used_memory, read every 10 s).",
            value=self._merger.stored_bytes,
        )
        yield GaugeMetricFamily(
            "otlp_stats_store_reachable",
            "1 while the shared store (Redis) answers, 0 while reports are local.",
            value=1 if self._merger.reachable else 0,
        )
        yield from journal_metrics(self._merger.committer)
        yield GaugeMetricFamily(
            "otlp_stats_store_pending_flushes",
            "Closed windows whose share waits to be flushed to the shared store.",
            value=self._merger.pending,
        )
        reports = CounterMetricFamily(
            "otlp_stats_scoped_reports",
            "Window reports printed with a shared store, by scope (global or local).",
            labels=["scope"],
        )
        reports.add_metric(["global"], self._merger.global_reports)
        reports.add_metric(["local"], self._merger.local_reports)
        reports.add_metric(["late"], self._merger.late_shares)
        yield reports
        yield CounterMetricFamily(
            "otlp_stats_store_late_shares",
            "Shares added to a window after its global report (each printed as a late report).",
            value=self._merger.late_shares,
        )
        yield CounterMetricFamily(
            "otlp_stats_store_flushes_given_up",
            "Window shares given up, backlog full or too old to merge (local report printed).",
            value=self._merger.dropped_flushes,
        )
