"""The sinks' outbox in the SQLite store: reports not yet delivered, kept across a restart."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from otlp_stats.reporting.sinks.outbox import KeptReport
from otlp_stats.store.sqlite import connect_writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;
"""


class SqliteOutbox:
    """Its own connection to the store's file (WAL: the keeper writes beside it), one small
    transaction per report kept or forgotten. A sink's rows are bounded by its queue's size:
    the queue forgets the row of each report it drops."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect_writer(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()
        self._seq = int(row[0])

    def keep(self, sinks: Sequence[str], key: str, line: str) -> int:
        with self._lock:
            self._seq += 1
            with _transaction(self._db):
                self._db.executemany(
                    "INSERT INTO outbox (sink, seq, idempotency_key, line) VALUES (?, ?, ?, ?)",
                    [(sink, self._seq, key, line) for sink in sinks],
                )
            return self._seq

    def forget(self, sink: str, seq: int) -> None:
        with self._lock, _transaction(self._db):
            self._db.execute("DELETE FROM outbox WHERE sink = ? AND seq = ?", (sink, seq))

    def left(self) -> list[KeptReport]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, idempotency_key, line, sink FROM outbox ORDER BY seq, sink"
            ).fetchall()
        kept: list[KeptReport] = []
        for seq, key, line, sink in rows:
            if kept and kept[-1].seq == seq:
                kept[-1] = kept[-1]._replace(sinks=(*kept[-1].sinks, sink))
            else:
                kept.append(KeptReport(seq, key, line, (sink,)))
        return kept

    def rows(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE .. COMMIT (the connection is in autocommit mode), ROLLBACK on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
