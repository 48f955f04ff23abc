"""The in-process store: rollups and recent windows answer queries, nothing survives a restart."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from otlp_stats.counting.aggregator import WindowSnapshot
from otlp_stats.counting.sketches import DEFAULT_LG_K
from otlp_stats.patterns.tally import DEFAULT_MAX_PATTERNS
from otlp_stats.store.base import (
    EntryCounts,
    EntryKey,
    PeriodEntry,
    StoredPeriod,
    attribute_key_of,
    entry_key,
    merge_entry,
    rollup_targets,
)
from otlp_stats.store.periods import BASE, Retention


@dataclass
class _Period:
    end: float
    windows: int = 0
    entries: dict[EntryKey, EntryCounts] = field(default_factory=dict)


class MemoryStore:
    def __init__(
        self,
        rollups: Sequence[str],
        retention: Retention,
        window: float,
        lg_k: int = DEFAULT_LG_K,
        *,
        first_key: str,
        max_patterns: int = DEFAULT_MAX_PATTERNS,
    ) -> None:
        """`first_key`: the first configured attribute key, whose a snapshot naming none is;
        `max_patterns`: the bound of each value's merged pattern table."""
        self._first_key = first_key
        self._max_patterns = max_patterns
        self._rollups = tuple(rollups)
        self._retention = retention
        self._window = window
        self._lg_k = lg_k
        # By (attribute key, resolution, start): keys are kept apart.
        self._periods: dict[tuple[str, str, float], _Period] = {}
        # Writes come from the keeper's thread, queries from the admin's: one lock for both.
        self._lock = threading.Lock()

    @property
    def durable(self) -> bool:
        return False

    def load_open(self) -> list[WindowSnapshot]:
        return []

    def commit(
        self,
        closed: Sequence[WindowSnapshot],
        open_windows: Sequence[WindowSnapshot] | None,
        now: float,
        journal_seq: int | None = None,
    ) -> None:
        with self._lock:
            for snapshot in closed:
                attribute_key = attribute_key_of(snapshot, self._first_key)
                if (attribute_key, BASE, snapshot.start) in self._periods:
                    continue
                for resolution, start, end in rollup_targets(snapshot, self._rollups):
                    period = self._periods.setdefault(
                        (attribute_key, resolution, start), _Period(end)
                    )
                    period.windows += 1
                    for tally in snapshot.tallies:
                        key = entry_key(tally)
                        period.entries[key] = merge_entry(
                            period.entries.get(key), tally, self._lg_k, self._max_patterns
                        )
            self._expire(now)

    def _expire(self, now: float) -> None:
        oldest = {
            resolution: self._retention.oldest_kept(resolution, now, self._window)
            for resolution in (BASE, *self._rollups)
        }
        for expired in [k for k in self._periods if k[2] < oldest[k[1]]]:
            del self._periods[expired]

    def query(
        self, attribute_key: str, resolution: str, first: float, last: float, key: EntryKey | None
    ) -> list[StoredPeriod]:
        with self._lock:
            found = sorted(
                (
                    (start, period)
                    for (of_key, name, start), period in self._periods.items()
                    if of_key == attribute_key and name == resolution and first <= start <= last
                ),
                key=lambda item: item[0],
            )
            return [
                StoredPeriod(
                    resolution,
                    start,
                    period.end,
                    period.windows,
                    tuple(
                        PeriodEntry(k, counts.records, counts.sketch, counts.patterns)
                        for k, counts in period.entries.items()
                        if key is None or k == key
                    ),
                )
                for start, period in found
            ]

    def attribute_keys(self) -> list[str]:
        with self._lock:
            return sorted({attribute_key for attribute_key, _, _ in self._periods})

    def stored_bytes(self) -> int:
        with self._lock:
            return sum(
                len(counts.sketch)
                for period in self._periods.values()
                for counts in period.entries.values()
            )

    def close(self) -> None:
        pass
