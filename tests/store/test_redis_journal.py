"""The Redis journal of --durability ack on a real redis-server: a window's list is folded into
one entry as it fills, so it stays bounded however many requests the window takes, and the
fold replays to the same counts as the entries it replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from otlp_stats.counting.aggregator import LabelTally, ResolvedBatch
from otlp_stats.counting.queue import Verdict
from otlp_stats.counting.sketches import estimate_serialized
from otlp_stats.patterns.tally import PatternCount
from otlp_stats.store import redisjournal
from otlp_stats.store.journal import Committer, JournalEntry
from otlp_stats.store.redis import journal_key
from otlp_stats.store.redisjournal import RedisJournal, fold_batches
from tests.support.redistools import RedisServer

WINDOW = 10.0
COMPACT_AT = 8
GROUP = 3
LG_K = 12


class _Log:
    def exception(self, event: str, **fields: Any) -> None:
        raise AssertionError(event)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def request_batch(number: int) -> ResolvedBatch:
    """Two records per request, one message seen by every request and one of its own."""
    return {"a": LabelTally.of_hashes([1, 1000 + number])}


def list_length(server: RedisServer, key: str) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.llen(key))
    finally:
        client.close()


async def test_a_windows_list_stays_bounded_and_replays_to_the_same_counts(
    redis_server: RedisServer,
) -> None:
    journal = RedisJournal(redis_server.url, "r1", "svc", LG_K, compact_at=COMPACT_AT)
    # Committed when the test says so (drain), GROUP requests at a time.
    committer = Committer(journal, WINDOW, 60.0, 1000, 1.0, _Log())
    key = journal_key("svc", 0.0, "r1")
    loop = asyncio.get_running_loop()
    lengths = []
    for group in range(40):
        verdicts: list[asyncio.Future[Verdict]] = []
        for n in range(group * GROUP, (group + 1) * GROUP):
            verdicts.append(loop.create_future())
            committer.acknowledge(verdicts[-1], Verdict(2), {("svc", 0): request_batch(n)}, _noop)
        await committer.drain()
        assert [verdict.result() for verdict in verdicts] == [Verdict(2)] * GROUP
        lengths.append(list_length(redis_server, key))
    # Never more than a fold's threshold plus one group: not one entry per request.
    assert max(lengths) <= COMPACT_AT + GROUP - 1
    # A fold leaves one entry; the next follows once the groups refill the list.
    assert committer.compactions >= 40 * GROUP // (COMPACT_AT + GROUP)
    entries, _ = journal.load()
    await committer.stop()
    replayed = fold_batches((entry.batch for entry in entries), LG_K)
    assert replayed["a"].records == 2 * 40 * GROUP
    [sketch] = replayed["a"].sketches
    assert estimate_serialized(sketch).value == 40 * GROUP + 1
    assert not estimate_serialized(sketch).estimated


def _noop() -> None:
    pass


def test_a_fold_never_brings_back_a_list_its_flush_deleted(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = RedisJournal(redis_server.url, "r1", "svc", LG_K, compact_at=COMPACT_AT)
    key = journal_key("svc", 0.0, "r1")
    journal.append(
        [JournalEntry(0, "svc", 0.0, WINDOW, request_batch(n)) for n in range(COMPACT_AT)]
    )
    assert journal.wants_compaction()  # the list reached compact_at
    other = redis.Redis.from_url(redis_server.url)
    fold = redisjournal.fold_batches

    def flushed_meanwhile(batches: Any, lg_k: int) -> dict[str | None, LabelTally]:
        # The window's flush deletes the list between the fold's read and its write.
        other.delete(key)
        return fold(batches, lg_k)

    monkeypatch.setattr(redisjournal, "fold_batches", flushed_meanwhile)
    try:
        assert journal.compact() == 0
        assert other.exists(key) == 0
    finally:
        other.close()
        journal.close()


def test_a_fold_keeps_each_values_patterns_merged() -> None:
    first: ResolvedBatch = {
        "checkout": LabelTally(2, [1, 2], [], [PatternCount("paid <*>", 2, "paid 9")]),
    }
    second: ResolvedBatch = {
        "checkout": LabelTally(1, [3], [], [PatternCount("paid <*>", 1, "paid 10")]),
        None: LabelTally(1, [4]),
    }
    folded = fold_batches([first, second], LG_K)
    assert folded["checkout"].patterns == [PatternCount("paid <*>", 3, "paid 10")]
    assert folded[None].patterns == []
