"""The ledger of inputs replayed into a store, by content digest: history is counted once.

Stored windows are unions of sketches, and rollups add records up: replaying a file a second
time would leave the distinct counts as they were but double every record count, and base
windows already past retention could not even say they had been seen. So each input is noted
by the SHA-256 of its bytes before anything of it is counted (`started`), and marked
`finished` once every window it fed is saved. A replay refuses an input the ledger knows,
finished or not: an interrupted replay may have saved some of its windows.

Kept beside the store's own tables (SQLite) or keys (Redis), touched only by `replay`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis

from otlp_stats.store.location import SQLITE_PREFIX

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replayed_inputs (
    sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, bytes INTEGER NOT NULL,
    started REAL NOT NULL, finished REAL, records INTEGER);
"""
_REDIS_KEY = "otlp-stats:replayed"


@dataclass(frozen=True)
class LedgerEntry:
    sha256: str
    name: str
    size: int
    started: float = 0.0
    finished: float | None = None
    records: int | None = None


class ReplayLedger(Protocol):
    def known(self, digests: Sequence[str]) -> list[LedgerEntry]:
        """The entries of these digests already in the ledger."""
        ...

    def start(self, entries: Sequence[LedgerEntry], now: float) -> None:
        """Note the inputs as being replayed (replacing older entries: --force)."""
        ...

    def finish(self, digests: Sequence[str], records: int, now: float) -> None: ...

    def close(self) -> None: ...


class SqliteLedger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def known(self, digests: Sequence[str]) -> list[LedgerEntry]:
        rows = self._db.execute(
            "SELECT sha256, name, bytes, started, finished, records FROM replayed_inputs "
            f"WHERE sha256 IN ({','.join('?' * len(digests))})",
            tuple(digests),
        ).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def start(self, entries: Sequence[LedgerEntry], now: float) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO replayed_inputs VALUES (?, ?, ?, ?, NULL, NULL)",
            [(entry.sha256, entry.name, entry.size, now) for entry in entries],
        )

    def finish(self, digests: Sequence[str], records: int, now: float) -> None:
        self._db.executemany(
            "UPDATE replayed_inputs SET finished = ?, records = ? WHERE sha256 = ?",
            [(now, records, digest) for digest in digests],
        )

    def close(self) -> None:
        self._db.close()


class RedisLedger:
    """One hash: digest -> the entry as JSON."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=10)

    def known(self, digests: Sequence[str]) -> list[LedgerEntry]:
        found = self._redis.hmget(_REDIS_KEY, list(digests)) if digests else []
        return [LedgerEntry(**json.loads(blob)) for blob in found if blob is not None]

    def start(self, entries: Sequence[LedgerEntry], now: float) -> None:
        self._redis.hset(
            _REDIS_KEY,
            mapping={
                entry.sha256: json.dumps(
                    {"sha256": entry.sha256, "name": entry.name, "size": entry.size, "started": now}
                )
                for entry in entries
            },
        )

    def finish(self, digests: Sequence[str], records: int, now: float) -> None:
        for entry in self.known(digests):
            done = {**entry.__dict__, "finished": now, "records": records}
            self._redis.hset(_REDIS_KEY, entry.sha256, json.dumps(done))

    def close(self) -> None:
        self._redis.close()


def open_ledger(store_url: str) -> ReplayLedger | None:
    """The ledger beside `--store`; None for the memory store (nothing outlives the run)."""
    if store_url.startswith(SQLITE_PREFIX):
        return SqliteLedger(Path(store_url[len(SQLITE_PREFIX) :]))
    if store_url.startswith("redis://"):
        return RedisLedger(store_url)
    return None
