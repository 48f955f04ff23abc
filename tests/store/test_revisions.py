"""Late records merged into stored windows and printed as revisions, on a fake clock: with the
SQLite store through the keeper, and with two replicas sharing a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from otlp_stats.counting.aggregator import Aggregator, LabelTally, ResolvedBatch, WindowReport
from otlp_stats.counting.late import BACKLOG_FULL, BEYOND_RETENTION, MERGED
from otlp_stats.counting.sketches import estimate_serialized
from otlp_stats.store.keeper import StateKeeper
from otlp_stats.store.periods import DEFAULT_RETENTION, Retention, parse_retention
from otlp_stats.store.redis import RedisStore
from otlp_stats.store.replicas import ReplicaMerger
from otlp_stats.store.revisions import MAX_LATE_WINDOWS, LateMerge, Reviser
from otlp_stats.store.sqlite import SqliteStore
from tests.support.fakes import FakeClock
from tests.support.redistools import RedisServer

# The first configured attribute key: a snapshot naming none (the aggregator's) is its.
FIRST_KEY = "service.name"

WINDOW = 10.0
LATENESS = 5.0
ROLLUPS = ("1h", "1d")
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a window's start
FIRST = int(T0 // WINDOW)


def hashes(*values: int) -> LabelTally:
    return LabelTally.of_hashes(list(values))


def late_merge(retention: Retention = DEFAULT_RETENTION, incarnation: str = "run") -> LateMerge:
    return LateMerge(WINDOW, ROLLUPS, retention, 100, 12, incarnation)


def summary(report: WindowReport) -> dict[str | None, tuple[int, int]]:
    return {entry.value: (entry.distinct_messages, entry.records) for entry in report.values}


# --- which late records are merged, which rejected ---------------------------------------------


def test_late_records_within_any_retention_are_merged_and_older_ones_rejected() -> None:
    late = late_merge(parse_retention("window=1h,1h=1d,1d=2d"))
    arrival = T0 + 3 * 86_400 + 60  # the window of T0 is in no resolution kept any more
    outcome = late.take(
        arrival,
        {FIRST: {"a": hashes(1, 2)}, FIRST + 3 * 8640: {"a": hashes(3)}},
    )
    assert (outcome.merged, outcome.rejected) == (1, 2)
    assert "2 log records rejected as late" in outcome.message
    assert "older than the store keeps" in outcome.message
    assert late.records_by_reason[MERGED] == 1 and late.records_by_reason[BEYOND_RETENTION] == 2
    # A window past the base retention whose day is kept still merges (into the day).
    assert late.take(T0 + 86_400, {FIRST: {"a": hashes(4)}}).merged == 1


def test_late_windows_waiting_to_merge_are_bounded() -> None:
    late = late_merge()
    windows: dict[int, ResolvedBatch] = {
        FIRST + n: {"a": hashes(n)} for n in range(MAX_LATE_WINDOWS + 2)
    }
    outcome = late.take(T0 + 3600, windows)
    assert (outcome.merged, outcome.rejected) == (MAX_LATE_WINDOWS, 2)
    assert late.records_by_reason[BACKLOG_FULL] == 2
    # A window already waiting still takes more.
    assert late.take(T0 + 3600, {FIRST: {"b": hashes(1)}}).merged == 1


def test_late_records_of_several_keys_are_counted_once_and_merged_per_key() -> None:
    late = LateMerge(WINDOW, ROLLUPS, DEFAULT_RETENTION, 100, 12, "run", "service.name")
    by_key: dict[str, dict[int, ResolvedBatch]] = {
        "service.name": {FIRST: {"a": hashes(1, 2)}},
        "severity_text": {FIRST: {"ERROR": hashes(1), None: hashes(2)}},
    }
    outcome = late.take(T0 + 60, by_key["service.name"], by_key)
    assert outcome.merged == 2 and late.records_by_reason[MERGED] == 2
    deltas = late.ready(FIRST + 1)
    assert {delta.snapshot.attribute_key: delta.snapshot.records for delta in deltas} == {
        "service.name": 2,
        "severity_text": 2,
    }
    assert len({delta.id for delta in deltas}) == 2


def test_one_keys_late_records_are_merged_under_that_key() -> None:
    late = LateMerge(WINDOW, ROLLUPS, DEFAULT_RETENTION, 100, 12, "run", "service.name")
    late.take(T0 + 60, {FIRST: {"a": hashes(1)}})
    [delta] = late.ready(FIRST + 1)
    assert delta.snapshot.attribute_key == "service.name"


async def test_with_acks_on_store_a_request_waits_for_every_window_and_key_it_merged() -> None:
    late = LateMerge(
        WINDOW, ROLLUPS, DEFAULT_RETENTION, 100, 12, "run", "service.name", wait_stored=True
    )
    by_key: dict[str, dict[int, ResolvedBatch]] = {
        "service.name": {FIRST: {"a": hashes(1)}, FIRST + 1: {"a": hashes(2)}},
        "severity_text": {FIRST: {"ERROR": hashes(1)}, FIRST + 1: {"ERROR": hashes(2)}},
    }
    both = late.take(T0 + 60, by_key["service.name"], by_key).stored
    only_first = late.take(T0 + 60, {FIRST: {"b": hashes(3)}}).stored
    assert both is not None and only_first is not None
    deltas = late.ready(FIRST + 2)
    assert len(deltas) == 4  # two windows, two keys
    first_window = [delta for delta in deltas if delta.snapshot.start == T0]
    # One key of the first window merged: nobody's records are all stored yet.
    late.stored(first_window[:1])
    assert not only_first.done() and not both.done()
    late.stored(first_window[1:])
    assert only_first.done() and not both.done()
    late.stored(delta for delta in deltas if delta.snapshot.start != T0)
    assert both.done() and both.exception() is None


async def test_with_acks_on_store_a_failed_merge_refuses_who_waits_for_it() -> None:
    late = LateMerge(WINDOW, ROLLUPS, DEFAULT_RETENTION, 100, 12, "run", wait_stored=True)
    stored = late.take(T0 + 60, {FIRST: {"a": hashes(1)}}).stored
    assert stored is not None
    deltas = late.ready(FIRST + 1)
    late.not_stored(deltas, OSError("disk full"))
    assert isinstance(stored.exception(), OSError)
    # Retried and merged later: counted, and nobody is answered twice.
    late.retry(deltas)
    late.stored(late.ready(FIRST + 1))
    assert late.waiting == 0


def test_without_acks_on_store_nobody_waits_for_late_records() -> None:
    assert late_merge().take(T0 + 60, {FIRST: {"a": hashes(1)}}).stored is None


# --- SQLite, through the keeper ---------------------------------------------------------------


class SqliteRig:
    """The aggregator, the keeper and the store as the service wires them, on a fake clock."""

    def __init__(self, path: Path, retention: Retention = DEFAULT_RETENTION) -> None:
        self.clock = FakeClock(T0)
        self.store = SqliteStore(path, ROLLUPS, retention, WINDOW, first_key=FIRST_KEY)
        self.aggregator = Aggregator(WINDOW, T0 + LATENESS, keep_sketches=True, lateness=LATENESS)
        self.late = late_merge(retention)
        self.revisions: list[WindowReport] = []
        reviser = Reviser(self.late, self.store, self.revisions.append, WINDOW, 12)
        logger = structlog.get_logger("test")
        self.keeper = StateKeeper(self.store, self.aggregator, self.clock, 5.0, logger, reviser)

    def add(self, at: float, windows: dict[int, ResolvedBatch]) -> tuple[int, int]:
        """A request arriving at `at`: (counted, merged late) as its sender is told."""
        self.clock.set(at)
        added = self.aggregator.add_windows(at, windows)
        outcome = self.late.take(at, added.late)
        assert outcome.rejected == 0
        return added.counted, outcome.merged

    async def close_windows(self, at: float) -> list[WindowReport]:
        self.clock.set(at)
        reports = self.aggregator.close_until(at)
        for report in reports:
            self.keeper.window_closed(report)
        await self.keeper.write()
        return reports

    async def revise(self, at: float) -> list[WindowReport]:
        self.clock.set(at)
        before = len(self.revisions)
        await self.keeper.revise()
        return self.revisions[before:]

    def day(self) -> tuple[int, dict[tuple[int, str], tuple[int, int]]]:
        """The stored day: its window count, and records and distinct messages per value."""
        [day] = self.store.query(FIRST_KEY, "1d", T0, T0, None)
        return day.windows, {
            e.key: (e.records, estimate_serialized(e.sketch).value) for e in day.entries
        }


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[SqliteRig]:
    rig = SqliteRig(tmp_path / "state.db")
    yield rig
    rig.store.close()


async def test_a_burst_of_late_records_is_merged_and_revised_once_per_window_length(
    rig: SqliteRig,
) -> None:
    assert rig.add(T0 + 1, {FIRST: {"a": hashes(1, 2)}}) == (2, 0)
    [first] = await rig.close_windows(T0 + WINDOW + LATENESS)
    assert first.revision == 1 and first.records == 2
    # Late: the window closed at T0 + 15. Merged at once, revision 2 at the next look.
    assert rig.add(T0 + 16, {FIRST: {"a": hashes(2, 3), "b": hashes(9)}}) == (0, 3)
    [second] = await rig.revise(T0 + 16.2)
    assert (second.start, second.end, second.revision) == (T0, T0 + WINDOW, 2)
    assert summary(second) == {"a": (3, 4), "b": (1, 1)} and second.records == 5
    # More late records within a window length: merged (the day has them) but not printed yet.
    assert rig.add(T0 + 17, {FIRST: {"a": hashes(4)}}) == (0, 1)
    assert await rig.revise(T0 + 17.2) == []
    assert rig.add(T0 + 20, {FIRST: {"b": hashes(9, 10)}}) == (0, 2)
    assert await rig.revise(T0 + 20.2) == []
    assert rig.day() == (1, {(0, "a"): (5, 4), (0, "b"): (3, 2)})
    # One window length after revision 2: revision 3, carrying both.
    assert await rig.revise(T0 + 26.1) == []
    [third] = await rig.revise(T0 + 26.2)
    assert third.revision == 3 and summary(third) == {"a": (4, 5), "b": (2, 3)}
    assert third.records == 8
    # Nothing more arrived: no further revision.
    assert await rig.revise(T0 + 60) == []


async def test_late_records_wait_for_their_window_to_be_saved_first(rig: SqliteRig) -> None:
    rig.add(T0 + 1, {FIRST: {"a": hashes(1)}})
    # Late on the request's arrival (end + lateness passed), but the reporter has not closed
    # the window yet: its own counts must reach the store before the late ones merge into it.
    assert rig.add(T0 + 15.5, {FIRST: {"a": hashes(2)}}) == (0, 1)
    assert await rig.revise(T0 + 15.6) == []
    await rig.close_windows(T0 + 15.7)
    [revision] = await rig.revise(T0 + 15.8)
    assert revision.revision == 2 and summary(revision) == {"a": (2, 2)}
    assert rig.day() == (1, {(0, "a"): (2, 2)})


async def test_a_window_never_saved_is_made_by_its_late_records(rig: SqliteRig) -> None:
    # Ten minutes before the service (and its store) started: no stored window, but the
    # window resolution keeps an hour. Its first report is the revision the merge schedules.
    before = FIRST - 60
    assert rig.add(T0 + 1, {before: {"a": hashes(1, 2)}}) == (0, 2)
    await rig.close_windows(T0 + WINDOW + LATENESS)  # the first window of this run
    [made] = await rig.revise(T0 + 15.1)
    assert (made.start, made.revision, made.records) == (before * WINDOW, 1, 2)
    [hour] = rig.store.query(FIRST_KEY, "1h", T0 - 3600, T0 - 3600, None)
    assert hour.windows == 1  # the made window counts in its hour (T0's day is another day)


async def test_late_records_still_waiting_at_stop_are_merged(rig: SqliteRig) -> None:
    rig.add(T0 + 1, {FIRST: {"a": hashes(1)}})
    await rig.close_windows(T0 + 15)
    rig.add(T0 + 16, {FIRST: {"a": hashes(2)}})
    await rig.keeper.stop()
    store = SqliteStore(
        rig.store._path, ROLLUPS, DEFAULT_RETENTION, WINDOW, read_only=True, first_key=FIRST_KEY
    )
    [window] = store.query(FIRST_KEY, "window", T0, T0, None)
    assert sum(entry.records for entry in window.entries) == 2
    store.close()


# --- two replicas sharing a real redis-server --------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Replica:
    def __init__(self, server: RedisServer, name: str, clock: FakeClock) -> None:
        self.printed: list[WindowReport] = []
        store = self.store = RedisStore(
            server.url, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=FIRST_KEY
        )
        self.late = late_merge(incarnation=f"{name}0:{name}")
        reviser = Reviser(
            self.late, store, self.printed.append, WINDOW, 12, poll_every=0.2, scope="global"
        )
        self.aggregator = Aggregator(WINDOW, T0 + LATENESS, keep_sketches=True, lateness=LATENESS)
        self.merger = ReplicaMerger(
            store,
            name,
            clock,
            self.printed.append,
            2.0 + LATENESS,
            30.0,
            12,
            structlog.get_logger("test"),
            reviser=reviser,
            first_open_index=lambda: self.aggregator.first_open_index,
        )

    def add(self, at: float, windows: dict[int, ResolvedBatch]) -> int:
        added = self.aggregator.add_windows(at, windows)
        return added.counted + self.late.take(at, added.late).merged

    def close(self, at: float) -> None:
        for report in self.aggregator.close_until(at):
            self.merger.window_closed(report)

    def revisions(self) -> list[tuple[int, int, tuple[str, ...]]]:
        return [(r.revision, r.records, r.replicas) for r in self.printed if r.revision > 1]


async def test_two_replicas_agree_on_one_revision_each_time(redis_server: RedisServer) -> None:
    clock = FakeClock(T0)
    a, b = Replica(redis_server, "a", clock), Replica(redis_server, "b", clock)
    a.add(T0 + 1, {FIRST: {"x": hashes(1, 2)}})
    b.add(T0 + 2, {FIRST: {"x": hashes(3)}})
    for at in (T0 + 15, T0 + 17.5):  # close and flush, then merge after the grace
        clock.set(at)
        for replica in (a, b):
            replica.close(at)
            await replica.merger.step()
    assert [(r.scope, r.records) for r in a.printed + b.printed] == [("global", 3)]
    # Late records on both replicas; a's merge comes first and its revision is due at once.
    clock.set(T0 + 20)
    assert a.add(T0 + 20, {FIRST: {"x": hashes(4)}}) == 1
    assert b.add(T0 + 20, {FIRST: {"y": hashes(5, 6)}}) == 2
    await a.merger.step()
    await b.merger.step()
    assert a.revisions() + b.revisions() == [(2, 4, ("a", "b"))]
    # b's records wait one window length after revision 2, then one replica prints them.
    clock.set(T0 + 29)
    await a.merger.step()
    await b.merger.step()
    assert len(a.revisions() + b.revisions()) == 1
    clock.set(T0 + 30.1)
    await b.merger.step()
    await a.merger.step()
    assert sorted(a.revisions() + b.revisions()) == [(2, 4, ("a", "b")), (3, 6, ("a", "b"))]
    # The day holds the window once, with every record.
    [day] = a.store.query(FIRST_KEY, "1d", T0, T0, None)
    assert day.windows == 1 and sum(entry.records for entry in day.entries) == 6
    await a.merger.stop()
    await b.merger.stop()


async def test_a_retried_late_merge_counts_once(redis_server: RedisServer) -> None:
    clock = FakeClock(T0)
    a = Replica(redis_server, "a", clock)
    a.add(T0 + 1, {FIRST: {"x": hashes(1)}})
    for at in (T0 + 15, T0 + 17.5):
        clock.set(at)
        a.close(at)
        await a.merger.step()
    a.add(T0 + 20, {FIRST: {"x": hashes(2)}})
    [delta] = a.late.ready(a.aggregator.first_open_index)
    store = a.store
    assert store.merge_late(delta, T0 + 20, WINDOW)
    assert store.merge_late(delta, T0 + 20, WINDOW)  # a retry after an unseen success
    [day] = store.query(FIRST_KEY, "1d", T0, T0, None)
    assert sum(entry.records for entry in day.entries) == 2
    await a.merger.stop()


async def test_late_records_of_a_window_past_its_retention_still_reach_the_day(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock(T0)
    a = Replica(redis_server, "a", clock)
    a.add(T0 + 1, {FIRST: {"x": hashes(1)}})
    for at in (T0 + 15, T0 + 17.5):
        clock.set(at)
        a.close(at)
        await a.merger.step()
    # Hours later: retention has deleted the window, and its merged marker has expired.
    later = T0 + 3 * 3600
    a.store.commit([], None, later)
    a.store._client.delete(f"otlp-stats:w:{T0!r}:merged")
    assert a.add(later, {FIRST: {"x": hashes(2)}}) == 1
    [delta] = a.late.ready(a.aggregator.first_open_index)
    assert a.store.merge_late(delta, later, WINDOW)
    [day] = a.store.query(FIRST_KEY, "1d", T0, T0, None)
    assert day.windows == 1 and sum(entry.records for entry in day.entries) == 2
    assert a.store.take_revisions(later) == ([], None)  # no stored window to print again
    await a.merger.stop()
