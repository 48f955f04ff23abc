"""The journal (--durability ack): every counted request's counts, committed in groups to the
SQLite file before its Export is answered, and replayed into the open windows at start.

Each request gets a sequence number when the aggregator counts it (on the loop, so the numbers
follow the counting order). A checkpoint records the last number counted when it snapshots
the open windows, in the same transaction: at start, the checkpoint plus the entries after its
number are exactly what was counted, each once. The entries up to it are dead from then on; the
store deletes them after its commit, a few hundred requests' at a time (store/sqlite.py).
"""

from __future__ import annotations

import asyncio
import functools
import marshal
import sqlite3
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from otlp_stats.counting.aggregator import LabelTally, ResolvedBatch
from otlp_stats.counting.queue import Verdict
from otlp_stats.counting.workers import Done, Journaled, Stored
from otlp_stats.errors import NotDurable
from otlp_stats.health import Health
from otlp_stats.patterns.tally import PatternCount
from otlp_stats.store.periods import BASE

JOURNAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER NOT NULL,
    attribute_key TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    tallies BLOB NOT NULL,
    PRIMARY KEY (seq, attribute_key, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal_mark (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    covered INTEGER NOT NULL
);
"""

# The encoding's version, in marshal's own numbering: marshal builds only plain values (no
# code runs on loading), and its format is fixed per version.
_MARSHAL_VERSION = 4

SYNCHRONOUS = ("normal", "full")

# After a failed commit, how often the journal is tried again while Exports are refused.
PROBE_EVERY = 1.0
# What /readyz says while the journal cannot be written.
UNWRITABLE = "the journal cannot be written (the store is unreachable or failing)"


@dataclass(frozen=True)
class JournalEntry:
    """One request's counts in one window of one attribute key."""

    seq: int
    attribute_key: str
    start: float
    end: float
    batch: ResolvedBatch


def encode_batch(batch: ResolvedBatch) -> bytes:
    """Per value: its records, its message hashes (8 bytes each), the compact sketches a big
    request was tallied into, and its patterns as (pattern, records, example) triples."""
    rows = [
        (
            value,
            tally.records,
            array("q", tally.hashes).tobytes(),
            tuple(tally.sketches),
            tuple((count.pattern, count.records, count.example) for count in tally.patterns),
        )
        for value, tally in batch.items()
    ]
    return marshal.dumps(rows, _MARSHAL_VERSION)


def decode_batch(blob: bytes) -> dict[str | None, LabelTally]:
    """encode_batch's rows back; rows journaled before patterns (four items) have none."""
    batch: dict[str | None, LabelTally] = {}
    for value, records, hashes, sketches, *rest in marshal.loads(blob):
        if not (value is None or isinstance(value, str)) or not isinstance(records, int):
            raise ValueError("a journal entry that is not ours")
        hashed = array("q")
        hashed.frombytes(hashes)
        patterns = [PatternCount(p, n, e) for p, n, e in rest[0]] if rest else []
        batch[value] = LabelTally(records, hashed.tolist(), list(sketches), patterns)
    return batch


class Journal(Protocol):
    """Where group commits go: the SQLite file, or Redis for replicas (store/redisjournal.py).
    Called from the committer's one thread."""

    def append(self, entries: Sequence[JournalEntry]) -> None: ...
    def wants_compaction(self) -> bool:
        """Whether the last appends left something for compact(): asked on the loop between
        commits, so a journal that never folds costs no trip to the thread per commit."""
        ...

    def compact(self) -> int:
        """After a group is answered: bound what the appends left (entries folded into one);
        the number of folds."""
        ...

    def probe(self) -> None:
        """Raise if the journal cannot be written now (after a failed commit, to know when
        Exports can be taken again)."""
        ...

    def load(self) -> tuple[list[JournalEntry], int]: ...
    def close(self) -> None: ...


# Rows in one INSERT, of _COLUMNS parameters each: well within SQLite's 32,766.
_ROWS_PER_STATEMENT = 1000
_COLUMNS = 5


@functools.lru_cache(maxsize=64)
def _insert(rows: int) -> str:
    row = "(" + ", ".join("?" * _COLUMNS) + ")"
    return "INSERT OR REPLACE INTO journal VALUES " + ", ".join([row] * rows)


def _row(entry: JournalEntry) -> tuple[int, str, float, float, bytes]:
    return (entry.seq, entry.attribute_key, entry.start, entry.end, encode_batch(entry.batch))


class SqliteJournal:
    """The journal's writer: its own connection to the store's file, so a group commit never
    waits behind a checkpoint's serializing (SQLite still takes their transactions in turn)."""

    def __init__(self, path: Path, synchronous: str = "normal") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}")
        # Made on the loop, used only by the committer's one thread.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is synced at each commit, so an acknowledged request survives a power
        # loss too; NORMAL: it survives the process being killed, not the machine failing.
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        # Copying the WAL back into the file is left to the store's own writer (its commits
        # checkpoint the WAL as they always did): done here, it would hold a group's answers
        # for the copy and its fsync.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(JOURNAL_SCHEMA)

    def append(self, entries: Sequence[JournalEntry]) -> None:
        """One transaction for the whole group: one statement, where it fits in one.

        Each step of a statement hands the GIL to the event loop and waits to get it back, up
        to a switch interval (5 ms) when the loop is busy: with executemany's step per row a
        group of 16 took 100 ms and 1.6 ms of CPU against a busy thread, as one statement 7 ms
        and 0.65 ms. Alone, the statement is its own transaction (the connection autocommits).
        """
        if not entries:
            return
        params = [value for entry in entries for value in _row(entry)]
        db = self._db
        if len(entries) <= _ROWS_PER_STATEMENT:
            db.execute(_insert(len(entries)), params)
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for first in range(0, len(entries), _ROWS_PER_STATEMENT):
                rows = min(_ROWS_PER_STATEMENT, len(entries) - first)
                db.execute(_insert(rows), params[first * _COLUMNS : (first + rows) * _COLUMNS])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def wants_compaction(self) -> bool:
        return False

    def compact(self) -> int:
        """Nothing to fold: the store deletes the entries its checkpoints hold."""
        return 0

    def probe(self) -> None:
        """The write lock taken and an empty transaction committed: the file is there and
        writable by this process (a disk still full fails the next commit again)."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("COMMIT")

    def load(self) -> tuple[list[JournalEntry], int]:
        """The entries after the checkpoint's mark, of windows not saved as closed, oldest
        first; and the last sequence number used (the next run numbers on from it)."""
        db = self._db
        mark = db.execute("SELECT covered FROM journal_mark WHERE id = 0").fetchone()
        covered = int(mark[0]) if mark is not None else 0
        last = db.execute("SELECT MAX(seq) FROM journal").fetchone()[0]
        entries = [
            JournalEntry(seq, key, start, end, decode_batch(blob))
            for seq, key, start, end, blob in db.execute(
                "SELECT seq, attribute_key, start, end, tallies FROM journal WHERE seq > ? "
                "AND NOT EXISTS (SELECT 1 FROM periods WHERE resolution = ? "
                "AND periods.attribute_key = journal.attribute_key "
                "AND periods.start = journal.start) ORDER BY seq",
                (covered, BASE),
            )
        ]
        return entries, max(covered, int(last or 0))

    def close(self) -> None:
        self._db.close()


@dataclass(eq=False)
class _Waiting:
    seq: int
    counted: Journaled
    verdict: asyncio.Future[Verdict]
    answer: Verdict
    done: Done
    # Merged late records: the request is answered once they are in the store too.
    stored: Stored = None


class Committer:
    """Group commit: the requests counted in the last `interval` seconds (or as soon as
    `max_requests` wait) are written in one transaction, from a thread, then all answered.

    The workers' Acknowledger with --durability ack. A failed commit answers its requests
    with a retryable refusal: their counts stay in memory (and in the next checkpoint), so a
    retry may count their records twice, never a message (docs/storage.md). A request whose
    late records were merged into their stored windows is answered once those are written too.
    """

    def __init__(
        self,
        journal: Journal,
        window: float,
        interval: float,
        max_requests: int,
        retry_delay: float,
        logger: Any,
        probe_every: float = PROBE_EVERY,
    ) -> None:
        self._journal = journal
        # Told when the journal cannot be written, and when it can again (report_to).
        self._health: Health | None = None
        self._probe_every = probe_every
        self._probe: asyncio.Task[None] | None = None
        self.writable = True
        self._window = window
        self._interval = interval
        self._max_requests = max_requests
        self._retry_delay = retry_delay
        self._log = logger
        self._waiting: list[_Waiting] = []
        # Committed, their late records' merge not done yet.
        self._storing: set[_Waiting] = set()
        # Set when a group is due: `interval` after its first request, or once it is full.
        self._due = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        # A commit under way finishes before stop() cancels the loop: its requests are answered.
        self._turn = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        # The last sequence number given to a counted request.
        self.position = 0
        self.commits = 0
        self.failures = 0
        self.compactions = 0

    def report_to(self, health: Health) -> None:
        """While the journal cannot be written the service is not ready, and Exports are
        refused before they are counted (docs/reliability.md)."""
        self._health = health

    def acknowledge(
        self,
        verdict: asyncio.Future[Verdict],
        answer: Verdict,
        counted: Journaled,
        done: Done,
        stored: Stored = None,
    ) -> None:
        self.position += 1
        if not self._waiting and self._timer is None:
            # A timer handle, not wait_for: that would cost a task per group.
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._due.set)
        if stored is not None:
            # Its failure is read here whoever ends up answering (a failed commit may first).
            stored.add_done_callback(_retrieve)
        self._waiting.append(_Waiting(self.position, counted, verdict, answer, done, stored))
        if len(self._waiting) >= self._max_requests:
            self._due.set()

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="otlp-stats-journal")
        return self._executor

    async def recover(self) -> list[JournalEntry]:
        """Before anything is counted: the entries to replay; numbering resumes after them."""
        loop = asyncio.get_running_loop()
        entries, last = await loop.run_in_executor(self._thread(), self._journal.load)
        self.position = last
        return entries

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="journal-committer")

    async def _run(self) -> None:
        while True:
            await self._due.wait()
            await self._commit_waiting()

    async def _commit_waiting(self) -> None:
        async with self._turn:
            await self._commit_group()

    async def _commit_group(self) -> None:
        group, self._waiting = self._waiting, []
        self._due.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not group:
            return
        committed = False
        try:
            await self._append(group)
            committed = True
        except Exception:
            self._log.exception("journal_commit_failed", requests=len(group))
            self._unwritable()
        finally:
            # However the commit ended (written, failed, or cancelled mid-await), every request
            # of the group is answered: accepted, or refused and retryable.
            self._answer_group(group, committed)
        if committed:
            self._writable_again()
            await self._compact()

    def _unwritable(self) -> None:
        if not self.writable:
            return
        self.writable = False
        if self._health is not None:
            self._health.set_unavailable(UNWRITABLE)
        self._log.warning("journal_unwritable", probe_every=self._probe_every)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_until_writable(), name="journal-probe")

    def _writable_again(self) -> None:
        if self.writable:
            return
        self.writable = True
        if self._health is not None:
            self._health.set_unavailable(None)
        self._log.info("journal_writable_again")

    async def _probe_until_writable(self) -> None:
        """While Exports are refused no commit comes to say the store is back: try it."""
        loop = asyncio.get_running_loop()
        while not self.writable:
            await asyncio.sleep(self._probe_every)
            try:
                await loop.run_in_executor(self._thread(), self._journal.probe)
            except Exception as error:
                self._log.debug("journal_probe_failed", error=str(error))
                continue
            self._writable_again()

    async def _compact(self) -> None:
        """After the answers, so they never wait for it; a failure only leaves the entries
        unfolded until the next attempt."""
        if not self._journal.wants_compaction():
            return
        loop = asyncio.get_running_loop()
        try:
            self.compactions += await loop.run_in_executor(self._thread(), self._journal.compact)
        except Exception:
            self._log.exception("journal_compaction_failed")

    async def _append(self, group: Sequence[_Waiting]) -> None:
        entries = [
            JournalEntry(
                waiting.seq,
                key,
                float(index * self._window),
                float((index + 1) * self._window),
                batch,
            )
            for waiting in group
            for (key, index), batch in waiting.counted.items()
        ]
        if entries:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread(), self._journal.append, entries)

    def _answer_group(self, group: Sequence[_Waiting], committed: bool) -> None:
        if not committed:
            self.failures += 1
            for waiting in group:
                self._refuse(waiting)
            return
        self.commits += 1
        for waiting in group:
            stored = waiting.stored
            if stored is None or stored.done():
                self._answer(waiting)
            else:
                self._storing.add(waiting)
                stored.add_done_callback(partial(self._merged, waiting))

    def _merged(self, waiting: _Waiting, _: asyncio.Future[None]) -> None:
        if waiting in self._storing:
            self._storing.discard(waiting)
            self._answer(waiting)

    def _answer(self, waiting: _Waiting) -> None:
        """Committed: accepted, unless its late records failed to reach the store."""
        stored = waiting.stored
        if stored is not None and (stored.cancelled() or stored.exception() is not None):
            self._refuse(waiting)
            return
        if not waiting.verdict.done():
            waiting.verdict.set_result(waiting.answer)
        waiting.done()

    def _refuse(self, waiting: _Waiting) -> None:
        if not waiting.verdict.done():
            waiting.verdict.set_exception(NotDurable(self._retry_delay))
        waiting.done()

    async def drain(self) -> None:
        """Commit and answer every request counted so far, now (a failed commit refuses
        them): the replicas flush a window's share only once its journal is complete."""
        async with self._turn:
            await self._commit_group()

    async def stop(self) -> None:
        """Commit and answer what waits, then close the journal's connection."""
        async with self._turn:
            for task in (self._task, self._probe):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            self._task = self._probe = None
            await self._commit_group()
        # Late records whose merge is still under way at the end: refused, retryable (their
        # merge may still go through at the keeper's stop; a retry counts their records twice,
        # never a message).
        for waiting in list(self._storing):
            self._storing.discard(waiting)
            self._refuse(waiting)
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._journal.close)
            self._executor.shutdown(wait=True)
            self._executor = None


def _retrieve(stored: asyncio.Future[None]) -> None:
    """Read a failed merge's exception, so asyncio does not log it as never retrieved."""
    if not stored.cancelled():
        stored.exception()


def journal_metrics(committer: Committer | None) -> Iterator[Metric]:
    """otlp_stats_journal_*, for the store keeper's and the replica merger's collectors alike
    (zero without --durability ack)."""
    yield CounterMetricFamily(
        "otlp_stats_journal_commits",
        "Group commits of the journal (--durability ack), each answering its requests.",
        value=committer.commits if committer is not None else 0,
    )
    yield CounterMetricFamily(
        "otlp_stats_journal_commit_failures",
        "Group commits of the journal that failed; their requests were refused, retryable.",
        value=committer.failures if committer is not None else 0,
    )
    yield GaugeMetricFamily(
        "otlp_stats_journal_writable",
        "1 while the journal can be written; 0 after a failed commit until a probe succeeds "
        "(Exports refused and the service not ready meanwhile).",
        value=int(committer is None or committer.writable),
    )
    yield CounterMetricFamily(
        "otlp_stats_journal_compactions",
        "Journal lists folded into one entry (Redis: once a window's list holds 256 entries).",
        value=committer.compactions if committer is not None else 0,
    )
