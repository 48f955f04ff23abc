"""The journal of --durability ack with Redis: each replica's counted requests, written to Redis
in groups before their Exports are answered, and replayed into its open windows when the same
replica (same --replica-id) starts again.

A replica's journal is a list per window (`w:<start>:j:<replica>`, store/redis.py) plus a set
naming those lists. The flush of the replica's share of a window deletes the window's list in
the flush's own transaction, so a restart replays exactly the windows whose share never reached
Redis, each request once; the replica merger drains the committer before it flushes, so no
entry of a flushed window arrives after its list is gone (store/replicas.py).

A list would otherwise grow by one entry per request for the whole window: once it holds
`compact_at` entries, they are folded into one (records summed, messages in one sketch per
value) in a WATCH/MULTI transaction, so a list holds at most `compact_at` entries plus one
group's, whatever the request rate and the window length.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterable, Sequence

import redis
from redis.client import Pipeline

from otlp_stats.counting.aggregator import LabelTally, ResolvedBatch
from otlp_stats.counting.sketches import DEFAULT_LG_K, DistinctCounter
from otlp_stats.patterns.tally import DEFAULT_MAX_PATTERNS, PatternTable
from otlp_stats.store.journal import JournalEntry, decode_batch, encode_batch
from otlp_stats.store.redis import SHARE_TTL_SECONDS, journal_index, journal_key

_MARSHAL_VERSION = 4
# A slow Redis must not hold a group's answers for long: it is refused, retryable, instead.
_SOCKET_TIMEOUT = 2.0
# A window's list is folded into one entry once it holds this many: a fold reads the list and
# unions each value's messages, a few ms for a window of many values, once per this many
# requests of the window.
COMPACT_AT = 256


class RedisJournal:
    """Its own client: a group commit never queues behind the merger's calls."""

    def __init__(
        self,
        url: str,
        replica: str,
        first_key: str,
        lg_k: int = DEFAULT_LG_K,
        compact_at: int = COMPACT_AT,
    ) -> None:
        """`first_key`: the key an entry naming none ("") is, as in RedisStore; `lg_k`: the
        sketches' (a fold's sketch unions the windows' own at their size)."""
        self._client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=_SOCKET_TIMEOUT, socket_connect_timeout=_SOCKET_TIMEOUT
        )
        self._replica = replica
        self._first_key = first_key
        self._index = journal_index(replica)
        self._lg_k = lg_k
        self._compact_at = compact_at
        # Lists that reached compact_at entries at the last append.
        self._full: set[str] = set()

    def append(self, entries: Sequence[JournalEntry]) -> None:
        """The whole group in one MULTI, one round trip: all of it is written, or none."""
        lists: dict[str, list[bytes]] = {}
        for entry in entries:
            # The flush deletes the list under the key's resolved name: the same here.
            attribute_key = entry.attribute_key or self._first_key
            key = journal_key(attribute_key, entry.start, self._replica)
            blob = (attribute_key, entry.start, entry.end, encode_batch(entry.batch))
            lists.setdefault(key, []).append(marshal.dumps(blob, _MARSHAL_VERSION))
        pipe = self._client.pipeline(transaction=True)
        for key, blobs in lists.items():
            # One RPUSH per window: a group's requests mostly share one.
            pipe.rpush(key, *blobs)
            # Like the shares: a window nobody flushes (its replica never came back) expires.
            pipe.expire(key, SHARE_TTL_SECONDS)
            pipe.sadd(self._index, key)
        pipe.expire(self._index, SHARE_TTL_SECONDS)
        replies = pipe.execute()
        # Three replies per list, RPUSH's (the list's length) first.
        for key, length in zip(lists, replies[::3], strict=False):
            if int(length) >= self._compact_at:
                self._full.add(key)

    def wants_compaction(self) -> bool:
        return bool(self._full)

    def compact(self) -> int:
        """Fold each list that reached compact_at entries into one entry, atomically: a kill
        or an error leaves either the entries or their fold, never both nor neither. The
        lists folded."""
        folded = 0
        while self._full:
            folded += self._fold(self._full.pop())
        return folded

    def _fold(self, key: str) -> bool:
        done = False

        def fold(pipe: Pipeline) -> None:
            nonlocal done
            done = False  # run again on a conflict: only the last run counts
            # Besides this thread, only the flush of the list's window touches it, deleting
            # it: the run after that conflict finds it gone, and must not bring it back.
            blobs: list[bytes] = pipe.lrange(key, 0, -1)  # type: ignore[assignment]
            if len(blobs) < 2:
                return
            entries = [marshal.loads(blob) for blob in blobs]
            attribute_key, start, end, _ = entries[0]
            batch = fold_batches((decode_batch(entry[3]) for entry in entries), self._lg_k)
            folded = (attribute_key, start, end, encode_batch(batch))
            pipe.multi()
            pipe.delete(key)
            pipe.rpush(key, marshal.dumps(folded, _MARSHAL_VERSION))
            pipe.expire(key, SHARE_TTL_SECONDS)
            done = True

        self._client.transaction(fold, key)
        return done

    def probe(self) -> None:
        self._client.ping()

    def load(self) -> tuple[list[JournalEntry], int]:
        """Every entry of this replica's windows not flushed; numbering restarts at 0 (the
        windows' lists, not sequence numbers, say what a flush covers)."""
        keys = sorted(_text(key) for key in self._client.smembers(self._index))
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(key, 0, -1)
        entries: list[JournalEntry] = []
        for blobs in pipe.execute():
            for blob in blobs:
                attribute_key, start, end, tallies = marshal.loads(blob)
                if not isinstance(attribute_key, str) or not isinstance(start, float):
                    raise ValueError("a journal entry that is not ours")
                entries.append(
                    JournalEntry(0, attribute_key, start, float(end), decode_batch(tallies))
                )
        return entries, 0

    def close(self) -> None:
        self._client.close()


def fold_batches(
    batches: Iterable[ResolvedBatch], lg_k: int, max_patterns: int = DEFAULT_MAX_PATTERNS
) -> dict[str | None, LabelTally]:
    """Several requests' tallies of one window as one: per value, the records summed and the
    messages in one compact sketch, as the window itself holds them (so replaying the fold
    gives the window the same counts as replaying each entry)."""
    # Every field encode_batch keeps is folded here: one added there must be folded too, or a
    # fold would drop it (test_redis_journal.py replays a fold against its entries).
    records: dict[str | None, int] = {}
    counters: dict[str | None, DistinctCounter] = {}
    patterns: dict[str | None, PatternTable] = {}
    for batch in batches:
        for value, tally in batch.items():
            records[value] = records.get(value, 0) + tally.records
            if tally.patterns:
                table = patterns.get(value)
                if table is None:
                    table = patterns[value] = PatternTable(max_patterns)
                table.merge(tally.patterns)
            counter = counters.get(value)
            if counter is None:
                counter = counters[value] = DistinctCounter(lg_k)
            counter.update(tally.hashes)
            for sketch in tally.sketches:
                counter.merge(sketch)
    return {
        value: LabelTally(
            records[value],
            [],
            [counter.serialize()],
            list(patterns[value].counts()) if value in patterns else [],
        )
        for value, counter in counters.items()
    }


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
