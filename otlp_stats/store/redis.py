"""The shared store: replicas flush window sketches to one Redis, one replica merges each window.

Each attribute key's windows and periods live under their own prefix, `otlp-stats:k:<key>:`
(":" and "%" in the key percent-encoded), so two keys' counts never meet. Under it:
- `w:<start>:r:<share>`    hash, one replica process's sketches of one window (flushed when it
  closes); `<share>` is `<incarnation>:<replica>`, unique per process run, so a replica that
  restarts within a window adds a share instead of replacing the one it flushed before
- `w:<start>:replicas`     set of the shares flushed for the window
- `w:<start>:claim`        the replica merging the window (SET NX with an expiry)
- `w:<start>:merged`       set of the shares the merged window holds: it says the window is
  merged (set in the merge's own transaction), outlives the shares, and survives retention
  deleting the merged window, so a window is never merged twice and a late share once
- `p:<resolution>:<start>` hash, a merged base window or rollup period; `i:<resolution>` its
  index (a sorted set by start) for range queries and retention
- `w:<start>:late`         set of the late deltas (event time) merged into the window, so each
  is merged once however often its replica retries
- `w:<start>:revision`     hash, the window's last revision printed (`n`) and when (`at`)
- `w:<start>:j:<replica>`  list, --durability ack: the replica's journal of the window, one
  entry per counted request (store/redisjournal.py), appended before the request is answered
  and deleted by the flush of the replica's share of the window, in the flush's transaction
Beside them, under `otlp-stats:` alone:
- `revisions`              sorted set, windows with a revision to print (`<start>:<key>`), by
  when it is due
- `keys`                   set of the attribute keys merged windows were saved for
- `j:<replica>`            set of the replica's journal lists, read when it restarts
Every hash field is an entry key ("<kind>:<value>") -> 8-byte records + compact sketch, beside
it `~p:<kind>:<value>` -> the value's pattern table (patterns/tally.py encode_counts; absent
when it has none, as in what was written before patterns). Both are read and written in the
same WATCH/MULTI transaction as the rest of the hash, so patterns merge as atomically as
sketches.

A Redis written before several keys were counted holds its periods right under `otlp-stats:`
(`p:...`, `i:...`): they are the first configured key's, answered together with what is saved
under its prefix (sketches unioned, records added) and dropped by retention like the others.
Their in-flight state (shares, claims, markers, revisions due) is not carried over.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

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
    EntryCounts,
    EntryKey,
    PeriodEntry,
    StoredPeriod,
    entry_key,
    merge_entry,
    merge_pattern_tables,
    rollup_targets,
)
from otlp_stats.store.periods import BASE, RESOLUTIONS, Retention
from otlp_stats.store.revisions import LateDelta, Revision

PREFIX = "otlp-stats:"
_KEYS = f"{PREFIX}keys"
_RECORDS = struct.Struct(">q")
_END = b"~end"
_WINDOWS = b"~windows"
_OVERFLOW_VALUES = b"~overflow_values"
# Before an entry field: the field of its patterns. "~" first, so that what reads entries
# (here, and versions from before patterns) skips it as it skips the other "~" fields.
_PATTERNS = b"~p:"
# Replica flushes are only needed until the window is merged; they expire on their own. A
# replica gives up merging a window this long after its end: its share could be gone.
SHARE_TTL_SECONDS = 3600
# The merged marker must outlive every share that could still be flushed for its window.
MERGED_TTL_SECONDS = 2 * SHARE_TTL_SECONDS
# A slow Redis must not stall a replica: every call gives up after this long.
_SOCKET_TIMEOUT = 2.0

StoreUnavailable = redis.RedisError


@dataclass(frozen=True)
class ShareId:
    """One process run of a replica: reports name the replica, Redis keys the incarnation."""

    replica: str
    incarnation: str

    @property
    def member(self) -> str:
        # The incarnation comes first and holds no ":", so the replica name may hold anything.
        return f"{self.incarnation}:{self.replica}"

    @classmethod
    def of_member(cls, member: str) -> ShareId:
        incarnation, colon, replica = member.partition(":")
        if not colon:  # flushed by a version that keyed shares by replica name alone
            return cls(member, "")
        return cls(replica, incarnation)


@dataclass(frozen=True)
class _Names:
    """The Redis keys of one attribute key's shares, windows and periods."""

    prefix: str

    @classmethod
    def of(cls, attribute_key: str) -> _Names:
        escaped = attribute_key.replace("%", "%25").replace(":", "%3A")
        return cls(f"{PREFIX}k:{escaped}:")

    def window(self, start: float, what: str) -> str:
        """`w:<start>:<what>`: replicas, claim, merged, late, revision, or r:<share>."""
        return f"{self.prefix}w:{start!r}:{what}"

    def period(self, resolution: str, start: float | str) -> str:
        # From the index, a start is already the text it was saved as.
        return f"{self.prefix}p:{resolution}:{start if isinstance(start, str) else repr(start)}"

    def index(self, resolution: str) -> str:
        return f"{self.prefix}i:{resolution}"


