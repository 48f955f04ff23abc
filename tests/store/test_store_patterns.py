"""Each value's patterns in every store: kept beside its sketch, merged into day and month as
the union of their windows, across replicas as one node's, after a restart, and read as none
from files written before patterns."""

from __future__ import annotations

import marshal
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import structlog

from otlp_stats.counting.aggregator import (
    Aggregator,
    LabelTally,
    WindowReport,
    WindowSnapshot,
)
from otlp_stats.patterns.tally import OVERFLOW_PATTERN, PatternCount, merge_counts
from otlp_stats.store.base import KIND_MISSING, KIND_VALUE, EntryKey, StateStore
from otlp_stats.store.journal import decode_batch, encode_batch
from otlp_stats.store.memory import MemoryStore
from otlp_stats.store.periods import BASE, parse_retention, period_bounds
from otlp_stats.store.redis import RedisStore, ShareId
from otlp_stats.store.replicas import ReplicaMerger
from otlp_stats.store.revisions import LateDelta
from otlp_stats.store.sqlite import SqliteStore
from tests.support.fakes import FakeClock
from tests.support.redistools import RedisServer

KEY = "service.name"
WINDOW = 3600.0
ROLLUPS = ("1d", "1mo")
# Long enough that nothing a test writes is expired by the time it reads.
RETENTION = parse_retention("window=400d,1d=400d,1mo=24mo")
T0 = datetime(2026, 11, 23, 0, 0, tzinfo=UTC).timestamp()
CHECKOUT: EntryKey = (KIND_VALUE, "checkout")

StoreOpener = Callable[..., StateStore]


def counts(*triples: tuple[str, int, str]) -> tuple[PatternCount, ...]:
    return tuple(PatternCount(*triple) for triple in triples)


def window(
    start: float, patterns: dict[str | None, tuple[PatternCount, ...]], key: str = ""
) -> WindowSnapshot:
    """A closed window whose values hold these patterns; each value's records are its
    patterns' and each record a distinct message, so the sketches are real too."""
    aggregator = Aggregator(WINDOW, start, keep_sketches=True)
    batch = {
        value: LabelTally.of_hashes([hash((start, value, i)) for i in range(_records(table))])
        for value, table in patterns.items()
    }
    aggregator.add(start + 1, batch)
    [report] = aggregator.close_until(start + WINDOW)
    assert report.snapshot is not None
    tallies = tuple(
        replace(tally, patterns=patterns[tally.value]) for tally in report.snapshot.tallies
    )
    return replace(report.snapshot, tallies=tallies, attribute_key=key)


def _records(table: tuple[PatternCount, ...]) -> int:
    return sum(count.records for count in table)


def day_of_windows(hours: int = 30) -> list[WindowSnapshot]:
    """Hourly windows across midnight into a second day; patterns recur with new examples and
    records, some only in some hours, and the missing value has patterns too."""
    windows = []
    for hour in range(hours):
        checkout = counts(
            ("payment <*> accepted in <*>ms", 5 + hour, f"payment {900 - hour} accepted in 3ms"),
            ("refund <*> issued", 1 + hour % 3, f"refund {hour} issued"),
        )
        if hour % 4 == 0:
            checkout += counts((f"cache warm shard {hour % 8}", 2, f"cache warm shard {hour % 8}"))
        missing = counts(("user <*> logged in", 1, f"user u{hour} logged in"))
        windows.append(window(T0 + hour * WINDOW, {"checkout": checkout, None: missing}))
    return windows


