"""The journal of --durability ack with Redis: each replica's counted requests, written to Redis
in groups before their Exports are answered, and replayed into its open windows when the same
replica (same --replica-id) starts again.

A replica's journal is a list per window (`w:<start>:j:<replica>`, store/redis.py) plus a set
naming those lists. The flush of the replica's share of a window deletes the window's list in
the flush's own transaction, so a restart replays exactly the windows whose share never reached
Redis, each request once; the replica merger drains the committer before it flushes, so no
entry of a flushed window arrives after its list is gone (store/replicas.py).
"""

from __future__ import annotations

import marshal
from collections.abc import Sequence

import redis

from otlp_stats.store.journal import JournalEntry, decode_batch, encode_batch
from otlp_stats.store.redis import SHARE_TTL_SECONDS, journal_index, journal_key

_MARSHAL_VERSION = 4
# A slow Redis must not hold a group's answers for long: it is refused, retryable, instead.
_SOCKET_TIMEOUT = 2.0


class RedisJournal:
    """Its own client: a group commit never queues behind the merger's calls."""

    def __init__(self, url: str, replica: str, first_key: str) -> None:
        """`first_key`: the key an entry naming none ("") is, as in RedisStore."""
        self._client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=_SOCKET_TIMEOUT, socket_connect_timeout=_SOCKET_TIMEOUT
        )
        self._replica = replica
        self._first_key = first_key
        self._index = journal_index(replica)

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
        pipe.execute()

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


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
