"""What every state store does, and the plain records it stores and answers with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from otlp_stats.counting.aggregator import TallySnapshot, WindowSnapshot
from otlp_stats.counting.sketches import DEFAULT_LG_K, union_serialized
from otlp_stats.patterns.tally import DEFAULT_MAX_PATTERNS, PatternCount, merge_counts
from otlp_stats.store.periods import BASE, period_bounds

# An entry of a period is identified by its kind and its value ("" for missing and overflow):
# SQL keys cannot hold NULL values usefully, so the missing value gets its own kind.
KIND_VALUE = 0
KIND_MISSING = 1
KIND_OVERFLOW = 2
EntryKey = tuple[int, str]


def entry_key(tally: TallySnapshot) -> EntryKey:
    if tally.overflow:
        return KIND_OVERFLOW, ""
    if tally.value is None:
        return KIND_MISSING, ""
    return KIND_VALUE, tally.value


def attribute_key_of(snapshot: WindowSnapshot, first_key: str) -> str:
    """The attribute key a snapshot's counts belong to: one written before several keys were
    counted names none ("") and is the first configured key's."""
    return snapshot.attribute_key or first_key


@dataclass(frozen=True)
class EntryCounts:
    """One value's counts in a stored window or period: its records, the sketch of its
    messages, and its pattern table (patterns/tally.py; empty if stored before patterns)."""

    records: int
    sketch: bytes
    patterns: tuple[PatternCount, ...] = ()


@dataclass(frozen=True)
class PeriodEntry:
    key: EntryKey
    records: int
    sketch: bytes
    patterns: tuple[PatternCount, ...] = ()


@dataclass(frozen=True)
class StoredPeriod:
    """A base window or a rollup period as stored: one merged sketch per value."""

    resolution: str
    start: float
    end: float
    windows: int
    entries: tuple[PeriodEntry, ...]


class StateStore(Protocol):
    """Where closed windows, rollups and the open-window checkpoint live.

    Writes come from one thread only (the keeper's writer); queries may come from any thread.
    Every window, rollup period, checkpoint and revision is kept per attribute key: snapshots
    of one window for two keys are stored apart and never merged into each other.
    """

    @property
    def durable(self) -> bool:
        """Whether the open windows are worth checkpointing (they survive a restart)."""
        ...

    def load_open(self) -> list[WindowSnapshot]: ...

    def commit(
        self,
        closed: Sequence[WindowSnapshot],
        open_windows: Sequence[WindowSnapshot] | None,
        now: float,
        journal_seq: int | None = None,
    ) -> None:
        """Atomically: save closed windows and merge them into their rollups (a window already
        saved for its attribute key is skipped, so nothing counts twice), replace the
        open-window checkpoint unless None, and drop what retention no longer keeps.
        `journal_seq`: the last request the open windows hold, whose journal entries
        (--durability ack) they replace."""
        ...

    def query(
        self, attribute_key: str, resolution: str, first: float, last: float, key: EntryKey | None
    ) -> list[StoredPeriod]:
        """The attribute key's periods of `resolution` starting within [first, last], oldest
        first; `key` picks one value's entries (None: all)."""
        ...

    def attribute_keys(self) -> list[str]:
        """The attribute keys the store holds periods of, sorted."""
        ...

    def stored_bytes(self) -> int: ...

    def close(self) -> None: ...


def rollup_targets(
    snapshot: WindowSnapshot, rollups: Sequence[str]
) -> list[tuple[str, float, float]]:
    """(resolution, start, end) of the base window itself and every period containing it."""
    targets = [(BASE, snapshot.start, snapshot.end)]
    targets += [(name, *period_bounds(name, snapshot.start)) for name in rollups]
    return targets


def merge_entry(
    existing: EntryCounts | None,
    tally: TallySnapshot,
    lg_k: int = DEFAULT_LG_K,
    max_patterns: int = DEFAULT_MAX_PATTERNS,
) -> EntryCounts:
    """Records add up; messages are unioned, so one seen in two windows counts once; pattern
    tables merge (records added, the smallest example kept), bounded by `max_patterns`."""
    if existing is None:
        return EntryCounts(
            tally.records, tally.sketch, merge_pattern_tables((tally.patterns,), max_patterns)
        )
    return EntryCounts(
        existing.records + tally.records,
        union_serialized((existing.sketch, tally.sketch), lg_k),
        merge_pattern_tables((existing.patterns, tally.patterns), max_patterns),
    )


def merge_pattern_tables(
    tables: Sequence[tuple[PatternCount, ...]], max_patterns: int = DEFAULT_MAX_PATTERNS
) -> tuple[PatternCount, ...]:
    """The tables of one value as one; nothing to merge (values counted before patterns, or
    without them) stays empty without building a table."""
    tables = [table for table in tables if table]
    if not tables:
        return ()
    return merge_counts(tables, max_patterns)
