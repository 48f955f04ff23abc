"""Distinct-count questions over stored periods: parsed once, answered the same for HTTP and CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from otlp_stats.clock import Clock
from otlp_stats.config import Settings
from otlp_stats.counting.aggregator import OVERFLOW_LABEL
from otlp_stats.counting.sketches import (
    DEFAULT_LG_K,
    DistinctEstimate,
    estimate_serialized,
    union_serialized,
)
from otlp_stats.patterns.tally import DEFAULT_MAX_PATTERNS
from otlp_stats.reporting.reporter import format_timestamp
from otlp_stats.store.base import (
    KIND_MISSING,
    KIND_OVERFLOW,
    KIND_VALUE,
    EntryKey,
    StateStore,
    StoredPeriod,
)
from otlp_stats.store.periods import BASE, Retention, period_bounds


class QueryError(ValueError):
    """A question the store cannot answer; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# A route's parsed query (DistinctQuery, PatternQuery).
Q = TypeVar("Q")


@dataclass(frozen=True)
class QueryScope:
    """What the store holds: the resolutions kept, for how long, the base window length, and
    the attribute keys that may be asked for (the first is the default)."""

    rollups: tuple[str, ...]
    retention: Retention
    window: float
    missing_label: str
    lg_k: int = DEFAULT_LG_K
    attribute_keys: tuple[str, ...] = ("service.name",)
    # The bound of a value's pattern table merged over the periods asked for, as in the store.
    max_patterns: int = DEFAULT_MAX_PATTERNS


@dataclass(frozen=True)
class DistinctQuery:
    resolution: str
    first: float
    last: float
    value: str | None
    attribute_key: str


def parse_instant(text: str, name: str) -> float:
    """A date (2026-11-01, midnight UTC) or an RFC 3339 time; without a zone, UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(400, f"{name}={text!r} is not a date (2026-11-01) or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_query(params: Mapping[str, str], scope: QueryScope, now: float) -> DistinctQuery:
    """Check the question against what is kept: 400 for a bad or future one, 404 past retention."""
    resolution = params.get("resolution", "1d")
    kept = (BASE, *scope.rollups)
    if resolution not in kept:
        raise QueryError(400, f"resolution={resolution!r}: this store keeps {', '.join(kept)}")
    if "from" not in params:
        raise QueryError(400, "from is required (a date such as 2026-11-01, or a time)")
    first = _period_start(resolution, parse_instant(params["from"], "from"), scope.window)
    last = _period_start(
        resolution, parse_instant(params.get("to", params["from"]), "to"), scope.window
    )
    if last < first:
        raise QueryError(400, "to is before from")
    if first > now:
        raise QueryError(400, f"from={params['from']!r} is in the future")
    oldest = scope.retention.oldest_kept(resolution, now, scope.window)
    if last < oldest:
        raise QueryError(
            404,
            f"{resolution} periods are kept for {scope.retention.span(resolution)}: "
            f"nothing before {format_timestamp(oldest)} is kept",
        )
    value = params.get("value") or None
    attribute_key = _attribute_key(params, scope)
    return DistinctQuery(resolution, max(first, oldest), min(last, now), value, attribute_key)


def _attribute_key(params: Mapping[str, str], scope: QueryScope) -> str:
    """`key=`: the attribute key whose values to answer for; the first configured one if not
    named. `value=` stays what it was: one value of that key."""
    attribute_key = params.get("key") or scope.attribute_keys[0]
    if attribute_key not in scope.attribute_keys:
        raise QueryError(
            400,
            f"key={attribute_key!r} is not an attribute key counted here; the keys are "
            f"{', '.join(scope.attribute_keys)}",
        )
    return attribute_key


def stored_key_default(configured: Sequence[str], held: Sequence[str]) -> str:
    """The key to answer for when none is named, reading a store without the service's own
    settings (the command line): the first configured key, unless the store holds other keys
    only; then its one key, or, holding several, none is guessed."""
    first = configured[0]
    if not held or first in held:
        return first
    if len(held) == 1:
        return held[0]
    raise QueryError(
        400,
        f"the store holds the attribute keys {', '.join(held)}, not {first}: name one with --key",
    )


def _period_start(resolution: str, instant: float, window: float) -> float:
    if resolution == BASE:
        return (instant // window) * window
    return period_bounds(resolution, instant)[0]


def entry_filter(value: str | None, missing_label: str) -> EntryKey | None:
    if value is None:
        return None
    if value == missing_label:
        return KIND_MISSING, ""
    if value == OVERFLOW_LABEL:
        return KIND_OVERFLOW, ""
    return KIND_VALUE, value


def answer_query(
    store: StateStore, query: DistinctQuery, scope: QueryScope, now: float
) -> dict[str, Any]:
    """The JSON answer: per period, per value, distinct messages with bounds, records, and
    whether the period is complete (its end has passed)."""
    periods = store.query(
        query.attribute_key,
        query.resolution,
        query.first,
        query.last,
        entry_filter(query.value, scope.missing_label),
    )
    return {
        "attribute_key": query.attribute_key,
        "resolution": query.resolution,
        "from": format_timestamp(query.first),
        "to": format_timestamp(query.last),
        "value": query.value,
        "periods": [_period_to_dict(period, scope, now) for period in periods],
    }


def _period_to_dict(period: StoredPeriod, scope: QueryScope, now: float) -> dict[str, Any]:
    values = [
        {
            "value": entry_label(kind, value, scope.missing_label),
            "missing": kind == KIND_MISSING,
            "overflow": kind == KIND_OVERFLOW,
            **_distinct_fields(estimate_serialized(entry.sketch)),
            "records": entry.records,
        }
        for entry in period.entries
        for kind, value in (entry.key,)
    ]
    values.sort(key=lambda v: (v["overflow"], -v["distinct_messages"], -v["records"], v["value"]))
    total = (
        estimate_serialized(union_serialized((e.sketch for e in period.entries), scope.lg_k))
        if period.entries
        else DistinctEstimate.exact(0)
    )
    return {
        "period_start": format_timestamp(period.start),
        "period_end": format_timestamp(period.end),
        "complete": period.end <= now,
        "windows": period.windows,
        "records": sum(entry.records for entry in period.entries),
        **_distinct_fields(total),
        "values": values,
    }


def entry_label(kind: int, value: str, missing_label: str) -> str:
    """How answers name an entry's value: the missing label, __overflow__, or itself."""
    if kind == KIND_MISSING:
        return missing_label
    if kind == KIND_OVERFLOW:
        return OVERFLOW_LABEL
    return value


