"""Pattern tallies: one attribute value's patterns in a window, each with its records and one
example message, bounded, and mergeable across requests, replicas and rollups.

What makes them merge as distinct messages do: a pattern is a pure function of its message
(masker), records add, and the example kept is the smallest of those seen (by its UTF-8 bytes),
so the same traffic gives the same table whatever its order and however it was split, as long
as the value has at most `max_patterns` patterns. Past that, the patterns already tracked keep
counting and the records of any other pattern go to one overflow entry, `OVERFLOW_PATTERN`: which
patterns are tracked then depends on which came first, as `--max-values` does for values.

The similarity merge (merge.py) runs only when a table is reported (`reported_patterns`): it is a
pure function of the set, so a window's, a day's or a month's report agree with their parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from otlp_stats.patterns.merge import DEFAULT_SIMILARITY, merge_patterns

# The entry that counts the records of patterns past --max-patterns (its example is empty).
OVERFLOW_PATTERN = "__overflow__"
DEFAULT_MAX_PATTERNS = 1_000
# The longest example kept, in characters: a table holds one per pattern, and a message can be
# megabytes. A prefix keeps the order (the smallest example's prefix is the smallest prefix),
# so tables still merge the same whatever the order.
MAX_EXAMPLE_CHARS = 1_024
DEFAULT_TOP_PATTERNS = 3


class PatternCount(NamedTuple):
    """A pattern, its records, and one message it came from (a tuple: one is made per pattern
    per value per request, so it must be cheap to build)."""

    pattern: str
    records: int
    example: str

    @property
    def overflow(self) -> bool:
        return self.pattern == OVERFLOW_PATTERN


class PatternTable:
    """One value's patterns, at most `max_patterns` of them, the rest's records in overflow.

    Owned by whoever owns the value's window (the aggregator, a store's merge): not shared.
    """

    __slots__ = ("_examples", "_records", "max_patterns", "overflow_records")

    def __init__(self, max_patterns: int = DEFAULT_MAX_PATTERNS) -> None:
        if max_patterns < 1:
            raise ValueError("max_patterns must be at least 1")
        self.max_patterns = max_patterns
        self.overflow_records = 0
        self._records: dict[str, int] = {}
        self._examples: dict[str, str] = {}

    def add(self, pattern: str, records: int, example: str) -> None:
        """`records` more records of `pattern`, one of which was `example`."""
        known = self._records.get(pattern)
        if known is not None:
            self._records[pattern] = known + records
            # Patterns and examples are valid str (never lone surrogates), and for those the
            # order of code points is the order of their UTF-8 bytes, which C compares.
            if example < self._examples[pattern]:
                self._examples[pattern] = example[:MAX_EXAMPLE_CHARS]
        elif pattern == OVERFLOW_PATTERN or len(self._records) >= self.max_patterns:
            self.overflow_records += records
        else:
            self._records[pattern] = records
            self._examples[pattern] = example[:MAX_EXAMPLE_CHARS]

    def merge(self, counts: Iterable[PatternCount]) -> None:
        """add() for each; a pattern already tracked, the usual case per request, is added
        here without the call (the same steps as add's first branch)."""
        tracked = self._records
        examples = self._examples
        for pattern, records, example in counts:
            known = tracked.get(pattern)
            if known is None:
                self.add(pattern, records, example)
                continue
            tracked[pattern] = known + records
            if example < examples[pattern]:
                examples[pattern] = example[:MAX_EXAMPLE_CHARS]

    def __len__(self) -> int:
        """Patterns tracked (the overflow entry not included)."""
        return len(self._records)

    @property
    def records(self) -> int:
        return sum(self._records.values()) + self.overflow_records

    def counts(self) -> tuple[PatternCount, ...]:
        """Every tracked pattern, most records first (ties by pattern), then the overflow."""
        ordered = sorted(self._records.items(), key=lambda item: (-item[1], item[0]))
        counts = [PatternCount(p, records, self._examples[p]) for p, records in ordered]
        if self.overflow_records:
            counts.append(PatternCount(OVERFLOW_PATTERN, self.overflow_records, ""))
        return tuple(counts)

    @classmethod
    def of(cls, counts: Iterable[PatternCount], max_patterns: int) -> PatternTable:
        table = cls(max_patterns)
        table.merge(counts)
        return table


def merge_counts(
    groups: Iterable[Iterable[PatternCount]], max_patterns: int = DEFAULT_MAX_PATTERNS
) -> tuple[PatternCount, ...]:
    """Several tables of the same value (replicas, the windows of a day) as one."""
    table = PatternTable(max_patterns)
    for counts in groups:
        table.merge(counts)
    return table.counts()


@dataclass(frozen=True, slots=True)
class ReportedPatterns:
    """What a report says of one value's patterns: how many after the similarity merge
    (the overflow entry counts as one if present), and the top ones by records."""

    distinct: int
    top: tuple[PatternCount, ...]


def reported_patterns(
    counts: Iterable[PatternCount], top: int, similarity: float = DEFAULT_SIMILARITY
) -> ReportedPatterns:
    """The similarity merge over a value's patterns, then its `top` patterns by records."""
    counts = tuple(counts)
    final = merge_patterns((c.pattern for c in counts if not c.overflow), similarity)
    merged = PatternTable(max(1, len(counts)))
    for count in counts:
        pattern = count.pattern if count.overflow else final[count.pattern]
        merged.add(pattern, count.records, count.example)
    distinct = len(merged) + (1 if merged.overflow_records else 0)
    return ReportedPatterns(distinct, merged.counts()[: max(0, top)])


def encode_counts(counts: Iterable[PatternCount]) -> bytes:
    """A table as bytes for a store: a JSON array of [pattern, records, example].

    Patterns and examples are valid UTF-8 (whoever decodes a body replaces invalid bytes)."""
    return orjson.dumps([[c.pattern, c.records, c.example] for c in counts])


def decode_counts(blob: bytes | str | None) -> tuple[PatternCount, ...]:
    """encode_counts' bytes back (empty for None or an empty blob: stored before patterns)."""
    if not blob:
        return ()
    return tuple(PatternCount(str(p), int(r), str(e)) for p, r, e in orjson.loads(blob))
