"""The journal of --durability ack: group commit, answers after the commit (or a retryable
refusal), and a checkpoint that replaces exactly the entries it holds."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from otlp_stats.counting.aggregator import LabelTally, WindowSnapshot
from otlp_stats.counting.queue import Verdict
from otlp_stats.counting.sketches import DistinctCounter
from otlp_stats.errors import NotDurable
from otlp_stats.health import Health, HealthState
from otlp_stats.store import journal as journal_module
from otlp_stats.store import sqlite as sqlite_module
from otlp_stats.store.journal import (
    Committer,
    JournalEntry,
    SqliteJournal,
    decode_batch,
    encode_batch,
)
from otlp_stats.store.periods import parse_retention
from otlp_stats.store.sqlite import SqliteStore

WINDOW = 10.0


class _Log:
    def exception(self, event: str, **fields: Any) -> None:
        self.last = event

    def warning(self, event: str, **fields: Any) -> None:
        self.warned = event

    def info(self, event: str, **fields: Any) -> None:
        pass

    def debug(self, event: str, **fields: Any) -> None:
        pass


def test_a_batch_survives_its_encoding_hashes_sketches_and_the_missing_value() -> None:
    sketch = DistinctCounter(12)
    sketch.update([7, 8])
    batch = {
        "checkout": LabelTally(3, [1, -2, 1]),
        None: LabelTally(2, [], [sketch.serialize()]),
    }
    decoded = decode_batch(encode_batch(batch))
    assert decoded["checkout"] == LabelTally(3, [1, -2, 1])
    assert decoded[None].records == 2 and decoded[None].sketches == [sketch.serialize()]


def _store(path: Path) -> SqliteStore:
    return SqliteStore(path, ("1d",), parse_retention("window=1h"), WINDOW, first_key="svc")


def _entry(seq: int, start: float, records: int) -> JournalEntry:
    return JournalEntry(
        seq, "svc", start, start + WINDOW, {"a": LabelTally.of_hashes([seq] * records)}
    )


def test_a_checkpoint_replaces_the_entries_it_holds_and_a_closed_window_takes_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = _store(path)
    journal = SqliteJournal(path, "normal")
    journal.append([_entry(1, 0.0, 1), _entry(2, 0.0, 2), _entry(3, 10.0, 3)])
    # The checkpoint holds requests 1 and 2 (window 0); request 4 comes after it.
    open_window = WindowSnapshot(0.0, WINDOW, ())
    store.commit([], [open_window], now=20.0, journal_seq=2)
    journal.append([_entry(4, 0.0, 4)])
    entries, last = journal.load()
    assert [entry.seq for entry in entries] == [3, 4] and last == 4
    # Window 10 saved as closed: its entries are never replayed into an open window again.
    store.commit([WindowSnapshot(10.0, 20.0, ())], None, now=20.0)
    entries, last = journal.load()
    assert [entry.seq for entry in entries] == [4] and last == 4
    journal.close()
    store.close()


def _rows(path: Path) -> list[int]:
    return [seq for (seq,) in sqlite3.connect(path).execute("SELECT seq FROM journal ORDER BY seq")]


def test_a_checkpoint_marks_its_entries_dead_and_deletes_them_after_its_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "DEAD_ENTRIES_AT_ONCE", 2)
    path = tmp_path / "state.db"
    store = _store(path)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    journal = SqliteJournal(path, "normal")
    journal.append([_entry(1, 0.0, 1), _entry(2, 10.0, 2), _entry(3, 0.0, 3), _entry(4, 10.0, 1)])
    # Window 0 closes; the checkpoint with it holds requests up to 3, of both windows.
    store.commit([WindowSnapshot(0.0, WINDOW, ())], [WindowSnapshot(10.0, 20.0, ())], 20.0, 3)
    entries, last = journal.load()
    assert [entry.seq for entry in entries] == [4] and last == 4
    assert _rows(path) == [4]  # what the checkpoint holds is gone from the file
    # After its COMMIT, two requests' entries a statement, each its own transaction.
    after = statements[statements.index("COMMIT") + 1 :]
    assert sum(statement.startswith("DELETE FROM journal") for statement in after) == 3
    journal.close()
    store.close()


def test_a_group_of_several_statements_is_committed_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "_ROWS_PER_STATEMENT", 2)
    path = tmp_path / "state.db"
    _store(path).close()
    journal = SqliteJournal(path, "normal")
    journal.append([_entry(seq, 0.0, 1) for seq in range(1, 6)])  # three statements
    assert [entry.seq for entry in journal.load()[0]] == [1, 2, 3, 4, 5]
    # The second statement of the next group fails: its first is rolled back with it.
    sqlite3.connect(path).execute(
        "CREATE TRIGGER refuse_8 BEFORE INSERT ON journal WHEN NEW.seq = 8 "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        journal.append([_entry(seq, 0.0, 1) for seq in range(6, 11)])
    entries, last = journal.load()
    assert [entry.seq for entry in entries] == [1, 2, 3, 4, 5] and last == 5
    journal.close()


class _FoldingJournal(SqliteJournal):
    """Counts the compactions asked of it; wants one while `full`."""

    full = False
    compacted = 0

    def wants_compaction(self) -> bool:
        return self.full

    def compact(self) -> int:
        self.compacted += 1
        return 1


async def test_a_journal_is_asked_to_compact_only_when_it_wants_to(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _store(path).close()
    journal = _FoldingJournal(path)
    committer = Committer(journal, WINDOW, 60.0, 100, 1.0, _Log())
    for full in (False, True):
        journal.full = full
        verdicts, _ = _acknowledge(committer, 2)
        await committer.drain()
        assert [verdict.result() for verdict in verdicts] == [Verdict(1)] * 2
    assert committer.commits == 2 and journal.compacted == 1 == committer.compactions
    await committer.stop()


async def test_requests_are_answered_after_their_group_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = _store(path)
    committer = Committer(SqliteJournal(path), WINDOW, 0.01, 100, 1.0, _Log())
    await committer.start()
    loop = asyncio.get_running_loop()
    verdicts = [loop.create_future() for _ in range(3)]
    released: list[int] = []
    for n, verdict in enumerate(verdicts):
        batch: dict[str | None, LabelTally] = {"a": LabelTally.of_hashes([n])}
        committer.acknowledge(
            verdict, Verdict(1), {("svc", 0): batch}, functools.partial(released.append, n)
        )
    assert not any(verdict.done() for verdict in verdicts)  # nothing answered before the commit
    assert [await verdict for verdict in verdicts] == [Verdict(1)] * 3
    assert sorted(released) == [0, 1, 2] and committer.commits == 1
    await committer.stop()
    entries, last = SqliteJournal(path).load()
    assert [entry.seq for entry in entries] == [1, 2, 3] and last == 3
    store.close()


class _BrokenJournal(SqliteJournal):
    def append(self, entries: Any) -> None:
        raise OSError("disk full")


async def test_a_failed_commit_answers_a_retryable_refusal_never_ok(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _store(path).close()
    log = _Log()
    committer = Committer(_BrokenJournal(path), WINDOW, 0.01, 1, 1.0, log)
    await committer.start()
    verdict: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
    released = asyncio.Event()
    batch: dict[str | None, LabelTally] = {"a": LabelTally.of_hashes([1])}
    committer.acknowledge(verdict, Verdict(1), {("svc", 0): batch}, released.set)
    with pytest.raises(NotDurable) as refused:
        await verdict
    assert refused.value.retryable and released.is_set()
    assert committer.failures == 1 and log.last == "journal_commit_failed"
    await committer.stop()


class _HeldJournal(SqliteJournal):
    """A journal whose append waits, in the committer's thread, until the test lets it go."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()

    def append(self, entries: Any) -> None:
        self.entered.set()
        self.release.wait(10)
        super().append(entries)


