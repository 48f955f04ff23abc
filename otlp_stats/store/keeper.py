"""Moves counting state into the store: closed windows as they close, the open ones on a timer.

Every write goes through one writer task and one thread, in order, and each is a single
transaction holding the windows closed since the last write together with a fresh snapshot of
the open ones: a window is therefore always either in the checkpoint or saved as closed, never
in neither (lost) nor counted in both (twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otlp_stats.clock import Clock
from otlp_stats.counting.aggregator import Aggregator, WindowReport, WindowSnapshot
from otlp_stats.store.base import StateStore
from otlp_stats.store.journal import Committer, journal_metrics
from otlp_stats.store.revisions import LateDelta, Reviser, Revision

# Closed windows waiting for a write that keeps failing; past this the oldest are given up
# (counted and logged: their reports were printed, only their place in the store is lost).
MAX_PENDING_WINDOWS = 360
# How often the keeper looks for late records to merge and revisions due.
REVISE_TICK = 0.2


class StateKeeper:
    def __init__(
        self,
        store: StateStore,
        aggregator: Aggregator,
        clock: Clock,
        checkpoint_interval: float,
        logger: Any,
        reviser: Reviser | None = None,
        committer: Committer | None = None,
    ) -> None:
        self.store = store
        # With --durability ack: each counted request's journal, which checkpoints replace.
        self.committer = committer
        # With a store that keeps closed windows and event time: late records merged into them.
        self.reviser = reviser
        self._aggregator = aggregator
        self._clock = clock
        self._interval = checkpoint_interval
        self._log = logger
        self._closed: list[WindowSnapshot] = []
        self._wake = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Writes and merges take turns: late records merge into a window only after its own
        # counts are saved, and a failed write puts its windows back before a merge looks.
        self._turn = asyncio.Lock()
        self.checkpoints = 0
        self.write_failures = 0
        self.windows_given_up = 0
        # Measured by the writer thread after each write: a scrape must not touch the store.
        self.stored_bytes = 0

    async def restore(self) -> int:
        """Load the checkpoint into the aggregator; call before anything is counted."""
        loop = asyncio.get_running_loop()
        snapshots = await loop.run_in_executor(self._writer(), self._load_open)
        self._aggregator.restore(snapshots)
        records = sum(snapshot.records for snapshot in snapshots)
        journaled = await self._replay_journal()
        self._log.info(
            "state_restored",
            windows=len(snapshots),
            records=records + journaled,
            journaled_records=journaled,
        )
        return records + journaled

    async def _replay_journal(self) -> int:
        """What was committed after the checkpoint, into its windows; the records replayed."""
        if self.committer is None:
            return 0
        records = 0
        first = self._aggregator.attribute_key
        for entry in await self.committer.recover():
            index = self._aggregator.index_of(entry.start)
            replayed = self._aggregator.replay_key(entry.attribute_key, index, entry.batch)
            # Several keys journal the same records once per key: count them once.
            if replayed and entry.attribute_key in ("", first):
                records += sum(tally.records for tally in entry.batch.values())
        return records

    def _load_open(self) -> list[WindowSnapshot]:
        """In the writer thread: the checkpoint, and the store's size for the first scrapes."""
        snapshots = self.store.load_open()
        self.stored_bytes = self.store.stored_bytes()
        return snapshots

    def _writer(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="otlp-stats-store")
        return self._executor

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="store-writer"),
            asyncio.create_task(self._tick_loop(), name="store-checkpoint-timer"),
        ]
        if self.reviser is not None:
            self._tasks.append(asyncio.create_task(self._revise_loop(), name="store-reviser"))

    def window_closed(self, report: WindowReport) -> None:
        """The reporter's hook. Partial windows (shutdown) stay open: the checkpoint has them."""
        if report.partial or report.snapshot is None:
            return
        self._closed.append(report.snapshot)
        self._bound_backlog()
        self._wake.set()

    def _bound_backlog(self) -> None:
        excess = len(self._closed) - MAX_PENDING_WINDOWS
        if excess > 0:
            given_up, self._closed = self._closed[:excess], self._closed[excess:]
            self.windows_given_up += excess
            self._log.error(
                "closed_windows_given_up",
                windows=excess,
                first_start=given_up[0].start,
                last_start=given_up[-1].start,
            )

    async def _tick_loop(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.write()

    async def write(self) -> None:
        async with self._turn:
            await self._write()

    async def _write(self) -> None:
        """One transaction: the windows closed since the last one, and the open windows now."""
        closed, self._closed = self._closed, []
        open_windows = self._aggregator.snapshot() if self.store.durable else None
        # Taken with the snapshot, on the loop: every request numbered up to here is in it.
        journal_seq = self.committer.position if self.committer is not None else None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._writer(), self._commit, closed, open_windows, self._clock.now(), journal_seq
            )
        except Exception:
            # Keep the closed windows for the next attempt; the checkpoint is redone anyway.
            self._closed[:0] = closed
            self._bound_backlog()
            self.write_failures += 1
            self._log.exception("store_write_failed", closed_windows=len(closed))
            return
        if open_windows is not None:
            self.checkpoints += 1
            self._log.debug(
                "checkpointed",
                open_records=sum(snapshot.records for snapshot in open_windows),
                closed_windows=len(closed),
            )

    def _commit(
        self,
        closed: list[WindowSnapshot],
        open_windows: list[WindowSnapshot] | None,
        now: float,
        journal_seq: int | None,
    ) -> None:
        """In the writer thread: the transaction, then the store's size for the next scrape."""
        self.store.commit(closed, open_windows, now, journal_seq)
        self.stored_bytes = self.store.stored_bytes()

    async def _revise_loop(self) -> None:
        while True:
            await self._clock.sleep(REVISE_TICK)
            await self.revise()

    async def revise(self) -> None:
        """Merge the late records of windows closed by now, and print the revisions due."""
        reviser = self.reviser
        if reviser is None or not reviser.due(self._clock.now(), self._aggregator.first_open_index):
            return
        async with self._turn:
            closed, self._closed = self._closed, []
            deltas = reviser.late.ready(self._aggregator.first_open_index)
            now = self._clock.now()
            loop = asyncio.get_running_loop()
            try:
                waiting, revisions, next_due = await loop.run_in_executor(
                    self._writer(), self._merge_late, reviser, closed, deltas, now
                )
            except Exception:
                self._closed[:0] = closed
                self._bound_backlog()
                reviser.failed(deltas)
                self.write_failures += 1
                self._log.exception("late_merge_failed", late_windows=len(deltas))
                return
        reviser.late.retry(waiting)
        reviser.settle(deltas, waiting)
        reviser.publish(revisions, next_due, now)

    def _merge_late(
        self, reviser: Reviser, closed: list[WindowSnapshot], deltas: list[LateDelta], now: float
    ) -> tuple[list[LateDelta], list[Revision], float | None]:
        """In the writer thread: the closed windows first (late records merge into them)."""
        if closed:
            self.store.commit(closed, None, now)
        merged = reviser.merge(deltas, now)
        self.stored_bytes = self.store.stored_bytes()
        return merged

    async def checkpoint_now(self) -> None:
        """At shutdown, before the reporter closes the current window: save it as open."""
        await self._stop_tasks()
        await self.write()

    async def _stop_tasks(self) -> None:
        # After the write or merge under way: cancelled halfway, a merge would lose the late
        # records it had taken, or count them twice when retried.
        async with self._turn:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []

    def collector(self) -> Collector:
        return StoreCollector(self)

    async def stop(self) -> None:
        """Write what closed since the last write (the shutdown's complete windows), then close.

        A store failing now is logged, not raised: the service must still stop in order.
        """
        await self._stop_tasks()
        loop = asyncio.get_running_loop()
        if self._closed:
            closed, self._closed = self._closed, []
            try:
                await loop.run_in_executor(
                    self._writer(), self.store.commit, closed, None, self._clock.now()
                )
            except Exception:
                self.write_failures += 1
                self.windows_given_up += len(closed)
                self._log.exception("final_store_write_failed", closed_windows=len(closed))
        if self.reviser is not None:
            # Every window is closed now: what late records wait is merged before the store
            # closes (a revision not due yet is printed after the next start).
            await self._final_revise(self.reviser)
        if self._executor is not None:
            try:
                await loop.run_in_executor(self._executor, self.store.close)
            except Exception:
                self._log.exception("store_close_failed")
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _final_revise(self, reviser: Reviser) -> None:
        deltas = reviser.late.ready(self._aggregator.first_open_index)
        if not deltas:
            return
        now = self._clock.now()
        loop = asyncio.get_running_loop()
        try:
            waiting, revisions, next_due = await loop.run_in_executor(
                self._writer(), self._merge_late, reviser, [], deltas, now
            )
        except Exception:
            reviser.failed(deltas)
            self.write_failures += 1
            self._log.exception("final_late_merge_failed", late_windows=len(deltas))
            return
        reviser.settle(deltas, waiting)
        reviser.publish(revisions, next_due, now)


class StoreCollector(Collector):
    """Scrape-time figures of the store: its size on disk or in memory, and how writes go."""

    def __init__(self, keeper: StateKeeper) -> None:
        self._keeper = keeper

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "otlp_stats_store_bytes",
            "Bytes the state store holds (SQLite file pages, or serialized sketches in memory), "
            "as of the last write.",
            value=self._keeper.stored_bytes,
        )
        yield CounterMetricFamily(
            "otlp_stats_store_checkpoints",
            "Open-window checkpoints written to the store.",
            value=self._keeper.checkpoints,
        )
        yield from journal_metrics(self._keeper.committer)
        yield CounterMetricFamily(
            "otlp_stats_store_write_failures",
            "Store writes that failed and will be retried with the next write.",
            value=self._keeper.write_failures,
        )
        yield CounterMetricFamily(
            "otlp_stats_store_windows_given_up",
            "Closed windows never saved: the backlog of failing writes was full, or the last "
            "write at shutdown failed (their reports were printed).",
            value=self._keeper.windows_given_up,
        )
