"""The embedded store: one SQLite file in WAL mode holding windows, rollups and a checkpoint."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from otlp_stats.counting.aggregator import TallySnapshot, WindowSnapshot
from otlp_stats.counting.sketches import DEFAULT_LG_K, union_serialized
from otlp_stats.store.base import (
    KIND_MISSING,
    KIND_OVERFLOW,
    EntryKey,
    PeriodEntry,
    StoredPeriod,
    entry_key,
    rollup_targets,
)
from otlp_stats.store.journal import JOURNAL_SCHEMA
from otlp_stats.store.periods import BASE, Retention
from otlp_stats.store.revisions import LateDelta, Revision

_SCHEMA = """
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
"""
# Base windows that late records have revised: the last revision printed (1: the first report),
# when, and when the next is due (NULL: none pending).
_REVISIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    start REAL PRIMARY KEY, revision INTEGER NOT NULL, printed_at REAL, due REAL);
"""


class _PeriodMerge:
    """What the windows of one commit add to one period: their count, and per entry the records
    and the sketches to union."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.windows = 0
        self.entries: dict[EntryKey, tuple[int, list[bytes]]] = {}

    def add(self, snapshot: WindowSnapshot) -> None:
        self.windows += 1
        for tally in snapshot.tallies:
            key = entry_key(tally)
            records, sketches = self.entries.get(key, (0, []))
            sketches.append(tally.sketch)
            self.entries[key] = (records + tally.records, sketches)


class StoreMissing(Exception):
    """A store opened read-only (to query it) does not exist: nothing was ever saved there."""


def _read_only_uri(path: Path) -> str:
    # as_uri() percent-encodes what a URI cannot hold as is ("?", "#", "%", spaces).
    return path.resolve().as_uri() + "?mode=ro"


def connect_writer(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: the writer connection is made on the loop and then used only
    # by the keeper's single writer thread; readers open their own connection per query.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives a process kill (the WAL is written before the
    # commit returns); only an OS crash or power loss can lose the last commits.
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


class SqliteStore:
    def __init__(
        self,
        path: Path,
        rollups: Sequence[str],
        retention: Retention,
        window: float,
        lg_k: int = DEFAULT_LG_K,
        read_only: bool = False,
    ) -> None:
        """Open the file, creating it and its schema; `read_only` (to query) creates nothing
        and raises StoreMissing if there is no store there."""
        self._path = path
        self._rollups = tuple(rollups)
        self._retention = retention
        self._window = window
        self._lg_k = lg_k
        if read_only:
            self._db = _connect_read_only(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect_writer(path)
            self._db.executescript(_SCHEMA)
            self._db.executescript(_REVISIONS_SCHEMA)
            self._db.executescript(JOURNAL_SCHEMA)
        self._bytes = self._measure()

    @property
    def durable(self) -> bool:
        return True

    def load_open(self) -> list[WindowSnapshot]:
        """The checkpointed windows not already saved as closed (those would count twice)."""
        windows = self._db.execute(
            "SELECT start, end, overflow_values FROM open_windows WHERE start NOT IN "
            "(SELECT start FROM periods WHERE resolution = ?) ORDER BY start",
            (BASE,),
        ).fetchall()
        snapshots = []
        for start, end, overflow_values in windows:
            rows = self._db.execute(
                "SELECT kind, value, records, sketch FROM open_entries WHERE start = ?", (start,)
            ).fetchall()
            tallies = tuple(
                _tally(kind, value, records, sketch) for kind, value, records, sketch in rows
            )
            snapshots.append(WindowSnapshot(start, end, tallies, overflow_values))
        return snapshots

    def commit(
        self,
        closed: Sequence[WindowSnapshot],
        open_windows: Sequence[WindowSnapshot] | None,
        now: float,
        journal_seq: int | None = None,
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._save_closed(closed)
            if open_windows is not None:
                self._checkpoint(open_windows)
                if journal_seq is not None:
                    self._trim_journal(journal_seq)
            self._expire(now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._bytes = self._measure()

    def _save_closed(self, closed: Sequence[WindowSnapshot]) -> None:
        """Save the windows not saved yet and merge them into their rollups, each period read
        and written once per commit however many of its windows the commit holds: a replay
        closes thousands of windows of one day in a row, and unioning the day's sketch with
        each of them in turn was most of its time."""
        db = self._db
        periods: dict[tuple[str, float], _PeriodMerge] = {}
        saved: set[float] = set()
        for snapshot in closed:
            if snapshot.start in saved or self._is_saved(snapshot.start):
                continue  # a window saved already is never counted twice
            saved.add(snapshot.start)
            for resolution, start, end in rollup_targets(snapshot, self._rollups):
                merge = periods.get((resolution, start))
                if merge is None:
                    merge = periods[resolution, start] = _PeriodMerge(end)
                merge.add(snapshot)
            db.execute("DELETE FROM open_windows WHERE start = ?", (snapshot.start,))
            db.execute("DELETE FROM open_entries WHERE start = ?", (snapshot.start,))
            db.execute("DELETE FROM journal WHERE start = ?", (snapshot.start,))
        for (resolution, start), merge in periods.items():
            db.execute(
                "INSERT INTO periods VALUES (?, ?, ?, ?) ON CONFLICT (resolution, start) "
                "DO UPDATE SET windows = windows + excluded.windows",
                (resolution, start, merge.end, merge.windows),
            )
            self._merge_tallies(resolution, start, merge.entries)

    def _is_saved(self, start: float) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM periods WHERE resolution = ? AND start = ?", (BASE, start)
            ).fetchone()
            is not None
        )

    def _merge_entries(self, resolution: str, start: float, snapshot: WindowSnapshot) -> None:
        """Union the snapshot's values into one stored period's entries."""
        merge = _PeriodMerge(snapshot.end)
        merge.add(snapshot)
        self._merge_tallies(resolution, start, merge.entries)

    def _merge_tallies(
        self, resolution: str, start: float, entries: dict[EntryKey, tuple[int, list[bytes]]]
    ) -> None:
        """Records add up; messages are unioned (with what is stored), so one seen in two
        windows counts once."""
        db = self._db
        for (kind, value), (records, sketches) in entries.items():
            row = db.execute(
                "SELECT records, sketch FROM entries "
                "WHERE resolution = ? AND start = ? AND kind = ? AND value = ?",
                (resolution, start, kind, value),
            ).fetchone()
            if row is not None:
                records += row[0]
                sketches = [row[1], *sketches]
            sketch = sketches[0] if len(sketches) == 1 else union_serialized(sketches, self._lg_k)
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                (resolution, start, kind, value, records, sketch),
            )

    # Late records and revisions (store/revisions.py): the RevisionStore side.

    def merge_late(self, delta: LateDelta, now: float, spacing: float) -> bool:
        """Late records into their stored window and the rollup periods still kept, and the
        window's revision scheduled, in one transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._merge_late(delta.snapshot, now, spacing)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._bytes = self._measure()
        return True

    def _merge_late(self, snapshot: WindowSnapshot, now: float, spacing: float) -> None:
        db = self._db
        kept = {
            resolution: self._retention.oldest_kept(resolution, now, self._window)
            for resolution in (BASE, *self._rollups)
        }
        stored = db.execute(
            "SELECT 1 FROM periods WHERE resolution = ? AND start = ?", (BASE, snapshot.start)
        ).fetchone()
        # A window within retention that was never saved (older than the first run of this
        # store, or lost to failing writes) becomes one now; its first report is the next.
        new_window = stored is None and snapshot.start >= kept[BASE]
        for resolution, start, end in rollup_targets(snapshot, self._rollups):
            if start < kept[resolution] or (
                resolution == BASE and stored is None and not new_window
            ):
                continue  # retention has deleted it: a late record does not bring it back
            db.execute(
                "INSERT INTO periods VALUES (?, ?, ?, ?) ON CONFLICT (resolution, start) "
                "DO UPDATE SET windows = windows + excluded.windows",
                (resolution, start, end, int(new_window)),
            )
            self._merge_entries(resolution, start, snapshot)
        if stored is not None or new_window:
            self._schedule_revision(snapshot.start, now, spacing, first=new_window)

    def _schedule_revision(self, start: float, now: float, spacing: float, first: bool) -> None:
        """Due now, or `spacing` after the last revision: a burst of late records for one
        window is printed as one revision per window length, carrying all of it."""
        db = self._db
        row = db.execute(
            "SELECT printed_at, due FROM revisions WHERE start = ?", (start,)
        ).fetchone()
        if row is None:
            # Revision 1 is the window's first report, printed when it closed (or, for a
            # window the late records make, the revision this schedules).
            db.execute(
                "INSERT INTO revisions VALUES (?, ?, NULL, ?)", (start, 0 if first else 1, now)
            )
        elif row[1] is None:
            due = now if row[0] is None else max(now, row[0] + spacing)
            db.execute("UPDATE revisions SET due = ? WHERE start = ?", (due, start))

    def take_revisions(self, now: float) -> tuple[list[Revision], float | None]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            revisions = self._take_revisions(now)
            next_due = db.execute("SELECT MIN(due) FROM revisions").fetchone()[0]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return revisions, next_due

    def _take_revisions(self, now: float) -> list[Revision]:
        db = self._db
        oldest = self._retention.oldest_kept(BASE, now, self._window)
        db.execute("DELETE FROM revisions WHERE start < ?", (oldest,))
        revisions = []
        due = db.execute(
            "SELECT start, revision FROM revisions WHERE due <= ? ORDER BY start", (now,)
        ).fetchall()
        for start, revision in due:
            period = db.execute(
                "SELECT end FROM periods WHERE resolution = ? AND start = ?", (BASE, start)
            ).fetchone()
            db.execute(
                "UPDATE revisions SET revision = ?, printed_at = ?, due = NULL WHERE start = ?",
                (revision + 1, now, start),
            )
            if period is None:
                continue
            rows = db.execute(
                "SELECT kind, value, records, sketch FROM entries "
                "WHERE resolution = ? AND start = ?",
                (BASE, start),
            ).fetchall()
            tallies = tuple(_tally(*row) for row in rows)
            revisions.append(Revision(WindowSnapshot(start, period[0], tallies), revision + 1))
        return revisions

    def _checkpoint(self, open_windows: Sequence[WindowSnapshot]) -> None:
        db = self._db
        db.execute("DELETE FROM open_windows")
        db.execute("DELETE FROM open_entries")
        for snapshot in open_windows:
            db.execute(
                "INSERT INTO open_windows VALUES (?, ?, ?)",
                (snapshot.start, snapshot.end, snapshot.overflow_values),
            )
            db.executemany(
                "INSERT INTO open_entries VALUES (?, ?, ?, ?, ?)",
                [
                    (snapshot.start, *entry_key(tally), tally.records, tally.sketch)
                    for tally in snapshot.tallies
                ],
            )

    def _trim_journal(self, covered: int) -> None:
        """The checkpoint holds every request counted up to `covered`: their journal entries
        go, and a restart replays only those after it (store/journal.py)."""
        db = self._db
        db.execute("DELETE FROM journal WHERE seq <= ?", (covered,))
        db.execute("INSERT OR REPLACE INTO journal_mark VALUES (0, ?)", (covered,))

    def _expire(self, now: float) -> None:
        for resolution in (BASE, *self._rollups):
            oldest = self._retention.oldest_kept(resolution, now, self._window)
            for table in ("periods", "entries"):
                self._db.execute(
                    f"DELETE FROM {table} WHERE resolution = ? AND start < ?",
                    (resolution, oldest),
                )

    def query(
        self, resolution: str, first: float, last: float, key: EntryKey | None
    ) -> list[StoredPeriod]:
        # A connection per query: queries run in any thread, and WAL lets them read while the
        # writer writes.
        reader = sqlite3.connect(_read_only_uri(self._path), uri=True, timeout=30)
        try:
            periods = reader.execute(
                "SELECT start, end, windows FROM periods "
                "WHERE resolution = ? AND start BETWEEN ? AND ? ORDER BY start",
                (resolution, first, last),
            ).fetchall()
            answer = []
            for start, end, windows in periods:
                sql = (
                    "SELECT kind, value, records, sketch FROM entries "
                    "WHERE resolution = ? AND start = ?"
                )
                args: tuple[object, ...] = (resolution, start)
                if key is not None:
                    sql += " AND kind = ? AND value = ?"
                    args += key
                entries = tuple(
                    PeriodEntry((kind, value), records, sketch)
                    for kind, value, records, sketch in reader.execute(sql, args)
                )
                answer.append(StoredPeriod(resolution, start, end, windows, entries))
            return answer
        finally:
            reader.close()

    def stored_bytes(self) -> int:
        """The size as of the last commit: measured by the writer, so a scrape opens nothing."""
        return self._bytes

    def _measure(self) -> int:
        db = self._db
        # Pages in use: retention frees pages for reuse, it does not shrink the file.
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return (int(pages) - int(free)) * int(size)

    def close(self) -> None:
        self._db.close()


def _connect_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreMissing(f"no store at {path}: the file does not exist")
    try:
        connection = sqlite3.connect(_read_only_uri(path), uri=True, timeout=30)
        connection.execute("SELECT 1 FROM periods LIMIT 1")
    except sqlite3.Error as error:
        raise StoreMissing(f"no store at {path}: {error}") from error
    return connection


def _tally(kind: int, value: str, records: int, sketch: bytes) -> TallySnapshot:
    return TallySnapshot(
        None if kind in (KIND_MISSING, KIND_OVERFLOW) else value,
        records,
        sketch,
        overflow=kind == KIND_OVERFLOW,
    )
