"""Several attribute keys in one store: each key's windows, rollups, checkpoint and revisions
are kept apart and answered apart, in memory, SQLite and a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from otlp_stats.counting.aggregator import (
    Aggregator,
    LabelTally,
    ResolvedBatch,
    WindowReport,
    WindowSnapshot,
)
from otlp_stats.counting.sketches import estimate_serialized
from otlp_stats.store.base import KIND_MISSING, KIND_VALUE, EntryKey, StateStore
from otlp_stats.store.memory import MemoryStore
from otlp_stats.store.periods import DEFAULT_RETENTION
from otlp_stats.store.redis import RedisStore
from otlp_stats.store.replicas import ReplicaMerger
from otlp_stats.store.revisions import LateDelta, LateMerge, Reviser
from otlp_stats.store.sqlite import SqliteStore
from tests.support.fakes import FakeClock
from tests.support.redistools import RedisServer

SERVICE = "service.name"  # the first configured key
NAMESPACE = "k8s.namespace.name"
WINDOW = 10.0
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
ROLLUPS = ("1h", "1d")


def window_of(
    attribute_key: str, batch: ResolvedBatch, start: float = T0, window: float = WINDOW
) -> WindowReport:
    """One closed window of one key, as the aggregator reports it with a store."""
    aggregator = Aggregator(window, start, keep_sketches=True)
    aggregator.add(start + 1, batch)
    [report] = aggregator.close_until(start + window)
    assert report.snapshot is not None
    return replace(
        report,
        attribute_key=attribute_key,
        snapshot=replace(report.snapshot, attribute_key=attribute_key),
    )


def snapshot_of(attribute_key: str, batch: ResolvedBatch, start: float = T0) -> WindowSnapshot:
    snapshot = window_of(attribute_key, batch, start).snapshot
    assert snapshot is not None
    return snapshot


def hashes(*numbers: int) -> LabelTally:
    return LabelTally.of_hashes(list(numbers))


def service_batch() -> dict[str | None, LabelTally]:
    return {"checkout": hashes(1, 2, 3)}


def namespace_batch() -> dict[str | None, LabelTally]:
    # The same messages, under another key's values: never unioned with the first key's.
    return {"shop": hashes(1, 2, 3, 4), None: hashes(9)}


def entries(store: StateStore, attribute_key: str, resolution: str) -> list[tuple[object, ...]]:
    """(windows, entry key, records, distinct) of each stored period of the key."""
    return sorted(
        (period.windows, entry.key, entry.records, estimate_serialized(entry.sketch).value)
        for period in store.query(attribute_key, resolution, T0 - 86_400, T0 + 86_400, None)
        for entry in period.entries
    )


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    opened: StateStore
    server: RedisServer | None = None
    if request.param == "memory":
        opened = MemoryStore(ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
    elif request.param == "sqlite":
        path = tmp_path / "state.db"
        opened = SqliteStore(path, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
    else:
        server = RedisServer(tmp_path)
        server.start()
        opened = RedisStore(server.url, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
    yield opened
    opened.close()
    if server is not None:
        server.stop()


CHECKOUT: EntryKey = (KIND_VALUE, "checkout")
SHOP: EntryKey = (KIND_VALUE, "shop")
MISSING: EntryKey = (KIND_MISSING, "")


def test_one_window_of_two_keys_is_stored_apart_and_answered_apart(store: StateStore) -> None:
    store.commit(
        [snapshot_of(SERVICE, service_batch()), snapshot_of(NAMESPACE, namespace_batch())],
        None,
        T0 + WINDOW,
    )
    for resolution in ("window", *ROLLUPS):
        # One window each: the two keys' snapshots of the window were not merged.
        assert entries(store, SERVICE, resolution) == [(1, CHECKOUT, 3, 3)], resolution
        assert entries(store, NAMESPACE, resolution) == [(1, SHOP, 4, 4), (1, MISSING, 1, 1)]
    assert store.attribute_keys() == [NAMESPACE, SERVICE]
    assert store.query("other.key", "1d", T0 - 86_400, T0, None) == []


def test_a_window_saved_for_one_key_is_skipped_for_it_alone(store: StateStore) -> None:
    store.commit([snapshot_of(SERVICE, service_batch())], None, T0 + WINDOW)
    # Given again for the first key, also as a snapshot from before several keys (no key),
    # it is skipped; the same window of another key is saved.
    unnamed = snapshot_of("", service_batch())
    store.commit(
        [snapshot_of(SERVICE, service_batch()), unnamed, snapshot_of(NAMESPACE, namespace_batch())],
        None,
        T0 + WINDOW,
    )
    assert entries(store, SERVICE, "1d") == [(1, CHECKOUT, 3, 3)]
    assert entries(store, NAMESPACE, "1d") == [(1, SHOP, 4, 4), (1, MISSING, 1, 1)]
    # A later window of the namespace key rolls up into its own day only.
    later = snapshot_of(NAMESPACE, {"shop": hashes(4, 5)}, T0 + WINDOW)
    store.commit([later], None, T0 + 2 * WINDOW)
    assert entries(store, NAMESPACE, "1d") == [(2, SHOP, 6, 5), (2, MISSING, 1, 1)]
    assert entries(store, SERVICE, "1d") == [(1, CHECKOUT, 3, 3)]


def test_two_keys_open_windows_are_checkpointed_and_restored_apart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
    service, namespace = (
        snapshot_of(SERVICE, service_batch()),
        snapshot_of(NAMESPACE, namespace_batch()),
    )
    store.commit([], [service, namespace], T0 + 5)
    store.close()
    reopened = SqliteStore(path, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
    restored = {snapshot.attribute_key: snapshot for snapshot in reopened.load_open()}
    assert {key: s.records for key, s in restored.items()} == {SERVICE: 3, NAMESPACE: 5}
    assert restored[NAMESPACE].start == restored[SERVICE].start == T0
    # The first key's window closes and is saved: only its checkpoint goes.
    reopened.commit([restored[SERVICE]], None, T0 + WINDOW)
    [left] = reopened.load_open()
    assert (left.attribute_key, left.records) == (NAMESPACE, 5)
    reopened.close()


@pytest.fixture(params=["sqlite", "redis"])
def kept_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SqliteStore | RedisStore]:
    opened: SqliteStore | RedisStore
    server: RedisServer | None = None
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        opened = SqliteStore(path, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
    else:
        server = RedisServer(tmp_path)
        server.start()
        opened = RedisStore(server.url, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
    yield opened
    opened.close()
    if server is not None:
        server.stop()


def test_late_records_revise_their_own_keys_window_only(
    kept_store: SqliteStore | RedisStore,
) -> None:
    store = kept_store
    store.commit(
        [snapshot_of(SERVICE, service_batch()), snapshot_of(NAMESPACE, namespace_batch())],
        None,
        T0 + WINDOW,
    )
    now = T0 + 3 * WINDOW
    # The namespace key's late records of the window, as LateMerge hands them over.
    late_batch: dict[str | None, LabelTally] = {"shop": hashes(7), "dev": hashes(8)}
    deltas = [LateDelta("L1:test", snapshot_of(NAMESPACE, late_batch))]
    late = LateMerge(WINDOW, ROLLUPS, DEFAULT_RETENTION, 100, 12)
    printed: list[WindowReport] = []
    reviser = Reviser(late, store, printed.append, spacing=WINDOW, lg_k=12)
    waiting, revisions, next_due = reviser.merge(deltas, now)
    reviser.publish(revisions, next_due, now)
    assert waiting == []
    [revision] = printed
    assert (revision.attribute_key, revision.revision, revision.records) == (NAMESPACE, 2, 7)
    assert {v.value: v.records for v in revision.values} == {"shop": 5, "dev": 1, None: 1}
    # The first key's window and day are as they were; the namespace day took the records.
    assert entries(store, SERVICE, "1d") == [(1, CHECKOUT, 3, 3)]
    assert entries(store, NAMESPACE, "1d") == [
        (1, (KIND_VALUE, "dev"), 1, 1),
        (1, SHOP, 5, 5),
        (1, MISSING, 1, 1),
    ]
    assert store.take_revisions(now + WINDOW) == ([], None)


async def test_replicas_merge_and_report_each_key_of_a_window_on_its_own(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    clock = FakeClock(T0 + 1)
    printed: list[WindowReport] = []
    replicas = []
    try:
        for name in ("a", "b"):
            store = RedisStore(server.url, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
            log = structlog.get_logger("test")
            replicas.append(ReplicaMerger(store, name, clock, printed.append, 2.0, 30.0, 12, log))
        first, second = replicas
        first.window_closed(window_of(SERVICE, {"checkout": hashes(1, 2)}))
        first.window_closed(window_of(NAMESPACE, {"shop": hashes(1, 2)}))
        second.window_closed(window_of(SERVICE, {"checkout": hashes(2, 3)}))
        second.window_closed(window_of(NAMESPACE, {"shop": hashes(5)}))
        clock.set(T0 + WINDOW + 0.5)
        await first.step()
        await second.step()
        clock.set(T0 + WINDOW + 2.5)
        await first.step()
        await second.step()
        reports = {r.attribute_key: r for r in printed}
        assert len(printed) == 2 and set(reports) == {SERVICE, NAMESPACE}
        for report in printed:
            assert (report.scope, report.replicas) == ("global", ("a", "b"))
            assert report.snapshot is not None
            assert report.snapshot.attribute_key == report.attribute_key
        assert (reports[SERVICE].records, reports[SERVICE].distinct_messages) == (4, 3)
        assert (reports[NAMESPACE].records, reports[NAMESPACE].distinct_messages) == (3, 3)
        reader = RedisStore(server.url, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
        assert entries(reader, SERVICE, "1d") == [(1, CHECKOUT, 4, 3)]
        assert entries(reader, NAMESPACE, "1d") == [(1, SHOP, 3, 3)]
        reader.close()
    finally:
        for replica in replicas:
            await replica.stop()
        server.stop()


def test_a_key_holding_separators_is_kept_and_listed_as_it_is(store: StateStore) -> None:
    # ":" separates the parts of Redis names: a key holding one must not reach another's.
    odd, plain = "team:a%3Ab", "team"
    store.commit(
        [snapshot_of(odd, {"x": hashes(1)}), snapshot_of(plain, {"y": hashes(2, 3)})],
        None,
        T0 + WINDOW,
    )
    assert entries(store, odd, "1d") == [(1, (KIND_VALUE, "x"), 1, 1)]
    assert entries(store, plain, "1d") == [(1, (KIND_VALUE, "y"), 2, 2)]
    assert entries(store, "team:a:b", "1d") == []
    assert store.attribute_keys() == [plain, odd]