def journal_key(attribute_key: str, start: float, replica: str) -> str:
    """A replica's journal of one key's window (--durability ack): named by the replica, not
    its incarnation, so the same replica restarted finds it."""
    return _Names.of(attribute_key).window(start, f"j:{replica}")


def journal_index(replica: str) -> str:
    """The set of a replica's journal lists not deleted yet."""
    return f"{PREFIX}j:{replica}"


# A period a commit adds windows to: its index, start, end, and the windows.
_PendingPeriod = tuple[str, float, float, list[WindowSnapshot]]

# Periods saved before several keys were counted: the first configured key's.
_LEGACY = _Names(PREFIX)


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


def _entries(fields: Mapping[bytes, bytes]) -> dict[bytes, EntryCounts]:
    """Each entry field of a hash with its counts, patterns included."""
    return {field: _entry_of(fields, field) for field in fields if not field.startswith(b"~")}


def _entry_of(
    fields: Mapping[bytes, bytes], field: bytes, with_patterns: bool = True
) -> EntryCounts:
    records, sketch = _unpack(fields[field])
    if not with_patterns:
        return EntryCounts(records, sketch)
    return EntryCounts(records, sketch, decode_counts(fields.get(_PATTERNS + field)))


def _entry_fields(field: bytes, counts: EntryCounts) -> dict[bytes, bytes]:
    """The hash fields of one entry to write; a table with no patterns writes none, so a
    stored one is left as it is (merging never empties a table: nothing is left to delete)."""
    written = {field: _pack(counts.records, counts.sketch)}
    if counts.patterns:
        written[_PATTERNS + field] = encode_counts(counts.patterns)
    return written


def _snapshot_of(
    start: float, end: float, fields: Mapping[bytes, bytes], attribute_key: str
) -> WindowSnapshot:
    tallies = []
    for field, counts in _entries(fields).items():
        kind, value = _key_of(field)
        tallies.append(
            TallySnapshot(
                None if kind in (KIND_MISSING, KIND_OVERFLOW) else value,
                counts.records,
                counts.sketch,
                overflow=kind == KIND_OVERFLOW,
                patterns=counts.patterns,
            )
        )
    return WindowSnapshot(start, end, tuple(tallies), fields.get(_OVERFLOW_VALUES), attribute_key)