@pytest.fixture(params=["memory", "sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOpener]:
    """Opens stores of one kind (each call a new one, or the same file for SQLite's `name`)."""
    opened: list[StateStore] = []
    server: RedisServer | None = None
    if request.param == "redis":
        server = RedisServer(tmp_path)
        server.start()

    def open_one(name: str = "0", max_patterns: int = 1_000) -> StateStore:
        store: StateStore
        if request.param == "memory":
            store = MemoryStore(
                ROLLUPS, RETENTION, WINDOW, first_key=KEY, max_patterns=max_patterns
            )
        elif server is None:
            path = tmp_path / f"state{name}.db"
            store = SqliteStore(
                path, ROLLUPS, RETENTION, WINDOW, first_key=KEY, max_patterns=max_patterns
            )
        else:
            url = server.url.rsplit("/", 1)[0] + "/" + name
            store = RedisStore(
                url, ROLLUPS, RETENTION, WINDOW, first_key=KEY, max_patterns=max_patterns
            )
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()
    if server is not None:
        server.stop()


def stored_patterns(
    store: StateStore, resolution: str, key: EntryKey = CHECKOUT, attribute_key: str = KEY
) -> list[tuple[PatternCount, ...]]:
    """The value's pattern table in each stored period of `resolution`, oldest first."""
    periods = store.query(attribute_key, resolution, 0, 4e9, key)
    return [entry.patterns for period in periods for entry in period.entries]


def union_of(windows: Sequence[WindowSnapshot], value: str | None) -> tuple[PatternCount, ...]:
    return merge_counts(
        [
            tally.patterns
            for snapshot in windows
            for tally in snapshot.tallies
            if tally.value == value
        ]
    )


def test_each_window_keeps_its_patterns_and_a_day_or_month_holds_their_union(
    open_store: StoreOpener,
) -> None:
    windows = day_of_windows()
    store = open_store()
    for snapshot in windows:
        store.commit([snapshot], None, T0)
    assert stored_patterns(store, BASE) == [union_of([w], "checkout") for w in windows]
    first_day, second_day = windows[:24], windows[24:]
    assert stored_patterns(store, "1d") == [
        union_of(first_day, "checkout"),
        union_of(second_day, "checkout"),
    ]
    [month] = stored_patterns(store, "1mo")
    assert month == union_of(windows, "checkout")
    # The union is what it says: records added, the smallest example kept.
    payment = next(c for c in month if c.pattern.startswith("payment"))
    assert payment.records == sum(5 + hour for hour in range(30))
    assert payment.example == "payment 871 accepted in 3ms"
    assert stored_patterns(store, "1mo", (KIND_MISSING, "")) == [union_of(windows, None)]


def test_windows_saved_in_one_commit_hold_the_same_patterns_as_saved_one_by_one(
    open_store: StoreOpener,
) -> None:
    windows = day_of_windows()
    by_one, at_once = open_store("0"), open_store("1")
    for snapshot in windows:
        by_one.commit([snapshot], None, T0)
    at_once.commit([*reversed(windows), windows[2]], None, T0)
    at_once.commit(windows[:3], None, T0)  # saved already: their patterns count once
    for resolution in (BASE, *ROLLUPS):
        assert stored_patterns(at_once, resolution) == stored_patterns(by_one, resolution)


def test_a_merged_table_keeps_its_bound_and_the_rest_counts_in_overflow(
    open_store: StoreOpener,
) -> None:
    store = open_store(max_patterns=3)
    windows = [
        window(T0 + hour * WINDOW, {"checkout": counts((f"step {hour} done", 10, "x"))})
        for hour in range(5)
    ]
    store.commit(windows, None, T0)
    [day] = stored_patterns(store, "1d")
    tracked = ["step 0 done", "step 1 done", "step 2 done"]
    assert [c.pattern for c in day] == [*tracked, OVERFLOW_PATTERN]
    assert sum(c.records for c in day) == 50
    assert day[-1].records == 20


def test_values_without_patterns_stay_without(open_store: StoreOpener) -> None:
    """Windows counted without patterns (an older replica, patterns off) store none, and add
    none to a day that has some."""
    store = open_store()
    plain = window(T0, {"checkout": ()})
    store.commit([plain], None, T0)
    assert stored_patterns(store, "1d") == [()]
    with_patterns = window(T0 + WINDOW, {"checkout": counts(("a <*>", 2, "a 1"))})
    store.commit([with_patterns], None, T0)
    assert stored_patterns(store, "1d") == [counts(("a <*>", 2, "a 1"))]
    # A window without patterns after one with: the day's table is kept as it was.
    store.commit([window(T0 + 2 * WINDOW, {"checkout": ()})], None, T0)
    assert stored_patterns(store, "1d") == [counts(("a <*>", 2, "a 1"))]
    [day] = store.query(KEY, "1d", 0, 4e9, CHECKOUT)
    assert (day.windows, day.entries[0].records) == (3, 2)


# The memory store takes no late records (they stay rejected with it).
@pytest.mark.parametrize("open_store", ["sqlite", "redis"], indirect=True)
def test_late_records_merge_their_patterns_into_the_window_and_its_day(
    open_store: StoreOpener,
) -> None:
    store = open_store()
    assert isinstance(store, SqliteStore | RedisStore)
    on_time = window(T0, {"checkout": counts(("a <*>", 3, "a 7"))})
    store.commit([on_time], None, T0 + WINDOW)
    late = window(T0, {"checkout": counts(("a <*>", 1, "a 1"), ("b <*>", 2, "b 2"))})
    now = T0 + 2 * WINDOW
    assert store.merge_late(LateDelta("L1:run", late), now, WINDOW)
    if isinstance(store, RedisStore):
        # A retry whose first attempt went through: its patterns are not added again.
        assert store.merge_late(LateDelta("L1:run", late), now, WINDOW)
    expected = counts(("a <*>", 4, "a 1"), ("b <*>", 2, "b 2"))
    assert stored_patterns(store, BASE) == [expected]
    assert stored_patterns(store, "1d") == [expected]
    [revision] = store.take_revisions(now)[0]
    [tally] = revision.snapshot.tallies
    assert tally.patterns == expected


# --- SQLite: a restart keeps them, and files from before patterns ------------------------------


def open_sqlite(path: Path, read_only: bool = False) -> SqliteStore:
    return SqliteStore(path, ROLLUPS, RETENTION, WINDOW, read_only=read_only, first_key=KEY)


def test_a_restart_with_sqlite_keeps_the_saved_and_the_checkpointed_patterns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    windows = day_of_windows(4)
    before = open_sqlite(path)
    before.commit(windows[:3], [windows[3]], T0)
    before.close()
    after = open_sqlite(path)
    assert stored_patterns(after, "1d") == [union_of(windows[:3], "checkout")]
    [opened] = after.load_open()
    assert {tally.value: tally.patterns for tally in opened.tallies} == {
        tally.value: tally.patterns for tally in windows[3].tallies
    }
    # The checkpointed window closes after the restart: the day takes its patterns too.
    after.commit(after.load_open(), [], T0)
    assert stored_patterns(after, "1d") == [union_of(windows, "checkout")]
    after.close()


# store/sqlite.py's schema before patterns (commit 80bc39b): entries had no patterns column.
SCHEMA_BEFORE_PATTERNS = """
CREATE TABLE periods (
    attribute_key TEXT NOT NULL, resolution TEXT NOT NULL, start REAL NOT NULL,
    end REAL NOT NULL, windows INTEGER NOT NULL,
    PRIMARY KEY (resolution, start, attribute_key));
CREATE TABLE entries (
    attribute_key TEXT NOT NULL, resolution TEXT NOT NULL, start REAL NOT NULL,
    kind INTEGER NOT NULL, value TEXT NOT NULL, records INTEGER NOT NULL, sketch BLOB NOT NULL,
    PRIMARY KEY (resolution, start, attribute_key, kind, value));
CREATE TABLE open_windows (
    attribute_key TEXT NOT NULL, start REAL NOT NULL, end REAL NOT NULL, overflow_values BLOB,
    PRIMARY KEY (start, attribute_key));
CREATE TABLE open_entries (
    attribute_key TEXT NOT NULL, start REAL NOT NULL, kind INTEGER NOT NULL, value TEXT NOT NULL,
    records INTEGER NOT NULL, sketch BLOB NOT NULL,
    PRIMARY KEY (start, attribute_key, kind, value));
CREATE TABLE revisions (
    attribute_key TEXT NOT NULL, start REAL NOT NULL, revision INTEGER NOT NULL,
    printed_at REAL, due REAL, PRIMARY KEY (start, attribute_key));
"""


def file_before_patterns(path: Path, saved: WindowSnapshot, opened: WindowSnapshot) -> None:
    """A file as the previous version left it: a saved window and its day, and a checkpoint."""
    [tally] = saved.tallies
    [open_tally] = opened.tallies
    day = period_bounds("1d", saved.start)
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_BEFORE_PATTERNS)
        for resolution, start, end in ((BASE, saved.start, saved.end), ("1d", *day)):
            db.execute("INSERT INTO periods VALUES (?, ?, ?, ?, 1)", (KEY, resolution, start, end))
            db.execute(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                (KEY, resolution, start, *CHECKOUT, tally.records, tally.sketch),
            )
        db.execute(
            "INSERT INTO open_windows VALUES (?, ?, ?, NULL)", (KEY, opened.start, opened.end)
        )
        db.execute(
            "INSERT INTO open_entries VALUES (?, ?, ?, ?, ?, ?)",
            (KEY, opened.start, *CHECKOUT, open_tally.records, open_tally.sketch),
        )
        db.commit()


def test_a_file_from_before_patterns_is_migrated_and_its_rows_have_none(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    saved = window(T0, {"checkout": ()})
    opened = window(T0 + WINDOW, {"checkout": ()})
    file_before_patterns(path, saved, opened)

    read_only = open_sqlite(path, read_only=True)  # not migrated: read as it is
    assert stored_patterns(read_only, "1d") == [()]
    read_only.close()

    store = open_sqlite(path)
    with closing(sqlite3.connect(path)) as db:
        for table in ("entries", "open_entries"):
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            assert columns[-1] == "patterns", table
    assert stored_patterns(store, "1d") == [()]
    [restored] = store.load_open()
    assert [(t.records, t.patterns) for t in restored.tallies] == [(0, ())]
    # New windows add their patterns to the old day, whose old counts stay.
    new = window(T0 + 2 * WINDOW, {"checkout": counts(("a <*>", 2, "a 1"))})
    store.commit([new], [], T0)
    [day] = store.query(KEY, "1d", 0, 4e9, CHECKOUT)
    [entry] = day.entries
    assert (day.windows, entry.records, entry.patterns) == (2, 2, counts(("a <*>", 2, "a 1")))
    store.close()
    # Opening the migrated file again migrates nothing more.
    open_sqlite(path).close()


def test_a_file_from_before_several_keys_gets_both_columns(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE entries (resolution TEXT NOT NULL, start REAL NOT NULL, "
            "kind INTEGER NOT NULL, value TEXT NOT NULL, records INTEGER NOT NULL, "
            "sketch BLOB NOT NULL, PRIMARY KEY (resolution, start, kind, value));"
            "CREATE TABLE periods (resolution TEXT NOT NULL, start REAL NOT NULL, "
            "end REAL NOT NULL, windows INTEGER NOT NULL, PRIMARY KEY (resolution, start));"
        )
    open_sqlite(path).close()
    with closing(sqlite3.connect(path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(entries)")]
    assert columns[0] == "attribute_key" and columns[-1] == "patterns"


# --- Redis: replicas' shares merged as one node ------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def replica(
    server: RedisServer, name: str, clock: FakeClock, printed: list[WindowReport]
) -> ReplicaMerger:
    store = RedisStore(server.url, ROLLUPS, RETENTION, WINDOW, first_key=KEY)
    return ReplicaMerger(
        store, name, clock, printed.append, 2.0, 30.0, 12, structlog.get_logger("test")
    )


def closed(snapshot: WindowSnapshot) -> WindowReport:
    """The report a replica's reporter hands its merger: only its snapshot matters here."""
    aggregator = Aggregator(WINDOW, snapshot.start, keep_sketches=True)
    [report] = aggregator.close_until(snapshot.end)
    return replace(report, snapshot=snapshot)


# One node's traffic, then the same traffic split three ways, each split its own example order.
TRAFFIC = (
    [("checkout", "payment <*> accepted", f"payment {n} accepted", n) for n in (17, 4, 9, 23, 11)]
    + [("checkout", "refund <*> issued", f"refund {n} issued", n) for n in (8, 2)]
    + [("search", "query <*> took <*>ms", f"query q{n} took {n}ms", n) for n in (5, 6, 7)]
)


def tallied(
    records: Sequence[tuple[str, str, str, int]],
) -> dict[str | None, tuple[PatternCount, ...]]:
    """What one process holds after counting these records (one pattern count each)."""
    tables: dict[str | None, list[tuple[PatternCount, ...]]] = {}
    for value, pattern, example, _ in records:
        tables.setdefault(value, []).append((PatternCount(pattern, 1, example),))
    return {value: merge_counts(groups) for value, groups in tables.items()}


async def test_three_replicas_shares_merge_into_what_one_node_holds(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock(T0 + 10)
    one_node = tallied(TRAFFIC)
    shares = [TRAFFIC[0::3], TRAFFIC[1::3], TRAFFIC[2::3]]
    printed: list[WindowReport] = []
    replicas = [replica(redis_server, f"r{i}", clock, printed) for i in range(3)]
    for merger, share in zip(replicas, shares, strict=True):
        merger.window_closed(closed(window(T0, tallied(share))))
        await merger.step()  # flushed
    clock.set(T0 + WINDOW + 2.5)
    for merger in replicas:
        await merger.step()
    [report] = printed
    assert (report.scope, len(report.replicas)) == ("global", 3)
    assert report.snapshot is not None
    assert {t.value: t.patterns for t in report.snapshot.tallies} == one_node
    store = replicas[0].store
    assert isinstance(store, RedisStore)
    for resolution in (BASE, *ROLLUPS):
        assert stored_patterns(store, resolution) == [one_node["checkout"]], resolution
        assert stored_patterns(store, resolution, (KIND_VALUE, "search")) == [one_node["search"]]
    for merger in replicas:
        await merger.stop()


def test_a_share_flushed_and_collected_keeps_its_patterns_and_a_late_one_adds_its_own(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, ROLLUPS, RETENTION, WINDOW, first_key=KEY)
    share = window(T0, {"checkout": counts(("a <*>", 2, "a 5")), None: counts(("b", 1, "b"))})
    store.flush(ShareId("r1", "run"), share)
    [(_, collected)] = store.collect(KEY, T0, T0 + WINDOW)
    assert {t.value: t.patterns for t in collected.tallies} == {
        t.value: t.patterns for t in share.tallies
    }
    assert store.save_merged(replace(collected, attribute_key=KEY), [ShareId("r1", "run")], T0)
    late = window(T0, {"checkout": counts(("a <*>", 1, "a 3"))})
    assert store.add_late(ShareId("r2", "run"), late, T0 + WINDOW)
    expected = [counts(("a <*>", 3, "a 3"))]
    assert stored_patterns(store, BASE) == expected
    assert stored_patterns(store, "1d") == expected
    # A late share without patterns adds its records and leaves the tables as they were.
    assert store.add_late(ShareId("r3", "run"), window(T0, {"checkout": ()}), T0 + WINDOW)
    assert stored_patterns(store, BASE) == expected
    assert stored_patterns(store, "1d") == expected
    store.close()


def test_days_saved_before_several_keys_merge_their_patterns_with_the_new_ones(
    redis_server: RedisServer,
) -> None:
    """The legacy periods (no key prefix) and the first key's new ones of the same day are
    answered as one: their pattern tables merge too."""
    store = RedisStore(redis_server.url, ("1d",), RETENTION, WINDOW, first_key=KEY)
    store.commit([window(T0, {"checkout": counts(("a <*>", 2, "a 2"))})], None, T0)
    # The legacy names are the first key's without its prefix.
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    prefix = f"otlp-stats:k:{KEY}:"
    for name in client.keys(f"{prefix}[pi]:*"):
        client.rename(name, "otlp-stats:" + str(name)[len(prefix) :])
    client.close()
    store.commit([window(T0 + WINDOW, {"checkout": counts(("a <*>", 1, "a 1"))})], None, T0)
    assert stored_patterns(store, "1d") == [counts(("a <*>", 3, "a 1"))]
    store.close()


# --- the journal of --durability ack ------------------------------------------------------------


def test_a_journaled_batch_keeps_its_patterns_and_an_old_entry_reads_as_none() -> None:
    tally = LabelTally(3, [1, 2, 3], [], [PatternCount("a <*>", 3, "a 1")])
    decoded = decode_batch(encode_batch({"checkout": tally, None: LabelTally(1, [4])}))
    assert decoded == {"checkout": tally, None: LabelTally(1, [4])}
    old = marshal.dumps([("checkout", 2, b"", ())], 4)  # as journaled before patterns
    assert decode_batch(old) == {"checkout": LabelTally(2, [], [])}
