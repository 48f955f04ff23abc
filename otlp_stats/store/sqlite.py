"""The embedded store: one SQLite file in WAL mode holding windows, rollups and a checkpoint."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from otlp_stats.counting.aggregator import TallySnapshot, WindowSnapshot
from otlp_stats.counting.sketches import DEFAULT_LG_K, union_serialized
from otlp_stats.patterns.tally import (
    DEFAULT_MAX_PATTERNS,
    PatternCount,
    decode_counts,
    encode_counts,
)
from otlp_stats.store.base import (
    KIND_MISSING,
    KIND_OVERFLOW,
    EntryKey,
    PeriodEntry,
    StoredPeriod,
    attribute_key_of,
    entry_key,
    merge_pattern_tables,
    rollup_targets,
)
from otlp_stats.store.journal import JOURNAL_SCHEMA
from otlp_stats.store.periods import BASE, Retention
from otlp_stats.store.revisions import LateDelta, Revision

# Every row names its attribute key: the windows, periods, checkpoint and revisions of two keys
# never meet. The key comes after the start in each primary key, so retention's deletes (by
# resolution and start) still range over the index rather than scan the table (first, it
# made a replay's commits 40% dearer). Files written before several keys were counted have
# the same tables without the column; opening one for writing migrates it (_migrate), its
# rows becoming the first key's. Each value's entry keeps its pattern table (patterns/tally.py
# encode_counts; NULL: none, as in the rows of files from before patterns, which _migrate gives
# the column).
_TABLES = {
    "periods": """CREATE TABLE IF NOT EXISTS periods (
    attribute_key TEXT NOT NULL, resolution TEXT NOT NULL, start REAL NOT NULL,
    end REAL NOT NULL, windows INTEGER NOT NULL,
    PRIMARY KEY (resolution, start, attribute_key))""",
    "entries": """CREATE TABLE IF NOT EXISTS entries (
    attribute_key TEXT NOT NULL, resolution TEXT NOT NULL, start REAL NOT NULL,
    kind INTEGER NOT NULL, value TEXT NOT NULL, records INTEGER NOT NULL, sketch BLOB NOT NULL,
    patterns BLOB, PRIMARY KEY (resolution, start, attribute_key, kind, value))""",
    "open_windows": """CREATE TABLE IF NOT EXISTS open_windows (
    attribute_key TEXT NOT NULL, start REAL NOT NULL, end REAL NOT NULL, overflow_values BLOB,
    PRIMARY KEY (start, attribute_key))""",
    "open_entries": """CREATE TABLE IF NOT EXISTS open_entries (
    attribute_key TEXT NOT NULL, start REAL NOT NULL, kind INTEGER NOT NULL, value TEXT NOT NULL,
    records INTEGER NOT NULL, sketch BLOB NOT NULL, patterns BLOB,
    PRIMARY KEY (start, attribute_key, kind, value))""",
    # Base windows that late records have revised: the last revision printed (1: the first
    # report), when, and when the next is due (NULL: none pending).
    "revisions": """CREATE TABLE IF NOT EXISTS revisions (
    attribute_key TEXT NOT NULL, start REAL NOT NULL, revision INTEGER NOT NULL,
    printed_at REAL, due REAL, PRIMARY KEY (start, attribute_key))""",
}


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


# The tables whose rows are a value's entry, and so hold its patterns.
_WITH_PATTERNS = ("entries", "open_entries")
# A checkpoint's rows of a window, deleted once the window is saved closed.
_OPEN_TABLES = ("open_windows", "open_entries")
# Journal entries a checkpoint holds, deleted this many requests' at a time after it.
DEAD_ENTRIES_AT_ONCE = 256
_DELETE_DEAD = (
    "DELETE FROM journal WHERE seq <= (SELECT covered FROM journal_mark WHERE id = 0) "
    "AND seq < (SELECT min(seq) FROM journal) + ?"
)


def _migrate(db: sqlite3.Connection, first_key: str) -> None:
    """Tables of a file from before several keys get the attribute key column, their rows the
    first configured key; entries from before patterns get the patterns column, their rows
    none (NULL). In one transaction: a failure leaves the file as it was."""
    db.execute("BEGIN IMMEDIATE")
    try:
        # Read under the write lock: a second writer opening the same old file waits here and
        # then finds nothing left to migrate, rather than copying migrated tables again.
        _add_attribute_key(db, first_key)
        for name in _WITH_PATTERNS:
            columns = _columns(db, name)
            if columns and "patterns" not in columns:
                # A nullable column at the end: ALTER TABLE adds it without copying the rows.
                db.execute(f"ALTER TABLE {name} ADD COLUMN patterns BLOB")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _add_attribute_key(db: sqlite3.Connection, first_key: str) -> None:
    old = [n for n in _TABLES if (cols := _columns(db, n)) and "attribute_key" not in cols]
    for name in old:
        # The primary key changes, which ALTER TABLE cannot do: copy into a new table (whose
        # patterns column, when the old one has none, stays NULL).
        columns = ", ".join(_columns(db, name))
        db.execute(f"ALTER TABLE {name} RENAME TO {name}_before_keys")
        db.execute(_TABLES[name])
        db.execute(
            f"INSERT INTO {name} (attribute_key, {columns}) "
            f"SELECT ?, {columns} FROM {name}_before_keys",
            (first_key,),
        )
        db.execute(f"DROP TABLE {name}_before_keys")


# (attribute key, resolution, start): one stored period.
_PeriodId = tuple[str, str, float]


class _EntryMerge:
    """What the windows of one commit add to one value's entry: records, the sketches to union
    and the pattern tables to merge."""

    __slots__ = ("patterns", "records", "sketches")

    def __init__(self) -> None:
        self.records = 0
        self.sketches: list[bytes] = []
        self.patterns: list[tuple[PatternCount, ...]] = []

    def add(self, tally: TallySnapshot) -> None:
        self.records += tally.records
        self.sketches.append(tally.sketch)
        if tally.patterns:
            self.patterns.append(tally.patterns)


class _PeriodMerge:
    """What the windows of one commit add to one period: their count, and each value's entry."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.windows = 0
        self.entries: dict[EntryKey, _EntryMerge] = {}

    def add(self, snapshot: WindowSnapshot) -> None:
        self.windows += 1
        for tally in snapshot.tallies:
            key = entry_key(tally)
            merge = self.entries.get(key)
            if merge is None:
                merge = self.entries[key] = _EntryMerge()
            merge.add(tally)


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
        *,
        first_key: str,
        max_patterns: int = DEFAULT_MAX_PATTERNS,
    ) -> None:
        """Open the file, creating it and its schema (migrating a file from before several
        keys: its rows are `first_key`'s; from before patterns: its rows have none);
        `read_only` (to query) creates and migrates nothing, answers an old file's rows as
        `first_key`'s, and raises StoreMissing if there is no store there. `max_patterns`:
        the bound of each value's merged pattern table."""
        self._path = path
        self._max_patterns = max_patterns
        self._first_key = first_key
        self._rollups = tuple(rollups)
        self._retention = retention
        self._window = window
        self._lg_k = lg_k
        if read_only:
            self._db = _connect_read_only(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect_writer(path)
            _migrate(self._db, first_key)
            for table in _TABLES.values():
                self._db.execute(table)
            self._db.executescript(JOURNAL_SCHEMA)
        # Only a file opened read-only can still be of the old schema (one key, no column).
        self._one_key = "attribute_key" not in _columns(self._db, "periods")
        # And only such a file can have entries without patterns: they are read as none.
        self._patterns = "patterns" if "patterns" in _columns(self._db, "entries") else "NULL"
        self._bytes = self._measure()

    @property
    def durable(self) -> bool:
        return True

    def load_open(self) -> list[WindowSnapshot]:
        """The checkpointed windows not already saved as closed (those would count twice)."""
        windows = self._db.execute(
            "SELECT attribute_key, start, end, overflow_values FROM open_windows AS o "
            "WHERE NOT EXISTS (SELECT 1 FROM periods AS p WHERE p.attribute_key = "
            "o.attribute_key AND p.resolution = ? AND p.start = o.start) "
            "ORDER BY start, attribute_key",
            (BASE,),
        ).fetchall()
        snapshots = []
        for attribute_key, start, end, overflow_values in windows:
            rows = self._db.execute(
                "SELECT kind, value, records, sketch, patterns FROM open_entries "
                "WHERE attribute_key = ? AND start = ?",
                (attribute_key, start),
            ).fetchall()
            tallies = tuple(_tally(*row) for row in rows)
            snapshots.append(WindowSnapshot(start, end, tallies, overflow_values, attribute_key))
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
            # With a checkpoint that marks the journal, the closed windows' entries are at or
            # below the mark (counted before the snapshot): dead, and deleted with the others
            # after this transaction. Deleted per window they cost a scan of the whole journal,
            # which has no index by window.
            marks = open_windows is not None and journal_seq is not None
            self._save_closed(closed, with_journal=not marks)
            if open_windows is not None:
                self._checkpoint(open_windows)
                if journal_seq is not None:
                    self._mark_journal(journal_seq)
            self._expire(now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if marks:
            self._delete_dead_journal()
        self._bytes = self._measure()

    def _key(self, snapshot: WindowSnapshot) -> str:
        return attribute_key_of(snapshot, self._first_key)

    def _save_closed(self, closed: Sequence[WindowSnapshot], with_journal: bool = True) -> None:
        """Save the windows not saved yet and merge them into their rollups, each period read
        and written once per commit however many of its windows the commit holds: a replay
        closes thousands of windows of one day in a row, and unioning the day's sketch with
        each of them in turn was most of its time."""
        db = self._db
        periods: dict[tuple[str, str, float], _PeriodMerge] = {}
        saved: set[tuple[str, float]] = set()
        for snapshot in closed:
            attribute_key = self._key(snapshot)
            window = (attribute_key, snapshot.start)
            if window in saved or self._is_saved(*window):
                continue  # a window saved already (for this key) is never counted twice
            saved.add(window)
            for resolution, start, end in rollup_targets(snapshot, self._rollups):
                merge = periods.get((attribute_key, resolution, start))
                if merge is None:
                    merge = periods[attribute_key, resolution, start] = _PeriodMerge(end)
                merge.add(snapshot)
            for table in (*_OPEN_TABLES, "journal") if with_journal else _OPEN_TABLES:
                db.execute(f"DELETE FROM {table} WHERE attribute_key = ? AND start = ?", window)
        for (attribute_key, resolution, start), merge in periods.items():
            db.execute(
                "INSERT INTO periods VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (resolution, start, attribute_key) "
                "DO UPDATE SET windows = windows + excluded.windows",
                (attribute_key, resolution, start, merge.end, merge.windows),
            )
            self._merge_tallies((attribute_key, resolution, start), merge.entries)

    def _is_saved(self, attribute_key: str, start: float) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM periods WHERE attribute_key = ? AND resolution = ? AND start = ?",
                (attribute_key, BASE, start),
            ).fetchone()
            is not None
        )

    def _merge_entries(self, period: _PeriodId, snapshot: WindowSnapshot) -> None:
        """Union the snapshot's values into one stored period's entries."""
        merge = _PeriodMerge(snapshot.end)
        merge.add(snapshot)
        self._merge_tallies(period, merge.entries)

    def _merge_tallies(self, period: _PeriodId, entries: dict[EntryKey, _EntryMerge]) -> None:
        """Records add up; messages are unioned (with what is stored), so one seen in two
        windows counts once; pattern tables merge, bounded by --max-patterns."""
        db = self._db
        for (kind, value), merge in entries.items():
            records, sketches = merge.records, merge.sketches
            row = db.execute(
                "SELECT records, sketch, patterns FROM entries WHERE attribute_key = ? "
                "AND resolution = ? AND start = ? AND kind = ? AND value = ?",
                (*period, kind, value),
            ).fetchone()
            stored_patterns: bytes | None = None
            if row is not None:
                records += row[0]
                sketches = [row[1], *sketches]
                stored_patterns = row[2]
            sketch = sketches[0] if len(sketches) == 1 else union_serialized(sketches, self._lg_k)
            db.execute(
                f"INSERT OR REPLACE INTO entries ({_ENTRY_COLUMNS}) VALUES ({_ENTRY_VALUES})",
                (*period, kind, value, records, sketch, self._merged(stored_patterns, merge)),
            )

    def _merged(self, stored: bytes | None, merge: _EntryMerge) -> bytes | None:
        """The stored table with the new ones merged in; left as stored (not decoded and
        encoded again) when the windows bring none."""
        if not merge.patterns:
            return stored
        tables = [decode_counts(stored), *merge.patterns]
        return _blob(merge_pattern_tables(tables, self._max_patterns))

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
        attribute_key = self._key(snapshot)
        kept = {
            resolution: self._retention.oldest_kept(resolution, now, self._window)
            for resolution in (BASE, *self._rollups)
        }
        stored = self._is_saved(attribute_key, snapshot.start)
        # A window within retention that was never saved (older than the first run of this
        # store, or lost to failing writes) becomes one now; its first report is the next.
        new_window = not stored and snapshot.start >= kept[BASE]
        for resolution, start, end in rollup_targets(snapshot, self._rollups):
            if start < kept[resolution] or (resolution == BASE and not stored and not new_window):
                continue  # retention has deleted it: a late record does not bring it back
            db.execute(
                "INSERT INTO periods VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (resolution, start, attribute_key) "
                "DO UPDATE SET windows = windows + excluded.windows",
                (attribute_key, resolution, start, end, int(new_window)),
            )
            self._merge_entries((attribute_key, resolution, start), snapshot)
        if stored or new_window:
            self._schedule_revision((attribute_key, snapshot.start), now, spacing, first=new_window)

    def _schedule_revision(
        self, window: tuple[str, float], now: float, spacing: float, first: bool
    ) -> None:
        """Due now, or `spacing` after the last revision: a burst of late records for one
        window is printed as one revision per window length, carrying all of it."""
        db = self._db
        row = db.execute(
            "SELECT printed_at, due FROM revisions WHERE attribute_key = ? AND start = ?", window
        ).fetchone()
        if row is None:
            # Revision 1 is the window's first report, printed when it closed (or, for a
            # window the late records make, the revision this schedules).
            db.execute(
                "INSERT INTO revisions VALUES (?, ?, ?, NULL, ?)",
                (*window, 0 if first else 1, now),
            )
        elif row[1] is None:
            due = now if row[0] is None else max(now, row[0] + spacing)
            db.execute(
                "UPDATE revisions SET due = ? WHERE attribute_key = ? AND start = ?",
                (due, *window),
            )

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
            "SELECT attribute_key, start, revision FROM revisions WHERE due <= ? "
            "ORDER BY start, attribute_key",
            (now,),
        ).fetchall()
        for attribute_key, start, revision in due:
            window = (attribute_key, BASE, start)
            period = db.execute(
                "SELECT end FROM periods WHERE attribute_key = ? AND resolution = ? AND start = ?",
                window,
            ).fetchone()
            db.execute(
                "UPDATE revisions SET revision = ?, printed_at = ?, due = NULL "
                "WHERE attribute_key = ? AND start = ?",
                (revision + 1, now, attribute_key, start),
            )
            if period is None:
                continue
            rows = db.execute(
                "SELECT kind, value, records, sketch, patterns FROM entries "
                "WHERE attribute_key = ? AND resolution = ? AND start = ?",
                window,
            ).fetchall()
            tallies = tuple(_tally(*row) for row in rows)
            snapshot = WindowSnapshot(start, period[0], tallies, attribute_key=attribute_key)
            revisions.append(Revision(snapshot, revision + 1))
        return revisions

    def _checkpoint(self, open_windows: Sequence[WindowSnapshot]) -> None:
        """The open windows of every key replace the checkpoint whole."""
        db = self._db
        db.execute("DELETE FROM open_windows")
        db.execute("DELETE FROM open_entries")
        for snapshot in open_windows:
            attribute_key = self._key(snapshot)
            db.execute(
                "INSERT INTO open_windows VALUES (?, ?, ?, ?)",
                (attribute_key, snapshot.start, snapshot.end, snapshot.overflow_values),
            )
            db.executemany(
                "INSERT INTO open_entries (attribute_key, start, kind, value, records, sketch, "
                "patterns) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        attribute_key,
                        snapshot.start,
                        *entry_key(tally),
                        tally.records,
                        tally.sketch,
                        _blob(tally.patterns),
                    )
                    for tally in snapshot.tallies
                ],
            )

    def _mark_journal(self, covered: int) -> None:
        """The checkpoint holds every request counted up to `covered`: a restart replays only
        the journal entries after it (store/journal.py); the others are deleted after the
        checkpoint's transaction (_delete_dead_journal)."""
        self._db.execute("INSERT OR REPLACE INTO journal_mark VALUES (0, ?)", (covered,))

    def _delete_dead_journal(self) -> None:
        """The journal entries at or below the mark, a transaction per DEAD_ENTRIES_AT_ONCE
        requests: the group commits wait behind the store's transactions, and deleting two
        seconds of journal in the checkpoint's (a 12 KB row per 1,000-record request) held
        them for 8-27 ms, and its commit, writing the freed pages, for 14-58 ms more."""
        while self._db.execute(_DELETE_DEAD, (DEAD_ENTRIES_AT_ONCE,)).rowcount > 0:
            pass

    def _expire(self, now: float) -> None:
        for resolution in (BASE, *self._rollups):
            oldest = self._retention.oldest_kept(resolution, now, self._window)
            for table in ("periods", "entries"):
                self._db.execute(
                    f"DELETE FROM {table} WHERE resolution = ? AND start < ?",
                    (resolution, oldest),
                )

    def query(
        self, attribute_key: str, resolution: str, first: float, last: float, key: EntryKey | None
    ) -> list[StoredPeriod]:
        if self._one_key:
            # A file from before several keys, read as it is: its rows are the first key's.
            if attribute_key != self._first_key:
                return []
            where, args = "", tuple[str, ...]()
        else:
            where, args = "attribute_key = ? AND ", (attribute_key,)
        # A connection per query: queries run in any thread, and WAL lets them read while the
        # writer writes.
        reader = sqlite3.connect(_read_only_uri(self._path), uri=True, timeout=30)
        try:
            periods = reader.execute(
                f"SELECT start, end, windows FROM periods WHERE {where}"
                "resolution = ? AND start BETWEEN ? AND ? ORDER BY start",
                (*args, resolution, first, last),
            ).fetchall()
            answer = []
            for start, end, windows in periods:
                sql = (
                    f"SELECT kind, value, records, sketch, {self._patterns} FROM entries "
                    f"WHERE {where}resolution = ? AND start = ?"
                )
                params: tuple[object, ...] = (*args, resolution, start)
                if key is not None:
                    sql += " AND kind = ? AND value = ?"
                    params += key
                entries = tuple(
                    PeriodEntry((kind, value), records, sketch, decode_counts(patterns))
                    for kind, value, records, sketch, patterns in reader.execute(sql, params)
                )
                answer.append(StoredPeriod(resolution, start, end, windows, entries))
            return answer
        finally:
            reader.close()

    def attribute_keys(self) -> list[str]:
        reader = sqlite3.connect(_read_only_uri(self._path), uri=True, timeout=30)
        try:
            if self._one_key:
                held = reader.execute("SELECT 1 FROM periods LIMIT 1").fetchone() is not None
                return [self._first_key] if held else []
            rows = reader.execute("SELECT DISTINCT attribute_key FROM periods ORDER BY 1")
            return [row[0] for row in rows]
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


def _tally(
    kind: int, value: str, records: int, sketch: bytes, patterns: bytes | None
) -> TallySnapshot:
    return TallySnapshot(
        None if kind in (KIND_MISSING, KIND_OVERFLOW) else value,
        records,
        sketch,
        overflow=kind == KIND_OVERFLOW,
        patterns=decode_counts(patterns),
    )


# Named, not by position: a migrated file has the patterns column last, a new one too, but
# an INSERT that names them does not depend on it.
_ENTRY_COLUMNS = "attribute_key, resolution, start, kind, value, records, sketch, patterns"
_ENTRY_VALUES = ", ".join("?" * 8)


def _blob(patterns: tuple[PatternCount, ...]) -> bytes | None:
    """A pattern table as stored: NULL when empty, as rows from before patterns are."""
    return encode_counts(patterns) if patterns else None