def _distinct_fields(distinct: DistinctEstimate) -> dict[str, Any]:
    return {
        "distinct_messages": distinct.value,
        "estimated": distinct.estimated,
        "lower_bound": distinct.lower_bound,
        "upper_bound": distinct.upper_bound,
    }


def render_table(answer: Mapping[str, Any]) -> str:
    """The answer as a plain table, one line per period and value, for the command line."""
    rows: list[Sequence[str]] = [("period", "value", "distinct", "bounds", "records", "complete")]
    for period in answer["periods"]:
        for entry in [*period["values"], {**period, "value": "total"}]:
            estimate = (
                f"~{entry['distinct_messages']}"
                if entry["estimated"]
                else str(entry["distinct_messages"])
            )
            bounds = f"{entry['lower_bound']}..{entry['upper_bound']}"
            rows.append(
                (
                    period["period_start"],
                    entry["value"],
                    estimate,
                    bounds,
                    str(entry["records"]),
                    str(period["complete"]).lower(),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return (
        "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )
        + "\n"
    )


async def answer_without_history(_: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """--store memory keeps windows only until they are reported: there is nothing to query."""
    return 404, {
        "error": "--store memory keeps no history: run with --store sqlite:///path.db "
        "or --store redis://host:port/db to query days and months"
    }


class StoreQueries(Generic[Q]):
    """Answers one query route from the store: its parameters parsed (a 4xx with the reason if
    they are wrong), then the answer read off the event loop (a store read may block)."""

    def __init__(
        self,
        store: StateStore,
        scope: QueryScope,
        clock: Clock,
        parse: Callable[[Mapping[str, str], QueryScope, float], Q],
        respond: Callable[[StateStore, Q, QueryScope, float], dict[str, Any]],
    ) -> None:
        self._store = store
        self._scope = scope
        self._clock = clock
        self._parse = parse
        self._respond = respond

    async def answer(self, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        now = self._clock.now()
        try:
            query = self._parse(params, self._scope, now)
        except QueryError as error:
            return error.status, {"error": str(error)}
        body = await asyncio.to_thread(self._respond, self._store, query, self._scope, now)
        return 200, body


class DistinctQueries(StoreQueries[DistinctQuery]):
    """Answers /v1/distinct."""

    def __init__(self, store: StateStore, scope: QueryScope, clock: Clock) -> None:
        super().__init__(store, scope, clock, parse_query, answer_query)


def query_scope(settings: Settings, held: Sequence[str] = ()) -> QueryScope:
    """The scope of the configured store; `held`: keys the store holds beyond the configured
    ones (the command line answers for every key a store holds, the service for its own)."""
    return QueryScope(
        settings.rollups,
        settings.retention,
        settings.window,
        settings.missing_label,
        settings.sketch_lg_k,
        tuple(dict.fromkeys((*settings.attribute_keys, *held))),
        settings.max_patterns,
    )