def _acknowledge(
    committer: Committer, requests: int
) -> tuple[list[asyncio.Future[Verdict]], list[int]]:
    loop = asyncio.get_running_loop()
    verdicts: list[asyncio.Future[Verdict]] = [loop.create_future() for _ in range(requests)]
    released: list[int] = []
    for n, verdict in enumerate(verdicts):
        batch: dict[str | None, LabelTally] = {"a": LabelTally.of_hashes([n])}
        committer.acknowledge(
            verdict, Verdict(1), {("svc", 0): batch}, functools.partial(released.append, n)
        )
    return verdicts, released


async def test_a_commit_cancelled_mid_write_refuses_its_whole_group_retryable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    _store(path).close()
    journal = _HeldJournal(path)
    # The group waits for drain(), as the replica merger's does before a flush; the merger's
    # stop cancels it wherever it is.
    committer = Committer(journal, WINDOW, 60.0, 100, 1.0, _Log())
    verdicts, released = _acknowledge(committer, 3)
    drain = asyncio.create_task(committer.drain())
    await asyncio.to_thread(journal.entered.wait, 10)
    drain.cancel()
    with pytest.raises(asyncio.CancelledError):
        await drain
    # Every request of the group has its answer and its place back, none left waiting.
    for verdict in verdicts:
        with pytest.raises(NotDurable) as refused:
            verdict.result()
        assert refused.value.retryable
    assert sorted(released) == [0, 1, 2]
    assert committer.failures == 1 and committer.commits == 0
    journal.release.set()
    await committer.stop()


