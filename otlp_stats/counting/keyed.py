"""Several attribute keys counted side by side: one aggregator's windows per key.

Each key has its own values, sketches, --max-values cap and overflow entry; the windows close
together, so a window's reports come out one per key, in the keys' order. With one key the
service uses a plain Aggregator: this is only the several-keys path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain

from otlp_stats.counting.aggregator import (
    Added,
    Aggregator,
    ResolvedBatch,
    WindowReport,
    WindowSnapshot,
)
from otlp_stats.counting.sketches import DEFAULT_LG_K
from otlp_stats.patterns.tally import DEFAULT_MAX_PATTERNS, DEFAULT_TOP_PATTERNS


class KeyedAggregator(Aggregator):
    """An Aggregator for the first key that owns one more per further key.

    Everything that reads or closes windows (reporter, store keeper, replicas, replay) sees one
    aggregator; every report and snapshot it hands out names its key (`attribute_key`).
    Records are the same records under every key, so what is said of records as such (late,
    counted) is the first key's figure, never a sum over keys.
    """

    def __init__(
        self,
        keys: Sequence[str],
        window_seconds: float,
        start_time: float,
        max_values: int = 10_000,
        lg_k: int = DEFAULT_LG_K,
        keep_sketches: bool = False,
        lateness: float = 0.0,
        max_patterns: int = DEFAULT_MAX_PATTERNS,
        top_patterns: int = DEFAULT_TOP_PATTERNS,
    ) -> None:
        if not keys:
            raise ValueError("at least one attribute key")
        first, *others = keys
        options = (window_seconds, start_time, max_values, lg_k, keep_sketches, lateness)
        super().__init__(*options, first, max_patterns, top_patterns)
        self.keys = tuple(keys)
        self._others = [Aggregator(*options, key, max_patterns, top_patterns) for key in others]

    def _every(self) -> list[Aggregator]:
        # Aggregator methods called unbound on self, so the first key's are the base class's.
        return [self, *self._others]

    def add_keys(self, arrival: float, batches: Sequence[ResolvedBatch]) -> int:
        """Arrival time: one request's batch per key, in the keys' order; the index of the
        window they went to (the same for every key: the windows close together)."""
        first, *others = batches
        index = Aggregator.add(self, arrival, first)
        for aggregator, batch in zip(self._others, others, strict=True):
            aggregator.add(arrival, batch)
        return index

    def replay_key(self, attribute_key: str, index: int, batch: ResolvedBatch) -> bool:
        aggregator = self._owner(attribute_key)
        if aggregator is None:
            return False
        if aggregator is self:
            Aggregator.replay_key(self, attribute_key, index, batch)
        else:
            aggregator.replay_key(attribute_key, index, batch)
        # The windows close together: a window reopened for one key is every key's next.
        first = min(a.first_open_index for a in self._every())
        for each in self._every():
            each._next_index = first
        return True

    def add_windows_keys(
        self, arrival: float, windows: Sequence[Mapping[int, ResolvedBatch]]
    ) -> Added:
        """Event time: one request's windows per key. A window is closed or not whatever the
        key, so the late records are the same under every key: `late` is the first key's and
        `late_by_key` every key's, for a store that merges them into each key's window."""
        first, *others = windows
        added = Aggregator.add_windows(self, arrival, first)
        late_by_key = {self.attribute_key: added.late}
        for aggregator, batches in zip(self._others, others, strict=True):
            late_by_key[aggregator.attribute_key] = aggregator.add_windows(arrival, batches).late
        if not added.late:
            return added
        return Added(added.counted, added.late, late_by_key)

    def merge(self, snapshot: WindowSnapshot) -> bool:
        aggregator = self._owner(snapshot.attribute_key)
        if aggregator is None:
            return False
        if aggregator is self:
            return Aggregator.merge(self, snapshot)
        return aggregator.merge(snapshot)

    def restore(self, snapshots: Sequence[WindowSnapshot]) -> None:
        """Each key's snapshots to its aggregator ("" is the first key's, saved before several
        keys existed); a key no longer configured is left in the store."""
        for aggregator in self._every():
            mine = [s for s in snapshots if self._owner(s.attribute_key) is aggregator]
            if aggregator is self:
                Aggregator.restore(self, mine)
            else:
                aggregator.restore(mine)
        # The windows close together: the earliest restored window is every key's next.
        first = min(aggregator.first_open_index for aggregator in self._every())
        for aggregator in self._every():
            aggregator._next_index = first

    def _owner(self, key: str) -> Aggregator | None:
        if key in ("", self.attribute_key):
            return self
        return next((a for a in self._others if a.attribute_key == key), None)

    def close_until(self, watermark: float, empty: bool = True) -> list[WindowReport]:
        return _by_window(
            [
                Aggregator.close_until(self, watermark, empty),
                *(aggregator.close_until(watermark, empty) for aggregator in self._others),
            ]
        )

    def close_all(self, now: float) -> list[WindowReport]:
        # Every key's complete windows first; then each key's rest, the current one partial
        # (the base close_all's own close_until finds nothing left to close).
        complete = self.close_until(now)
        rest = [Aggregator.close_all(self, now), *(a.close_all(now) for a in self._others)]
        return complete + _by_window(rest)

    def snapshot(self) -> list[WindowSnapshot]:
        snapshots = [Aggregator.snapshot(self)]
        snapshots += [aggregator.snapshot() for aggregator in self._others]
        return sorted(chain.from_iterable(snapshots), key=_start)

    @property
    def open_windows(self) -> int:
        return max(len(aggregator._windows) for aggregator in self._every())

    @property
    def tracked_values(self) -> int:
        return sum(
            len(window.values)
            for aggregator in self._every()
            for window in aggregator._windows.values()
        )

    @property
    def sketch_bytes(self) -> int:
        return sum(
            tally.counter.memory_bytes
            for aggregator in self._every()
            for window in aggregator._windows.values()
            for tally in window.values.values()
        )

    @property
    def tracked_patterns(self) -> int:
        return sum(
            window.tracked_patterns
            for aggregator in self._every()
            for window in aggregator._windows.values()
        )


def _start(item: WindowSnapshot | WindowReport) -> float:
    return item.start


def _by_window(per_key: Iterable[list[WindowReport]]) -> list[WindowReport]:
    """Every key's reports, window by window, the keys in order within a window (the sort is
    stable and the lists come in the keys' order)."""
    return sorted(chain.from_iterable(per_key), key=_start)


def aggregator_for(
    keys: Sequence[str],
    window_seconds: float,
    start_time: float,
    max_values: int = 10_000,
    lg_k: int = DEFAULT_LG_K,
    keep_sketches: bool = False,
    lateness: float = 0.0,
    max_patterns: int = DEFAULT_MAX_PATTERNS,
    top_patterns: int = DEFAULT_TOP_PATTERNS,
) -> Aggregator:
    """The aggregator for the configured keys: one key keeps the plain Aggregator's path."""
    options = (window_seconds, start_time, max_values, lg_k, keep_sketches, lateness)
    if len(keys) == 1:
        return Aggregator(*options, keys[0], max_patterns, top_patterns)
    return KeyedAggregator(keys, *options, max_patterns, top_patterns)
