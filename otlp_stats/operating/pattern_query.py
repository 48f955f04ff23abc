"""Top patterns over stored periods (/v1/patterns, `otlp-stats query --patterns`): each value's
pattern tables merged over every period in the range, then reported as a window's are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from otlp_stats.clock import Clock
from otlp_stats.operating.query import (
    DistinctQuery,
    QueryError,
    QueryScope,
    StoreQueries,
    entry_filter,
    entry_label,
    parse_query,
)
from otlp_stats.patterns.tally import (
    DEFAULT_TOP_PATTERNS,
    PatternCount,
    merge_counts,
    reported_patterns,
)
from otlp_stats.reporting.reporter import format_timestamp
from otlp_stats.store.base import KIND_MISSING, KIND_OVERFLOW, EntryKey, StateStore, StoredPeriod

# `top=all`: every pattern of each value.
ALL = "all"


@dataclass(frozen=True)
class PatternQuery:
    """Which periods and values (as /v1/distinct asks), and how many patterns of each value:
    `top` None for all of them."""

    periods: DistinctQuery
    top: int | None


def parse_top(text: str | None) -> int | None:
    """`top=N` (0 or more; 0: the counts without the list) or `top=all`; default 3, as reports."""
    if text is None:
        return DEFAULT_TOP_PATTERNS
    if text.strip() == ALL:
        return None
    try:
        top = int(text)
    except ValueError:
        top = -1
    if top < 0:
        raise QueryError(400, f"top={text!r} is not a number of patterns (0 or more) or {ALL}")
    return top


def parse_pattern_query(params: Mapping[str, str], scope: QueryScope, now: float) -> PatternQuery:
    """The periods checked as /v1/distinct checks them (400, 404), then `top`."""
    periods = parse_query(params, scope, now)
    return PatternQuery(periods, parse_top(params.get("top")))


@dataclass
class _ValuePatterns:
    """One value's counts over the periods: records, and its tables to merge."""

    records: int = 0
    tables: list[tuple[PatternCount, ...]] = field(default_factory=list)

    def add(self, records: int, patterns: tuple[PatternCount, ...]) -> None:
        self.records += records
        if patterns:
            self.tables.append(patterns)


def answer_patterns(
    store: StateStore, query: PatternQuery, scope: QueryScope, now: float
) -> dict[str, Any]:
    """The JSON answer: per value, over all the periods asked for, its records, how many
    patterns after the similarity merge, and the top ones with records and an example."""
    asked = query.periods
    periods = store.query(
        asked.attribute_key,
        asked.resolution,
        asked.first,
        asked.last,
        entry_filter(asked.value, scope.missing_label),
    )
    by_value = _by_value(periods)
    values = [_value_to_dict(key, counts, query.top, scope) for key, counts in by_value.items()]
    values.sort(key=lambda v: (v["overflow"], -v["distinct_patterns"], -v["records"], v["value"]))
    return {
        "attribute_key": asked.attribute_key,
        "resolution": asked.resolution,
        "from": format_timestamp(asked.first),
        "to": format_timestamp(asked.last),
        "value": asked.value,
        "top": ALL if query.top is None else query.top,
        "periods": len(periods),
        "windows": sum(period.windows for period in periods),
        "complete": all(period.end <= now for period in periods),
        "values": values,
    }


def _by_value(periods: Sequence[StoredPeriod]) -> dict[EntryKey, _ValuePatterns]:
    by_value: dict[EntryKey, _ValuePatterns] = {}
    for period in periods:
        for entry in period.entries:
            by_value.setdefault(entry.key, _ValuePatterns()).add(entry.records, entry.patterns)
    return by_value


def _value_to_dict(
    key: EntryKey, counts: _ValuePatterns, top: int | None, scope: QueryScope
) -> dict[str, Any]:
    kind, value = key
    merged = merge_counts(counts.tables, scope.max_patterns)
    reported = reported_patterns(merged, len(merged) if top is None else top)
    return {
        "value": entry_label(kind, value, scope.missing_label),
        "missing": kind == KIND_MISSING,
        "overflow": kind == KIND_OVERFLOW,
        "records": counts.records,
        # Fewer than `records` when some periods were stored before patterns were counted.
        "pattern_records": sum(count.records for count in merged),
        "distinct_patterns": reported.distinct,
        "top_patterns": [
            {"pattern": count.pattern, "records": count.records, "example": count.example}
            for count in reported.top
        ],
    }


# In the table, an example longer than this is cut (the JSON answer has it whole).
_EXAMPLE_WIDTH = 80


def render_patterns_table(answer: Mapping[str, Any]) -> str:
    """The answer as a plain table: a line per value, and under it a line per top pattern."""
    rows: list[Sequence[str]] = [("value", "patterns", "records", "pattern", "example")]
    for value in answer["values"]:
        rows.append(
            (value["value"], str(value["distinct_patterns"]), str(value["records"]), "", "")
        )
        for count in value["top_patterns"]:
            example = _printable(count["example"])
            if len(example) > _EXAMPLE_WIDTH:
                example = example[: _EXAMPLE_WIDTH - 3] + "..."
            rows.append(("", "", str(count["records"]), _printable(count["pattern"]), example))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return (
        "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        )
        + "\n"
    )


def _printable(text: str) -> str:
    """One line per row whatever a message holds: line breaks and tabs escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


class PatternQueries(StoreQueries[PatternQuery]):
    """Answers /v1/patterns."""

    def __init__(self, store: StateStore, scope: QueryScope, clock: Clock) -> None:
        super().__init__(store, scope, clock, parse_pattern_query, answer_patterns)