class RedisStore:
    def __init__(
        self,
        url: str,
        rollups: Sequence[str],
        retention: Retention,
        window: float,
        lg_k: int = DEFAULT_LG_K,
        *,
        first_key: str,
        max_patterns: int = DEFAULT_MAX_PATTERNS,
    ) -> None:
        """`first_key`: the first configured attribute key, whose a snapshot naming none is,
        and the periods saved before several keys were counted; `max_patterns`: the bound of
        each value's merged pattern table."""
        self._first_key = first_key
        self._max_patterns = max_patterns
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

    def _key(self, attribute_key: str) -> str:
        return attribute_key or self._first_key

    def _names(self, attribute_key: str) -> _Names:
        return _Names.of(self._key(attribute_key))

    # Replica side: flush, claim, collect.

    def flush(self, share: ShareId, snapshot: WindowSnapshot, journal: bool = False) -> None:
        """One process's share of a window; flushing it again replaces it (no double count).

        `journal` (--durability ack): the share holds every request the replica journaled for
        the window, so the journal goes in the same transaction: a restart replays a window's
        journal only when its share was never flushed.
        """
        names = self._names(snapshot.attribute_key)
        key = names.window(snapshot.start, f"r:{share.member}")
        fields: dict[bytes, bytes] = {}
        for tally in snapshot.tallies:
            counts = EntryCounts(tally.records, tally.sketch, tally.patterns)
            fields.update(_entry_fields(_field(entry_key(tally)), counts))
        if snapshot.overflow_values is not None:
            fields[_OVERFLOW_VALUES] = snapshot.overflow_values
        fields[_END] = repr(snapshot.end).encode()
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(key, SHARE_TTL_SECONDS)
        replicas = names.window(snapshot.start, "replicas")
        pipe.sadd(replicas, share.member)
        pipe.expire(replicas, SHARE_TTL_SECONDS)
        if journal:
            journaled = journal_key(
                self._key(snapshot.attribute_key), snapshot.start, share.replica
            )
            pipe.delete(journaled)
            pipe.srem(journal_index(share.replica), journaled)
        pipe.execute()

    def claim(self, attribute_key: str, start: float, replica: str, timeout: float) -> bool:
        """Atomically become the one replica that merges and reports this key's window.

        The claim expires after `timeout`, so a replica that dies while merging cannot block
        the window; once merged, the merged marker says it is done (not the merged window
        itself: retention deletes that, and the window must not be merged again).
        """
        if self.is_merged(attribute_key, start):
            return False
        claimed = self._client.set(
            self._names(attribute_key).window(start, "claim"),
            replica,
            nx=True,
            px=max(1, round(timeout * 1000)),
        )
        return bool(claimed)

    def is_merged(self, attribute_key: str, start: float) -> bool:
        return bool(self._client.exists(self._names(attribute_key).window(start, "merged")))

    def collect(
        self, attribute_key: str, start: float, end: float
    ) -> list[tuple[ShareId, WindowSnapshot]]:
        """Every flushed share of a key's window, by share (a replica has one per process
        run)."""
        names, attribute_key = self._names(attribute_key), self._key(attribute_key)
        members = sorted(
            _text(member) for member in self._client.smembers(names.window(start, "replicas"))
        )
        pipe = self._client.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(names.window(start, f"r:{member}"))
        shares: list[dict[bytes, bytes]] = pipe.execute()
        return [
            (ShareId.of_member(member), _snapshot_of(start, end, fields, attribute_key))
            for member, fields in zip(members, shares, strict=True)
            if fields
        ]

    def save_merged(self, merged: WindowSnapshot, shares: Sequence[ShareId], now: float) -> bool:
        """Save the merged window and its rollups, and mark it merged with the shares it holds,
        in one transaction; False (and nothing written) if it was already merged."""
        saved = self._save_closed(merged, shares)
        self._expire(now)
        return saved

    def add_late(self, share: ShareId, snapshot: WindowSnapshot, now: float) -> bool:
        """Union a share flushed after its window was merged into the merged window and its
        rollups, once; False if the window is not merged or already holds this share."""
        names = self._names(snapshot.attribute_key)
        targets = rollup_targets(snapshot, self._rollups)
        marker = names.window(snapshot.start, "merged")
        keys = [names.period(resolution, start) for resolution, start, _ in targets]

        added = False

        def add(pipe: Pipeline) -> None:
            nonlocal added
            added = False  # run again on a conflict: only the last run counts
            members = {_text(member) for member in pipe.smembers(marker)}
            if not members or share.member in members:
                pipe.multi()
                return
            current = [pipe.hgetall(key) for key in keys]
            pipe.multi()
            for (_, _, end), key, fields in zip(targets, keys, current, strict=True):
                # A period retention already deleted is not brought back by a late share.
                if fields:
                    merged = self._merged_fields(fields, snapshot, end, new_window=False)  # type: ignore[arg-type]
                    pipe.hset(key, mapping=merged)  # type: ignore[arg-type]
            pipe.sadd(marker, share.member)
            pipe.expire(marker, MERGED_TTL_SECONDS)
            added = True

        self._client.transaction(add, marker, *keys)
        self._expire(now)
        return added

    # Merged windows and rollups: the StateStore interface.

    def commit(
        self,
        closed: Sequence[WindowSnapshot],
        open_windows: Sequence[WindowSnapshot] | None,
        now: float,
        journal_seq: int | None = None,
    ) -> None:
        """Closed windows saved and merged into their rollups, in one transaction: each period
        read and written once however many of the windows it holds (replay's commits hold
        hundreds of windows of one day; the replicas' merges save one window each)."""
        fresh: dict[tuple[str, float], WindowSnapshot] = {}
        for snapshot in closed:
            fresh.setdefault((self._key(snapshot.attribute_key), snapshot.start), snapshot)
        if fresh:
            self._save_all_closed(list(fresh.values()))
        self._expire(now)

    def _save_all_closed(self, closed: Sequence[WindowSnapshot]) -> None:
        names = [self._names(snapshot.attribute_key) for snapshot in closed]
        markers = [
            n.window(snapshot.start, "merged") for n, snapshot in zip(names, closed, strict=True)
        ]
        targets = [rollup_targets(snapshot, self._rollups) for snapshot in closed]
        keys = list(
            dict.fromkeys(
                n.period(name, start)
                for n, each in zip(names, targets, strict=True)
                for name, start, _ in each
            )
        )
        attribute_keys = {self._key(snapshot.attribute_key) for snapshot in closed}

        def merge(pipe: Pipeline) -> None:
            # Read after WATCH, all in one round trip: a change made since fails the EXEC, and
            # redis-py runs this again.
            reads = self._client.pipeline(transaction=False)
            for marker in markers:
                reads.exists(marker)
            for key in keys:
                reads.hgetall(key)
            replies = reads.execute()
            merged = replies[: len(markers)]
            current: dict[str, dict[bytes, bytes]] = dict(
                zip(keys, replies[len(markers) :], strict=True)
            )
            periods: dict[str, _PendingPeriod] = {}
            pipe.multi()
            for snapshot, n, marker, done, window_targets in zip(
                closed, names, markers, merged, targets, strict=True
            ):
                if done:
                    continue  # this key's window is already merged: never count it twice
                for name, start, end in window_targets:
                    entry: _PendingPeriod = (n.index(name), start, end, [])
                    periods.setdefault(n.period(name, start), entry)[3].append(snapshot)
                pipe.sadd(marker, "")
                pipe.expire(marker, MERGED_TTL_SECONDS)
            for key, (index, start, end, snapshots) in periods.items():
                update = self._merged_fields_of(current[key], snapshots, end)
                pipe.hset(key, mapping=update)  # type: ignore[arg-type]
                pipe.zadd(index, {repr(start): start})
            pipe.sadd(_KEYS, *attribute_keys)

        self._client.transaction(merge, *markers, *keys)

    def _save_closed(self, snapshot: WindowSnapshot, shares: Sequence[ShareId]) -> bool:
        names = self._names(snapshot.attribute_key)
        targets = rollup_targets(snapshot, self._rollups)
        marker = names.window(snapshot.start, "merged")
        keys = [names.period(resolution, start) for resolution, start, _ in targets]

        # Optimistic: if another replica changes one of these periods (merging another window
        # of the same day) between the reads and the writes, redis-py runs this again.
        saved = False

        def merge(pipe: Pipeline) -> None:
            nonlocal saved
            saved = False  # run again on a conflict: only the last run counts
            if pipe.exists(marker):
                pipe.multi()
                return  # this window is already merged: never count it twice
            current = [pipe.hgetall(key) for key in keys]
            pipe.multi()
            for (resolution, start, end), key, fields in zip(targets, keys, current, strict=True):
                pipe.hset(key, mapping=self._merged_fields(fields, snapshot, end))  # type: ignore[arg-type]
                pipe.zadd(names.index(resolution), {repr(start): start})
            # "" keeps the marker a set even when no share is named (a plain commit).
            pipe.sadd(marker, "", *(share.member for share in shares))
            pipe.expire(marker, MERGED_TTL_SECONDS)
            pipe.sadd(_KEYS, self._key(snapshot.attribute_key))
            saved = True

        self._client.transaction(merge, marker, *keys)
        return saved

    # Late records and revisions (store/revisions.py): the RevisionStore side.

    def merge_late(self, delta: LateDelta, now: float, spacing: float) -> bool:
        """Union late records into the merged window and its rollups, once per delta, and
        schedule the window's revision; False while the replicas have not merged it yet.

        A window no replica flushed (all were down, or it is older than their start) is saved
        from the late records alone, as a new window whose first report is the revision.
        """
        snapshot = delta.snapshot
        attribute_key = self._key(snapshot.attribute_key)
        names = _Names.of(attribute_key)
        targets = rollup_targets(snapshot, self._rollups)
        keys = [names.period(resolution, start) for resolution, start, _ in targets]
        marker, late = names.window(snapshot.start, "merged"), names.window(snapshot.start, "late")
        shares = names.window(snapshot.start, "replicas")
        revision = names.window(snapshot.start, "revision")
        due_member = _due_member(snapshot.start, attribute_key)
        kept = [self._retention.oldest_kept(name, now, self._window) for name, _, _ in targets]
        merged = False

        def merge(pipe: Pipeline) -> None:
            nonlocal merged
            merged = False  # run again on a conflict: only the last run counts
            if pipe.sismember(late, delta.id):
                pipe.multi()
                merged = True  # a retry of a merge that went through
                return
            current: list[dict[bytes, bytes]] = [pipe.hgetall(key) for key in keys]  # type: ignore[misc]
            # Not saved, yet within the window retention: a window the replicas will merge
            # (shares flushed), or one none was running for, which these records make.
            new_window = not current[0] and snapshot.start >= kept[0] and not pipe.exists(marker)
            if new_window and pipe.scard(shares):
                pipe.multi()
                return  # the replicas' merge is to come: wait for it
            pending = pipe.zscore(_REVISIONS, due_member)
            last_at = pipe.hget(revision, "at")
            pipe.multi()
            for (name, start, end), key, fields, oldest in zip(
                targets, keys, current, kept, strict=True
            ):
                # A period retention already deleted is not brought back by late records.
                if start >= oldest and (fields or new_window):
                    update = self._merged_fields(fields, snapshot, end, new_window)
                    pipe.hset(key, mapping=update)  # type: ignore[arg-type]
                    pipe.zadd(names.index(name), {repr(start): start})
            if new_window:
                pipe.sadd(marker, "")
                pipe.expire(marker, MERGED_TTL_SECONDS)
                pipe.hset(revision, "n", 0)
                pipe.sadd(_KEYS, attribute_key)
            pipe.sadd(late, delta.id)
            pipe.expire(late, self._revision_ttl(now))
            if (current[0] or new_window) and pending is None:
                due = now if last_at is None else max(now, float(last_at) + spacing)
                pipe.zadd(_REVISIONS, {due_member: due})
            pipe.expire(revision, self._revision_ttl(now))
            merged = True

        self._client.transaction(merge, late, marker, shares, revision, _REVISIONS, *keys)
        return merged

    def take_revisions(self, now: float) -> tuple[list[Revision], float | None]:
        """Each due revision in its own transaction: of replicas racing for one, only the one
        whose transaction removes it from the schedule prints it, so it is printed once."""
        revisions = []
        for member in self._client.zrangebyscore(_REVISIONS, "-inf", repr(now)):
            start, colon, attribute_key = _text(member).partition(":")
            if not colon:
                # Scheduled before several keys were counted: its window's names are gone.
                self._client.zrem(_REVISIONS, _text(member))
                continue
            taken = self._take_revision(attribute_key, float(start), now)
            if taken is not None:
                revisions.append(taken)
        first = self._client.zrange(_REVISIONS, 0, 0, withscores=True)
        return revisions, float(first[0][1]) if first else None

    def _take_revision(self, attribute_key: str, start: float, now: float) -> Revision | None:
        names = _Names.of(attribute_key)
        base = names.period(BASE, start)
        revision_key = names.window(start, "revision")
        marker, late = names.window(start, "merged"), names.window(start, "late")
        due_member = _due_member(start, attribute_key)
        taken: Revision | None = None

        def take(pipe: Pipeline) -> None:
            nonlocal taken
            taken = None
            due = pipe.zscore(_REVISIONS, due_member)
            if due is None or due > now:
                pipe.multi()
                return  # another replica took it
            fields: dict[bytes, bytes] = pipe.hgetall(base)  # type: ignore[assignment]
            last = pipe.hget(revision_key, "n")
            members = [_text(m) for m in (*pipe.smembers(marker), *pipe.smembers(late))]
            number = (1 if last is None else int(last)) + 1
            pipe.multi()
            pipe.zrem(_REVISIONS, due_member)
            pipe.hset(revision_key, mapping={"n": number, "at": repr(now)})
            pipe.expire(revision_key, self._revision_ttl(now))
            if fields:
                snapshot = _snapshot_of(start, float(fields[_END]), fields, attribute_key)
                taken = Revision(snapshot, number, _replicas_of(members))

        self._client.transaction(take, _REVISIONS, base, revision_key)
        return taken

    def _revision_ttl(self, now: float) -> int:
        """A window's late deltas and revision number live as long as the window is kept."""
        kept = now - self._retention.oldest_kept(BASE, now, self._window) + self._window
        return max(MERGED_TTL_SECONDS, round(kept))

    def _expire(self, now: float) -> None:
        """Every key's periods past retention, and those saved before several keys: the old
        ones of each index read in one round trip, deleted in another."""
        every = [_LEGACY, *(_Names.of(_text(k)) for k in self._client.smembers(_KEYS))]
        indexes = [
            (names, resolution, self._retention.oldest_kept(resolution, now, self._window))
            for resolution in (BASE, *self._rollups)
            for names in every
        ]
        reads = self._client.pipeline(transaction=False)
        for names, resolution, oldest in indexes:
            reads.zrangebyscore(names.index(resolution), "-inf", f"({oldest!r}")
        deletes = self._client.pipeline(transaction=False)
        for (names, resolution, _), members in zip(indexes, reads.execute(), strict=True):
            old = [_text(m) for m in members]
            if old:
                deletes.delete(*(names.period(resolution, m) for m in old))
                deletes.zrem(names.index(resolution), *old)
        deletes.execute()

    def query(
        self, attribute_key: str, resolution: str, first: float, last: float, key: EntryKey | None
    ) -> list[StoredPeriod]:
        attribute_key = self._key(attribute_key)
        answer = self._query(_Names.of(attribute_key), resolution, first, last, key)
        if attribute_key == self._first_key:
            # Saved before several keys were counted: the first key's too.
            legacy = self._query(_LEGACY, resolution, first, last, key)
            if legacy:
                answer = _union_periods([*legacy, *answer], self._lg_k, self._max_patterns)
        return answer

    def _query(
        self, names: _Names, resolution: str, first: float, last: float, key: EntryKey | None
    ) -> list[StoredPeriod]:
        starts = [
            _text(m) for m in self._client.zrangebyscore(names.index(resolution), first, last)
        ]
        pipe = self._client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(names.period(resolution, start))
        answer = []
        for start, fields in zip(starts, pipe.execute(), strict=True):
            if not fields:
                continue
            entries = tuple(
                PeriodEntry(_key_of(field), counts.records, counts.sketch, counts.patterns)
                for field, counts in _entries(fields).items()
                if key is None or _key_of(field) == key
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

    def attribute_keys(self) -> list[str]:
        held = {_text(k) for k in self._client.smembers(_KEYS)}
        pipe = self._client.pipeline(transaction=False)
        for resolution in RESOLUTIONS:
            pipe.exists(_LEGACY.index(resolution))
        if any(pipe.execute()):
            held.add(self._first_key)
        return sorted(held)

    def stored_bytes(self) -> int:
        try:
            info: dict[str, Any] = self._client.info("memory")
        except redis.RedisError:
            return 0
        return int(info.get("used_memory", 0))

    def close(self) -> None:
        self._client.close()

    def _merged_fields_of(
        self, fields: Mapping[bytes, bytes], snapshots: Sequence[WindowSnapshot], end: float
    ) -> dict[bytes, bytes]:
        """The period with several new windows unioned in at once."""
        windows = int(fields.get(_WINDOWS, b"0")) + len(snapshots)
        merged: dict[bytes, bytes] = {_END: repr(end).encode(), _WINDOWS: str(windows).encode()}
        grouped: dict[bytes, tuple[int, list[bytes], list[tuple[PatternCount, ...]]]] = {}
        for snapshot in snapshots:
            for tally in snapshot.tallies:
                field = _field(entry_key(tally))
                records, sketches, tables = grouped.get(field, (0, [], []))
                sketches.append(tally.sketch)
                tables.append(tally.patterns)
                grouped[field] = (records + tally.records, sketches, tables)
        for field, (records, sketches, tables) in grouped.items():
            if field in fields:
                # Without new patterns the stored ones are not read: their field stays as is.
                stored = _entry_of(fields, field, with_patterns=any(tables))
                records += stored.records
                sketches = [stored.sketch, *sketches]
                tables = [stored.patterns, *tables]
            sketch = sketches[0] if len(sketches) == 1 else union_serialized(sketches, self._lg_k)
            patterns = merge_pattern_tables(tables, self._max_patterns)
            merged.update(_entry_fields(field, EntryCounts(records, sketch, patterns)))
        return merged

    def _merged_fields(
        self,
        fields: Mapping[bytes, bytes],
        snapshot: WindowSnapshot,
        end: float,
        new_window: bool = True,
    ) -> dict[bytes, bytes]:
        """The period with the snapshot unioned in; a late share adds to a window already
        counted."""
        windows = int(fields.get(_WINDOWS, b"0")) + (1 if new_window else 0)
        merged: dict[bytes, bytes] = {_END: repr(end).encode(), _WINDOWS: str(windows).encode()}
        for tally in snapshot.tallies:
            field = _field(entry_key(tally))
            existing = None
            if field in fields:
                # Without new patterns the stored ones are not read: their field stays as is.
                existing = _entry_of(fields, field, with_patterns=bool(tally.patterns))
            counts = merge_entry(existing, tally, self._lg_k, self._max_patterns)
            merged.update(_entry_fields(field, counts))
        return merged


_REVISIONS = f"{PREFIX}revisions"


def _due_member(start: float, attribute_key: str) -> str:
    """A window in the revisions schedule: the start first (it holds no ":"), then the key."""
    return f"{start!r}:{attribute_key}"


def _union_periods(
    periods: Sequence[StoredPeriod], lg_k: int, max_patterns: int
) -> list[StoredPeriod]:
    """Periods of the same start as one: windows and records added, sketches unioned, pattern
    tables merged."""
    by_start: dict[float, list[StoredPeriod]] = {}
    for period in periods:
        by_start.setdefault(period.start, []).append(period)
    answer = []
    for start in sorted(by_start):
        group = by_start[start]
        merged: dict[EntryKey, PeriodEntry] = {}
        for period in group:
            for entry in period.entries:
                before = merged.get(entry.key)
                merged[entry.key] = (
                    entry
                    if before is None
                    else PeriodEntry(
                        entry.key,
                        before.records + entry.records,
                        union_serialized((before.sketch, entry.sketch), lg_k),
                        merge_pattern_tables((before.patterns, entry.patterns), max_patterns),
                    )
                )
        answer.append(
            StoredPeriod(
                group[0].resolution,
                start,
                group[0].end,
                sum(period.windows for period in group),
                tuple(merged.values()),
            )
        )
    return answer


def _replicas_of(members: Sequence[str]) -> tuple[str, ...]:
    """Replica names from merged shares (`<incarnation>:<replica>`) and late deltas
    (`L<sequence>:<incarnation>:<replica>`; an incarnation is hex, never starting with L)."""
    names = set()
    for member in filter(None, members):
        share = member.partition(":")[2] if member.startswith("L") else member
        names.add(ShareId.of_member(share).replica)
    return tuple(sorted(names))
