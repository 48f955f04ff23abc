"""What a window report must say, computed by a test on its own from what it sent."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# (value label, missing) -> (distinct messages, records), the shape tests compare reports in.
Summary = dict[tuple[str, bool], tuple[int, int]]


class ExpectedCounts:
    """Records and distinct bodies per attribute value, as the sender sees them."""

    def __init__(self, missing_label: str = "unknown") -> None:
        self._missing_label = missing_label
        self._records: dict[tuple[str, bool], int] = {}
        self._bodies: dict[tuple[str, bool], set[str]] = {}

    def add(self, value: str | None, body: object) -> None:
        """One record whose attribute resolved to `value` (None: absent everywhere)."""
        key = (self._missing_label, True) if value is None else (value, False)
        self._records[key] = self._records.get(key, 0) + 1
        self._bodies.setdefault(key, set()).add(body_identity(body))

    @property
    def records(self) -> int:
        return sum(self._records.values())

    def summary(self) -> Summary:
        return {key: (len(self._bodies[key]), count) for key, count in self._records.items()}


def body_identity(body: object) -> str:
    """Bodies equal by value get one identity; a string never equals a structured body."""
    if isinstance(body, str):
        return "s:" + body
    return "v:" + json.dumps(body, sort_keys=True)


def first_present(*values: str | None) -> str | None:
    """The attribute precedence: the first place that has the attribute wins."""
    return next((value for value in values if value is not None), None)


def summary_of(report: Mapping[str, Any]) -> Summary:
    return {
        (entry["value"], entry["missing"]): (entry["distinct_messages"], entry["records"])
        for entry in report["values"]
    }


def only_report(reports: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The single (final, partial) report of a run with one window that never closes."""
    assert len(reports) == 1, reports
    assert reports[0]["partial"] is True
    return reports[0]
