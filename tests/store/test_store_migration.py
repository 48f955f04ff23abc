"""Stores written before several attribute keys were counted: an SQLite file of the old schema
and a Redis with the old key names open and keep working, their counts the first key's."""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import redis

from otlp_stats.counting.aggregator import Aggregator, LabelTally, WindowSnapshot
from otlp_stats.counting.sketches import estimate_serialized
from otlp_stats.store.base import KIND_MISSING, KIND_VALUE, StateStore
from otlp_stats.store.periods import BASE, DEFAULT_RETENTION, period_bounds
from otlp_stats.store.redis import RedisStore
from otlp_stats.store.sqlite import SqliteStore
from tests.support.redistools import RedisServer

REPO = Path(__file__).resolve().parents[2]
FIRST = "svc"
OTHER = "k8s.namespace.name"
WINDOW = 10.0
ROLLUPS = ("1d",)

# The schema of store/sqlite.py up to commit 031a92e, as files in the wild hold it.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS periods (
    resolution TEXT NOT NULL, start REAL NOT NULL, end REAL NOT NULL, windows INTEGER NOT NULL,
    PRIMARY KEY (resolution, start));
CREATE TABLE IF NOT EXISTS entries (
    resolution TEXT NOT NULL, start REAL NOT NULL, kind INTEGER NOT NULL, value TEXT NOT NULL,
    records INTEGER NOT NULL, sketch BLOB NOT NULL,
    PRIMARY KEY (resolution, start, kind, value));
CREATE TABLE IF NOT EXISTS open_windows (
    start REAL PRIMARY KEY, end REAL NOT NULL, overflow_values BLOB);
CREATE TABLE IF NOT EXISTS open_entries (
    start REAL NOT NULL, kind INTEGER NOT NULL, value TEXT NOT NULL,
    records INTEGER NOT NULL, sketch BLOB NOT NULL, PRIMARY KEY (start, kind, value));
CREATE TABLE IF NOT EXISTS revisions (
    start REAL PRIMARY KEY, revision INTEGER NOT NULL, printed_at REAL, due REAL);
"""


def recent_window() -> float:
    """A closed window a few minutes ago: within every retention, so the CLI answers it."""
    return (time.time() - 300) // WINDOW * WINDOW


def snapshot(start: float, batch: dict[str | None, LabelTally], key: str = "") -> WindowSnapshot:
    aggregator = Aggregator(WINDOW, start, keep_sketches=True)
    aggregator.add(start + 1, batch)
    [report] = aggregator.close_until(start + WINDOW)
    assert report.snapshot is not None
    return WindowSnapshot(
        report.snapshot.start,
        report.snapshot.end,
        report.snapshot.tallies,
        report.snapshot.overflow_values,
        key,
    )


def old_file(path: Path, start: float) -> None:
    """A store as the previous version left it: a saved window (and its day), the open window
    after it checkpointed, and a revision printed for the saved one."""
    saved = snapshot(start, {"checkout": LabelTally.of_hashes([1, 2, 3])})
    opened = snapshot(start + WINDOW, {"search": LabelTally.of_hashes([4, 5])})
    day = period_bounds("1d", start)
    with closing(sqlite3.connect(path)) as db:
        db.executescript(OLD_SCHEMA)
        [tally] = saved.tallies
        for resolution, period_start, end in ((BASE, start, start + WINDOW), ("1d", *day)):
            db.execute("INSERT INTO periods VALUES (?, ?, ?, 1)", (resolution, period_start, end))
            db.execute(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                (resolution, period_start, KIND_VALUE, "checkout", tally.records, tally.sketch),
            )
        [open_tally] = opened.tallies
        db.execute("INSERT INTO open_windows VALUES (?, ?, NULL)", (opened.start, opened.end))
        db.execute(
            "INSERT INTO open_entries VALUES (?, ?, ?, ?, ?)",
            (opened.start, KIND_VALUE, "search", open_tally.records, open_tally.sketch),
        )
        db.execute("INSERT INTO revisions VALUES (?, 2, ?, NULL)", (start, start + 60))
        db.commit()


def day_of(store: StateStore, key: str, start: float) -> list[tuple[int, str, int, int, int]]:
    """(windows, value, kind, records, distinct) of the day holding `start`."""
    return sorted(
        (period.windows, entry.key[1], entry.key[0], entry.records, estimate(entry.sketch))
        for period in store.query(key, "1d", start - 86_400, start, None)
        for entry in period.entries
    )


def estimate(sketch: bytes) -> int:
    return estimate_serialized(sketch).value


def open_sqlite(path: Path, read_only: bool = False) -> SqliteStore:
    return SqliteStore(
        path, ROLLUPS, DEFAULT_RETENTION, WINDOW, read_only=read_only, first_key=FIRST
    )


def test_an_old_file_read_only_answers_as_the_first_key_and_is_left_as_it_is(
    tmp_path: Path,
) -> None:
    path, start = tmp_path / "state.db", recent_window()
    old_file(path, start)
    store = open_sqlite(path, read_only=True)
    assert day_of(store, FIRST, start) == [(1, "checkout", KIND_VALUE, 3, 3)]
    assert day_of(store, OTHER, start) == []
    assert store.attribute_keys() == [FIRST]
    store.close()
    with closing(sqlite3.connect(path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(periods)")]
    assert "attribute_key" not in columns


def test_an_old_file_opened_to_write_is_migrated_its_rows_the_first_keys(tmp_path: Path) -> None:
    path, start = tmp_path / "state.db", recent_window()
    old_file(path, start)
    store = open_sqlite(path)
    with closing(sqlite3.connect(path)) as db:
        for table in ("periods", "entries", "open_windows", "open_entries", "revisions"):
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            assert columns[0] == "attribute_key", table
            keys = {row[0] for row in db.execute(f"SELECT attribute_key FROM {table}")}
            assert keys == {FIRST}, table
        leftovers = db.execute("SELECT name FROM sqlite_master WHERE name LIKE '%before%'")
        assert leftovers.fetchall() == []
    assert day_of(store, FIRST, start) == [(1, "checkout", KIND_VALUE, 3, 3)]
    # The checkpoint resumes as the first key's open window.
    [restored] = store.load_open()
    assert (restored.attribute_key, restored.start, restored.records) == (FIRST, start + WINDOW, 2)
    # The saved window given again for the first key is skipped; another key's copy of it is
    # saved apart, and the checkpointed window closes into the first key's day.
    again = snapshot(start, {"checkout": LabelTally.of_hashes([1, 2, 3])}, FIRST)
    other = snapshot(
        start, {"shop": LabelTally.of_hashes([7]), None: LabelTally.of_hashes([8])}, OTHER
    )
    store.commit([again, restored, other], None, start + 30)
    assert day_of(store, FIRST, start) == [
        (2, "checkout", KIND_VALUE, 3, 3),
        (2, "search", KIND_VALUE, 2, 2),
    ]
    assert day_of(store, OTHER, start) == [
        (1, "", KIND_MISSING, 1, 1),
        (1, "shop", KIND_VALUE, 1, 1),
    ]
    assert store.load_open() == []
    # The revision number of the old file's window carries on, for the first key.
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT attribute_key, revision FROM revisions").fetchall() == [
            (FIRST, 2)
        ]
    store.close()
    # Opening it again migrates nothing twice.
    reopened = open_sqlite(path)
    assert reopened.attribute_keys() == [OTHER, FIRST]
    assert day_of(reopened, FIRST, start)[0][:4] == (2, "checkout", KIND_VALUE, 3)
    reopened.close()


def test_the_query_cli_reads_an_old_file_as_the_first_key(tmp_path: Path) -> None:
    path, start = tmp_path / "state.db", recent_window()
    old_file(path, start)
    day = time.strftime("%Y-%m-%d", time.gmtime(start))
    command = [sys.executable, "-m", "otlp_stats", "query", "--store", f"sqlite://{path}"]
    command += ["--attribute-key", FIRST, "--from", day]
    answer = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "checkout" in answer
    refused = subprocess.run(
        [*command, "--key", OTHER], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"otlp-stats query: key='{OTHER}' is not an attribute key counted here; "
        f"the keys are {FIRST}"
    )
    with closing(sqlite3.connect(path)) as db:  # read, never migrated, by a query
        columns = [row[1] for row in db.execute("PRAGMA table_info(periods)")]
    assert "attribute_key" not in columns


def _pack(records: int, sketch: bytes) -> bytes:
    """A period's hash field as the previous version wrote it: 8-byte records, then sketch."""
    return struct.pack(">q", records) + sketch


