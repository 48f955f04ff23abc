"""The state stores and rollups as code: snapshots, restore, merge, retention, queries."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from otlp_stats.config import ConfigError, describe, load_settings
from otlp_stats.counting.aggregator import (
    Aggregator,
    LabelTally,
    WindowSnapshot,
    merge_snapshots,
    report_of_snapshot,
)
from otlp_stats.counting.sketches import estimate_serialized
from otlp_stats.operating.query import QueryError, QueryScope, answer_query, parse_query
from otlp_stats.store.base import EntryKey, StateStore, StoredPeriod
from otlp_stats.store.keeper import MAX_PENDING_WINDOWS, StateKeeper
from otlp_stats.store.memory import MemoryStore
from otlp_stats.store.periods import (
    DEFAULT_RETENTION,
    Retention,
    Span,
    parse_retention,
    parse_rollups,
    period_bounds,
)
from otlp_stats.store.redis import RedisStore
from otlp_stats.store.sqlite import SqliteStore, StoreMissing
from tests.support.fakes import FakeClock
from tests.support.redistools import RedisServer

# The first configured attribute key: a snapshot naming none (the aggregator's) is its.
FIRST_KEY = "service.name"

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
ROLLUPS = ("1m", "1h", "1d", "1mo")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def hashes(*numbers: int) -> LabelTally:
    return LabelTally.of_hashes(list(numbers))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    opened: StateStore
    if request.param == "memory":
        opened = MemoryStore(ROLLUPS, DEFAULT_RETENTION, 10.0, first_key=FIRST_KEY)
    else:
        opened = SqliteStore(
            tmp_path / "state.db", ROLLUPS, DEFAULT_RETENTION, 10.0, first_key=FIRST_KEY
        )
    yield opened
    opened.close()


def test_calendar_periods_are_utc_days_and_months() -> None:
    assert period_bounds("1d", at("2026-11-23T23:59:59")) == (
        at("2026-11-23T00:00:00"),
        at("2026-11-24T00:00:00"),
    )
    assert period_bounds("1mo", at("2026-12-31T12:00:00")) == (
        at("2026-12-01T00:00:00"),
        at("2027-01-01T00:00:00"),
    )
    assert period_bounds("1h", at("2026-11-23T10:59:00"))[0] == at("2026-11-23T10:00:00")
    assert period_bounds("1m", at("2026-11-23T10:59:30"))[0] == at("2026-11-23T10:59:00")


def test_retention_names_only_what_changes_and_months_are_calendar_months() -> None:
    retention = parse_retention("1d=3d")
    assert retention.span("1d") == Span(3, "d")
    assert retention.span("window") == Span(1, "h")
    assert Span(2, "mo").before(at("2026-03-15T10:00:00")) == at("2026-01-01T00:00:00")
    assert parse_rollups("1mo, 1d") == ("1d", "1mo")
    with pytest.raises(ValueError, match="unknown rollup"):
        parse_rollups("1w")


def test_store_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="store"):
        load_settings(["--store", "postgres://x"])
    with pytest.raises(ConfigError, match="retention"):
        load_settings(["--retention", "1d=forever"])
    settings = load_settings(["--store", "sqlite:///tmp/x.db", "--rollups", "1h"])
    assert settings.rollups == ("1h",)
    with_password = load_settings(["--store", "redis://:hunter2@redis:6379/0"])
    assert describe(with_password)["store"] == "redis://:***@redis:6379/0"


def test_a_restored_window_counts_on_without_counting_twice() -> None:
    first = Aggregator(10, T0)
    first.add(T0 + 1, {"a": hashes(1, 2, 3), None: hashes(9)})
    checkpoint = first.snapshot()

    resumed = Aggregator(10, T0 + 5)
    resumed.restore(checkpoint)
    resumed.add(T0 + 6, {"a": hashes(3, 4)})
    [report] = resumed.close_until(T0 + 10)
    values = {entry.value: (entry.distinct_messages, entry.records) for entry in report.values}
    assert values == {"a": (4, 5), None: (1, 1)}
    assert report.distinct_messages == 5


def test_a_restored_window_that_has_ended_is_reported_next() -> None:
    first = Aggregator(10, T0)
    first.add(T0 + 1, {"a": hashes(1)})
    resumed = Aggregator(10, T0 + 35)
    resumed.restore(first.snapshot())
    reports = resumed.close_until(T0 + 35)
    assert [r.start for r in reports] == [T0, T0 + 10, T0 + 20]
    assert reports[0].records == 1


def test_replica_shares_merge_into_the_union() -> None:
    shares = []
    for replica_hashes in ([1, 2, 3], [3, 4], [4, 5, 6]):
        aggregator = Aggregator(10, T0, keep_sketches=True)
        aggregator.add(T0 + 1, {"checkout": hashes(*replica_hashes)})
        [report] = aggregator.close_until(T0 + 10)
        assert report.snapshot is not None
        shares.append(report.snapshot)
    merged = report_of_snapshot(merge_snapshots(shares), partial=False)
    [entry] = merged.values
    assert (entry.distinct_messages, entry.records, entry.distinct.estimated) == (6, 8, False)


def test_a_message_seen_in_two_windows_of_a_day_counts_once(store: StateStore) -> None:
    aggregator = Aggregator(10, T0, keep_sketches=True)
    aggregator.add(T0 + 1, {"checkout": hashes(1, 2)})
    aggregator.add(T0 + 11, {"checkout": hashes(2, 3), None: hashes(7)})
    snapshots = [r.snapshot for r in aggregator.close_until(T0 + 20) if r.snapshot]
    store.commit(snapshots, None, T0 + 20)
    store.commit(snapshots[:1], None, T0 + 20)  # saved again: skipped, not counted twice

    scope = QueryScope(ROLLUPS, DEFAULT_RETENTION, 10.0, "unknown")
    day = answer_query(store, parse_query({"from": "2026-11-23"}, scope, T0 + 20), scope, T0 + 20)
    [period] = day["periods"]
    assert (period["windows"], period["records"], period["distinct_messages"]) == (2, 5, 4)
    assert period["complete"] is False
    by_value = {v["value"]: (v["distinct_messages"], v["records"]) for v in period["values"]}
    assert by_value == {"checkout": (3, 4), "unknown": (1, 1)}
    only = parse_query({"from": "2026-11-23", "value": "checkout"}, scope, T0 + 20)
    [period] = answer_query(store, only, scope, T0 + 20)["periods"]
    assert [v["value"] for v in period["values"]] == ["checkout"]
    windows = parse_query(
        {"resolution": "window", "from": "2026-11-23T10:00:00Z", "to": "2026-11-23T10:00:10Z"},
        scope,
        T0 + 20,
    )
    assert [p["records"] for p in answer_query(store, windows, scope, T0 + 20)["periods"]] == [2, 3]


def test_retention_drops_old_base_windows_but_keeps_the_day(store: StateStore) -> None:
    aggregator = Aggregator(10, T0, keep_sketches=True)
    aggregator.add(T0 + 1, {"a": hashes(1)})
    store.commit([r.snapshot for r in aggregator.close_until(T0 + 10) if r.snapshot], None, T0)
    later = T0 + 2 * 3600
    store.commit([], None, later)
    assert store.query(FIRST_KEY, "window", T0, T0, None) == []
    assert [p.windows for p in store.query(FIRST_KEY, "1d", T0 - 36000, T0, None)] == [1]


def test_questions_outside_what_is_kept_are_refused() -> None:
    scope = QueryScope(("1d",), DEFAULT_RETENTION, 10.0, "unknown")
    with pytest.raises(QueryError) as future:
        parse_query({"from": "2027-01-01"}, scope, T0)
    assert future.value.status == 400
    with pytest.raises(QueryError) as expired:
        parse_query({"from": "2026-01-01"}, scope, T0)
    assert expired.value.status == 404
    with pytest.raises(QueryError) as not_kept:
        parse_query({"resolution": "1h", "from": "2026-11-23"}, scope, T0)
    assert not_kept.value.status == 400
    with pytest.raises(QueryError, match="not a date"):
        parse_query({"from": "yesterday"}, scope, T0)


def test_sqlite_checkpoint_is_skipped_once_its_window_is_saved(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    aggregator = Aggregator(10, T0, keep_sketches=True)
    aggregator.add(T0 + 1, {"a": hashes(1, 2)})
    store = SqliteStore(path, ("1d",), DEFAULT_RETENTION, 10.0, first_key=FIRST_KEY)
    store.commit([], aggregator.snapshot(), T0 + 2)
    store.close()
    reopened = SqliteStore(path, ("1d",), DEFAULT_RETENTION, 10.0, first_key=FIRST_KEY)
    [restored] = reopened.load_open()
    assert restored.records == 2
    reopened.commit([restored], None, T0 + 10)
    assert reopened.load_open() == []
    reopened.close()


def test_sqlite_size_is_measured_by_the_writer_so_asking_opens_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, ("1d",), DEFAULT_RETENTION, 10.0, first_key=FIRST_KEY)
    empty = store.stored_bytes()
    aggregator = Aggregator(10, T0, keep_sketches=True)
    aggregator.add(T0 + 1, {f"value {n}": hashes(n, n + 1) for n in range(200)})
    store.commit([r.snapshot for r in aggregator.close_until(T0 + 10) if r.snapshot], None, T0)
    with sqlite3.connect(path) as truth:
        pages, free, size = (
            truth.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )

    def no_connection(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise AssertionError("stored_bytes opened a connection")

    monkeypatch.setattr(sqlite3, "connect", no_connection)
    assert store.stored_bytes() == (pages - free) * size > empty
    store.close()


def test_a_query_of_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "state.db"
    with pytest.raises(StoreMissing, match="does not exist"):
        SqliteStore(path, ("1d",), DEFAULT_RETENTION, 10.0, read_only=True, first_key=FIRST_KEY)
    assert not path.parent.exists()


class FailingStore:
    """A store whose every write fails, as a full disk would make SQLite's."""

    durable = False

    def __init__(self) -> None:
        self.closed = False

    def load_open(self) -> list[WindowSnapshot]:
        return []

    def commit(
        self,
        closed: Sequence[WindowSnapshot],
        open_windows: Sequence[WindowSnapshot] | None,
        now: float,
        journal_seq: int | None = None,
    ) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    def query(
        self, attribute_key: str, resolution: str, first: float, last: float, key: EntryKey | None
    ) -> list[StoredPeriod]:
        return []

    def attribute_keys(self) -> list[str]:
        return []

    def stored_bytes(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


async def test_failing_writes_keep_a_bounded_backlog_and_stop_still_returns() -> None:
    clock, store = FakeClock(T0), FailingStore()
    aggregator = Aggregator(10, T0, keep_sketches=True)
    keeper = StateKeeper(store, aggregator, clock, 5.0, structlog.get_logger("test"))
    extra = 25
    for n in range(MAX_PENDING_WINDOWS + extra):
        aggregator.add(clock.now(), {"checkout": hashes(n)})
        clock.set(clock.now() + 10)
        for report in aggregator.close_until(clock.now()):
            keeper.window_closed(report)
        await keeper.write()
    assert keeper.write_failures == MAX_PENDING_WINDOWS + extra
    assert keeper.windows_given_up == extra
    # Every window closing now pushes the oldest out.
    keeper.window_closed(aggregator.close_until(clock.now() + 10)[0])
    assert keeper.windows_given_up == extra + 1
    await keeper.stop()  # the last write fails too: logged and counted, not raised
    assert store.closed
    assert keeper.windows_given_up == extra + 1 + MAX_PENDING_WINDOWS


def test_a_million_distinct_messages_over_a_day_roll_up_within_bounds() -> None:
    """Driven through the aggregator with a fake clock: 1,000,000 distinct messages spread over
    one simulated day in one-minute windows, a tenth of them repeated in a later window."""
    clock = FakeClock(at("2026-11-23T00:00:00"))
    aggregator = Aggregator(60, clock.now(), keep_sketches=True)
    store = MemoryStore(("1d", "1mo"), DEFAULT_RETENTION, 60.0, first_key=FIRST_KEY)
    distinct, windows = 1_000_000, 1440
    per_window = distinct // windows + 1
    sent = 0
    for window in range(windows):
        first = window * per_window
        batch = list(range(first, min(first + per_window, distinct)))
        repeats = list(range(first - per_window, first - per_window + per_window // 10))
        clock.set(clock.now() + 1)
        aggregator.add(
            clock.now(), {"checkout": LabelTally.of_hashes(batch + (repeats if window else []))}
        )
        sent += len(batch) + (len(repeats) if window else 0)
        clock.set(at("2026-11-23T00:00:00") + (window + 1) * 60)
        closed = [r.snapshot for r in aggregator.close_until(clock.now()) if r.snapshot]
        store.commit(closed, None, clock.now())
    for resolution in ("1d", "1mo"):
        [period] = store.query(FIRST_KEY, resolution, at("2026-11-01T00:00:00"), clock.now(), None)
        [entry] = period.entries
        estimate = estimate_serialized(entry.sketch)
        assert entry.records == sent
        assert estimate.estimated
        assert estimate.lower_bound <= distinct <= estimate.upper_bound, (resolution, estimate)
        # The stated error: about 1/sqrt(4096) = 1.6% relative standard error, 2 sigma bounds.
        assert abs(estimate.value - distinct) / distinct < 0.032


@pytest.fixture(params=["sqlite", "redis"])
def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[Retention, float], tuple[StateStore, StateStore]]]:
    """Two empty stores of one kind: two SQLite files, or two databases of one redis-server."""
    opened: list[StateStore] = []
    server: RedisServer | None = None
    if request.param == "redis":
        server = RedisServer(tmp_path)
        server.start()

    def open_two(retention: Retention, window: float) -> tuple[StateStore, StateStore]:
        for name in ("0", "1"):
            if server is None:
                path = tmp_path / f"state{name}.db"
                opened.append(SqliteStore(path, ROLLUPS, retention, window, first_key=FIRST_KEY))
            else:
                url = server.url.rsplit("/", 1)[0] + "/" + name
                opened.append(RedisStore(url, ROLLUPS, retention, window, first_key=FIRST_KEY))
        return opened[-2], opened[-1]

    yield open_two
    for store in opened:
        store.close()
    if server is not None:
        server.stop()


def test_windows_saved_in_one_commit_roll_up_as_when_saved_one_by_one(
    two_stores: Callable[[Retention, float], tuple[StateStore, StateStore]],
) -> None:
    """A commit's windows are merged into each period at once: same periods, same counts, and
    a window given twice in one commit, or saved already, is still counted once."""
    aggregator = Aggregator(3600, T0, keep_sketches=True)
    for hour in range(30):  # across midnight: two days
        aggregator.add(T0 + hour * 3600 + 1, {"checkout": hashes(hour, hour + 1, 100)})
        aggregator.add(T0 + hour * 3600 + 2, {f"v{hour % 3}": hashes(hour * 7)})
    snapshots = [r.snapshot for r in aggregator.close_until(T0 + 30 * 3600) if r.snapshot]
    assert len(snapshots) == 30
    retention = parse_retention("window=30d,1m=30d,1h=30d,1d=60d,1mo=24mo")
    by_one, at_once = two_stores(retention, 3600.0)
    for snapshot in snapshots:
        by_one.commit([snapshot], None, T0)
    at_once.commit([*snapshots, snapshots[3]], None, T0)
    at_once.commit(snapshots[:2], None, T0)  # saved already: skipped

    def stored(store: StateStore, resolution: str) -> list[tuple[object, ...]]:
        return [
            (p.start, p.windows, e.key, e.records, estimate_serialized(e.sketch).value)
            for p in store.query(FIRST_KEY, resolution, T0 - 40 * 86400, T0 + 2 * 86400, None)
            for e in sorted(p.entries, key=lambda entry: entry.key)
        ]

    for resolution in ("window", *ROLLUPS):
        assert stored(at_once, resolution) == stored(by_one, resolution), resolution
    [day_one, day_two] = at_once.query(FIRST_KEY, "1d", T0 - 86400, T0 + 2 * 86400, None)
    assert day_one.windows + day_two.windows == 30
    checkout = next(e for e in day_one.entries if e.key == (0, "checkout"))
    assert checkout.records == 3 * day_one.windows
