"""The shared store: replicas flush window sketches to one Redis, one replica merges each window.

Keys (all under `otlp-stats:`):
- `w:<start>:r:<replica>`  hash, one replica's sketches of one window (flushed when it closes)
- `w:<start>:replicas`     set of the replicas that flushed the window
- `w:<start>:claim`        the replica merging the window (SET NX with an expiry)
- `p:<resolution>:<start>` hash, a merged base window or rollup period; `i:<resolution>` its
  index (a sorted set by start) for range queries and retention
Every hash field is an entry key ("<kind>:<value>") -> 8-byte records + compact sketch.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.client import Pipeline

from otlp_stats.aggregator import TallySnapshot, WindowSnapshot
from otlp_stats.sketches import DEFAULT_LG_K
from otlp_stats.store.base import (
    KIND_MISSING,
    KIND_OVERFLOW,
    EntryKey,
    PeriodEntry,
    StoredPeriod,
    entry_key,
    merge_entry,
    rollup_targets,
)
from otlp_stats.store.periods import BASE, Retention

PREFIX = "otlp-stats:"
_RECORDS = struct.Struct(">q")
_END = b"~end"
_WINDOWS = b"~windows"
_OVERFLOW_VALUES = b"~overflow_values"
# Replica flushes are only needed until the window is merged; they expire on their own.
_FLUSH_TTL_SECONDS = 3600
# A slow Redis must not stall a replica: every call gives up after this long.
_SOCKET_TIMEOUT = 2.0

StoreUnavailable = redis.RedisError


def _field(key: EntryKey) -> bytes:
    return f"{key[0]}:{key[1]}".encode()


def _key_of(field: bytes) -> EntryKey:
    kind, _, value = field.decode().partition(":")
    return int(kind), value


def _text(reply: object) -> str:
    """A member as the client returns it (bytes, without decode_responses) as text."""
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _pack(records: int, sketch: bytes) -> bytes:
    return _RECORDS.pack(records) + sketch


def _unpack(blob: bytes) -> tuple[int, bytes]:
    return _RECORDS.unpack_from(blob)[0], blob[_RECORDS.size :]


def _snapshot_of(start: float, end: float, fields: Mapping[bytes, bytes]) -> WindowSnapshot:
    tallies = []
    for field, blob in fields.items():
        if field.startswith(b"~"):
            continue
        (kind, value), (records, sketch) = _key_of(field), _unpack(blob)
        tallies.append(
            TallySnapshot(
                None if kind in (KIND_MISSING, KIND_OVERFLOW) else value,
                records,
                sketch,
                overflow=kind == KIND_OVERFLOW,
            )
        )
    return WindowSnapshot(start, end, tuple(tallies), fields.get(_OVERFLOW_VALUES))


class RedisStore:
    def __init__(
        self,
        url: str,
        rollups: Sequence[str],
        retention: Retention,
        window: float,
        lg_k: int = DEFAULT_LG_K,
    ) -> None:
        self._rollups = tuple(rollups)
        self._retention = retention
        self._window = window
        self._lg_k = lg_k
        # Connecting is lazy: a replica starts (and counts locally) with Redis down.
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=_SOCKET_TIMEOUT,
            socket_connect_timeout=_SOCKET_TIMEOUT,
        )

    @property
    def durable(self) -> bool:
        # Open windows are not checkpointed: each replica's share reaches Redis when it closes.
        return False

    def load_open(self) -> list[WindowSnapshot]:
        return []

    def ping(self) -> bool:
        return bool(self._client.ping())

    # Replica side: flush, claim, collect.

    def flush(self, replica: str, snapshot: WindowSnapshot) -> None:
        """One replica's share of a window; flushing it again replaces it (no double count)."""
        key = f"{PREFIX}w:{snapshot.start!r}:r:{replica}"
        fields: dict[bytes, bytes] = {
            _field(entry_key(tally)): _pack(tally.records, tally.sketch)
            for tally in snapshot.tallies
        }
        if snapshot.overflow_values is not None:
            fields[_OVERFLOW_VALUES] = snapshot.overflow_values
        fields[_END] = repr(snapshot.end).encode()
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(key, _FLUSH_TTL_SECONDS)
        replicas = f"{PREFIX}w:{snapshot.start!r}:replicas"
        pipe.sadd(replicas, replica)
        pipe.expire(replicas, _FLUSH_TTL_SECONDS)
        pipe.execute()

    def claim(self, start: float, replica: str, timeout: float) -> bool:
        """Atomically become the one replica that merges and reports this window.

        The claim expires after `timeout`, so a replica that dies while merging cannot block
        the window; once merged, the stored base window itself says it is done.
        """
        if self._client.exists(f"{PREFIX}p:{BASE}:{start!r}"):
            return False
        claimed = self._client.set(
            f"{PREFIX}w:{start!r}:claim", replica, nx=True, px=max(1, round(timeout * 1000))
        )
        return bool(claimed)

    def is_merged(self, start: float) -> bool:
        return bool(self._client.exists(f"{PREFIX}p:{BASE}:{start!r}"))

    def collect(self, start: float, end: float) -> list[tuple[str, WindowSnapshot]]:
        """Every replica's flushed share of a window, by replica name."""
        replicas = sorted(
            _text(member) for member in self._client.smembers(f"{PREFIX}w:{start!r}:replicas")
        )
        pipe = self._client.pipeline(transaction=False)
        for replica in replicas:
            pipe.hgetall(f"{PREFIX}w:{start!r}:r:{replica}")
        shares: list[dict[bytes, bytes]] = pipe.execute()
        return [
            (replica, _snapshot_of(start, end, fields))
            for replica, fields in zip(replicas, shares, strict=True)
            if fields
        ]

    # Merged windows and rollups: the StateStore interface.

    def commit(
        self,
        closed: Sequence[WindowSnapshot],
        open_windows: Sequence[WindowSnapshot] | None,
        now: float,
    ) -> None:
        for snapshot in closed:
            self._save_closed(snapshot)
        self._expire(now)

    def _save_closed(self, snapshot: WindowSnapshot) -> None:
        targets = rollup_targets(snapshot, self._rollups)
        keys = [f"{PREFIX}p:{resolution}:{start!r}" for resolution, start, _ in targets]

        # Optimistic: if another replica changes one of these periods (merging another window
        # of the same day) between the reads and the writes, redis-py runs this again.
        def merge(pipe: Pipeline) -> None:
            if pipe.exists(keys[0]):
                pipe.multi()
                return  # this window is already merged: never count it twice
            current = [pipe.hgetall(key) for key in keys]
            pipe.multi()
            for (resolution, start, end), key, fields in zip(targets, keys, current, strict=True):
                pipe.hset(key, mapping=_merged_fields(fields, snapshot, end, self._lg_k))  # type: ignore[arg-type]
                pipe.zadd(f"{PREFIX}i:{resolution}", {repr(start): start})

        self._client.transaction(merge, *keys)

    def _expire(self, now: float) -> None:
        for resolution in (BASE, *self._rollups):
            oldest = self._retention.oldest_kept(resolution, now, self._window)
            index = f"{PREFIX}i:{resolution}"
            old = [_text(m) for m in self._client.zrangebyscore(index, "-inf", f"({oldest!r}")]
            if old:
                self._client.delete(*(f"{PREFIX}p:{resolution}:{m}" for m in old))
                self._client.zrem(index, *old)

    def query(
        self, resolution: str, first: float, last: float, key: EntryKey | None
    ) -> list[StoredPeriod]:
        starts = [
            _text(m) for m in self._client.zrangebyscore(f"{PREFIX}i:{resolution}", first, last)
        ]
        pipe = self._client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(f"{PREFIX}p:{resolution}:{start}")
        answer = []
        for start, fields in zip(starts, pipe.execute(), strict=True):
            if not fields:
                continue
            entries = tuple(
                PeriodEntry(_key_of(field), *_unpack(blob))
                for field, blob in fields.items()
                if not field.startswith(b"~") and (key is None or _key_of(field) == key)
            )
            answer.append(
                StoredPeriod(
                    resolution,
                    float(start),
                    float(fields[_END]),
                    int(fields[_WINDOWS]),
                    entries,
                )
            )
        return answer

    def stored_bytes(self) -> int:
        try:
            info: dict[str, Any] = self._client.info("memory")
        except redis.RedisError:
            return 0
        return int(info.get("used_memory", 0))

    def close(self) -> None:
        self._client.close()


def _merged_fields(
    fields: Mapping[bytes, bytes], snapshot: WindowSnapshot, end: float, lg_k: int
) -> dict[bytes, bytes]:
    merged: dict[bytes, bytes] = {
        _END: repr(end).encode(),
        _WINDOWS: str(int(fields.get(_WINDOWS, b"0")) + 1).encode(),
    }
    for tally in snapshot.tallies:
        field = _field(entry_key(tally))
        existing = _unpack(fields[field]) if field in fields else None
        merged[field] = _pack(*merge_entry(existing, tally, lg_k))
    return merged