def test_old_redis_periods_are_the_first_keys_and_union_with_new_ones(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    start = recent_window()
    day_start, day_end = period_bounds("1d", start)
    old = snapshot(start, {"checkout": LabelTally.of_hashes([1, 2, 3])})
    [tally] = old.tallies
    client = redis.Redis.from_url(server.url)
    try:
        # The day and its window under the names the previous version used.
        for resolution, period_start, end in (
            (BASE, start, start + WINDOW),
            ("1d", day_start, day_end),
        ):
            client.hset(
                f"otlp-stats:p:{resolution}:{period_start!r}",
                mapping={
                    b"~end": repr(end).encode(),
                    b"~windows": b"1",
                    b"0:checkout": _pack(tally.records, tally.sketch),
                },
            )
            client.zadd(f"otlp-stats:i:{resolution}", {repr(period_start): period_start})
        client.zadd("otlp-stats:revisions", {repr(start): start})
        store = RedisStore(server.url, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=FIRST)
        assert store.attribute_keys() == [FIRST]
        assert day_of(store, FIRST, start) == [(1, "checkout", KIND_VALUE, 3, 3)]
        assert day_of(store, OTHER, start) == []
        # A later window of the day, saved under the first key's new names: answered together.
        batch: dict[str | None, LabelTally] = {"checkout": LabelTally.of_hashes([3, 4])}
        later = [snapshot(start + WINDOW, batch, key) for key in (FIRST, OTHER)]
        store.commit(later, None, start + 2 * WINDOW)
        assert day_of(store, FIRST, start) == [(2, "checkout", KIND_VALUE, 5, 4)]
        assert day_of(store, OTHER, start) == [(1, "checkout", KIND_VALUE, 2, 2)]
        windows = store.query(FIRST, BASE, start, start + WINDOW, None)
        assert [(w.start, w.windows) for w in windows] == [(start, 1), (start + WINDOW, 1)]
        assert store.attribute_keys() == [OTHER, FIRST]
        # A revision the old version scheduled names no key: dropped, not fatal.
        assert store.take_revisions(start + 3600) == ([], None)
        # Retention drops old periods as it drops new ones.
        store.commit([], None, start + 2 * 3600)
        assert not client.exists(f"otlp-stats:p:{BASE}:{start!r}")
        assert client.exists(f"otlp-stats:p:1d:{day_start!r}")
        store.close()
    finally:
        client.close()
        server.stop()
