"""What becomes of event-time records whose window had closed before their request arrived.

The aggregator leaves such records out and hands them back; a `LateRecords` decides their
fate. Today every store does what `--store memory` must: the records are not counted, and the
sender is told how many and why (OTLP partial success), so none is dropped silently. A store
that keeps closed windows can take this place and merge them into the stored window instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from otlp_stats.counting.aggregator import ResolvedBatch


@dataclass(frozen=True)
class LateOutcome:
    """Of one request's late records: how many its sender is told were rejected, and why."""

    rejected: int
    message: str = ""


class LateRecords(Protocol):
    def take(self, arrival: float, late: Mapping[int, ResolvedBatch]) -> LateOutcome:
        """Deal with the late records of a request that arrived at `arrival`, per window index."""
        ...


class RejectLate:
    """Late records cannot be counted: reject them to their sender, saying why."""

    def __init__(self, window_seconds: float, lateness: float) -> None:
        self._window = window_seconds
        self._lateness = lateness

    def take(self, arrival: float, late: Mapping[int, ResolvedBatch]) -> LateOutcome:
        rejected = sum(counted.records for batch in late.values() for counted in batch.values())
        if not rejected:
            return LateOutcome(0)
        newest_end = (max(late) + 1) * self._window
        return LateOutcome(
            rejected,
            f"{rejected} log records rejected as late: their event-time windows (the latest "
            f"ending {_timestamp(newest_end)}) had closed, {self._lateness:g}s after their end, "
            "before the request arrived",
        )


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")