async def test_a_request_with_merged_late_records_is_answered_once_they_are_stored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    _store(path).close()
    # Committed when the test says so (drain), not on a timer.
    committer = Committer(SqliteJournal(path), WINDOW, 60.0, 100, 1.0, _Log())
    loop = asyncio.get_running_loop()
    stored: list[asyncio.Future[None]] = [loop.create_future() for _ in range(3)]
    verdicts: list[asyncio.Future[Verdict]] = [loop.create_future() for _ in range(3)]
    released: list[int] = []
    for n in range(3):
        committer.acknowledge(
            verdicts[n], Verdict(2), {}, functools.partial(released.append, n), stored[n]
        )
    stored[0].set_result(None)  # merged before the group's commit
    await committer.drain()
    assert verdicts[0].result() == Verdict(2) and committer.commits == 1
    # Committed, but the late records of the others are not in the store yet: no answer.
    assert not verdicts[1].done() and not verdicts[2].done() and released == [0]
    stored[1].set_exception(OSError("the store failed"))
    with pytest.raises(NotDurable):
        await verdicts[1]
    # Still waiting at stop: refused, retryable, never left unanswered.
    await committer.stop()
    with pytest.raises(NotDurable):
        verdicts[2].result()
    assert sorted(released) == [0, 1, 2]


class _FlakyJournal(SqliteJournal):
    """Fails every write, the probe too, while `broken`."""

    broken = True

    def append(self, entries: Any) -> None:
        if self.broken:
            raise OSError("store unreachable")
        super().append(entries)

    def probe(self) -> None:
        if self.broken:
            raise OSError("store unreachable")
        super().probe()


async def test_a_failed_commit_makes_the_service_not_ready_until_a_probe_succeeds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    _store(path).close()
    journal = _FlakyJournal(path)
    committer = Committer(journal, WINDOW, 60.0, 100, 1.0, _Log(), probe_every=0.01)
    health = Health()
    health.move_to(HealthState.SERVING)
    committer.report_to(health)
    [verdict], _ = _acknowledge(committer, 1)
    await committer.drain()
    with pytest.raises(NotDurable):
        verdict.result()
    assert not health.ready and health.unavailable is not None and not committer.writable
    assert health.state is HealthState.SERVING  # not draining: it comes back
    ready_again = asyncio.Event()

    def note(_: HealthState) -> None:
        if health.ready:
            ready_again.set()

    health.subscribe(note)
    assert not ready_again.is_set()
    journal.broken = False
    await asyncio.wait_for(ready_again.wait(), 5)
    assert health.unavailable is None and committer.writable
    [verdict], _ = _acknowledge(committer, 1)
    await committer.drain()
    assert verdict.result() == Verdict(1)
    await committer.stop()
