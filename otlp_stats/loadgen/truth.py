"""Ground truth: what the acknowledged requests carried, per attribute value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from otlp_stats.loadgen.workload import PreparedRequest


@dataclass(frozen=True)
class ValueTruth:
    """Records and distinct bodies acknowledged for one attribute value (None: key absent)."""

    value: str | None
    records: int
    distinct_messages: int

    def as_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "missing": self.value is None,
            "records": self.records,
            "distinct_messages": self.distinct_messages,
        }


class GroundTruth:
    """Counts acknowledgements per pre-built request and derives the expected counts.

    Record counts add up across windows. Distinct bodies are the union over every
    acknowledged request, so they equal a server's per-window count only when the whole
    run falls in one window (or each request is sent at most once per window).
    """

    def __init__(self, requests: Sequence[PreparedRequest]) -> None:
        self._requests = requests
        self._acknowledged = [0] * len(requests)

    def acknowledge(self, request: PreparedRequest) -> None:
        self._acknowledged[request.index] += 1

    @property
    def records(self) -> int:
        return sum(
            count * request.records
            for count, request in zip(self._acknowledged, self._requests, strict=True)
        )

    def values(self) -> dict[str | None, ValueTruth]:
        records: dict[str | None, int] = {}
        bodies: dict[str | None, set[str]] = {}
        for count, request in zip(self._acknowledged, self._requests, strict=True):
            if count == 0:
                continue
            for value, tally in request.tallies.items():
                records[value] = records.get(value, 0) + count * tally.records
                bodies.setdefault(value, set()).update(tally.bodies)
        return {value: ValueTruth(value, records[value], len(bodies[value])) for value in records}
