"""What becomes of event-time records whose window had closed before their request arrived.

The aggregator leaves such records out and hands them back; a `LateRecords` decides their
fate. With `--store memory` (`RejectLate`) they cannot be counted: the sender is told how many
and why (OTLP partial success), so none is dropped silently. A store that keeps closed windows
takes this place (store/revisions.py) and merges them into the stored window instead, rejecting
only what no resolution keeps any more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from otlp_stats.counting.aggregator import WINDOW_CLOSED, ResolvedBatch

# Why a late record ended as it did (otlp_stats_late_records_total{reason}); besides the
# aggregator's clock_stepped_back (arrival time), these are the fates of event-time records.
# Counted: merged into its stored window and the rollups still kept, printed as a revision.
MERGED = "merged"
# Rejected: the window is older than what every resolution of the store keeps.
BEYOND_RETENTION = "beyond_retention"
# Rejected: too many late windows wait to be merged (the store is failing or far behind).
BACKLOG_FULL = "backlog_full"
# Rejected: no store keeps closed windows (--store memory); WINDOW_CLOSED from the aggregator.
LATE_FATES = (MERGED, WINDOW_CLOSED, BEYOND_RETENTION, BACKLOG_FULL)


@dataclass(frozen=True)
class LateOutcome:
    """Of one request's late records: how many were counted all the same (merged into their
    stored windows), and how many its sender is told were rejected, and why."""

    rejected: int
    message: str = ""
    merged: int = 0
    # With --durability ack, when records were merged: done once every one of them is in the
    # store (an exception if that failed); their Export is answered only then.
    stored: asyncio.Future[None] | None = None


# With several attribute keys, a request's late records under each key, by key.
LateByKey = Mapping[str, Mapping[int, ResolvedBatch]]


class LateRecords(Protocol):
    def take(
        self, arrival: float, late: Mapping[int, ResolvedBatch], by_key: LateByKey | None = None
    ) -> LateOutcome:
        """Deal with the late records of a request that arrived at `arrival`, per window index.

        With several keys, `late` is the first key's and `by_key` holds every key's: the
        same records, so they are counted (and their fate decided) once."""
        ...

    @property
    def records_by_reason(self) -> Mapping[str, int]:
        """Late records so far, by fate (LATE_FATES)."""
        ...


class RejectLate:
    """Late records cannot be counted: reject them to their sender, saying why."""

    def __init__(self, window_seconds: float, lateness: float) -> None:
        self._window = window_seconds
        self._lateness = lateness
        self.records_by_reason = dict.fromkeys(LATE_FATES, 0)

    def take(
        self, arrival: float, late: Mapping[int, ResolvedBatch], by_key: LateByKey | None = None
    ) -> LateOutcome:
        rejected = sum(batch_records(batch) for batch in late.values())
        if not rejected:
            return LateOutcome(0)
        self.records_by_reason[WINDOW_CLOSED] += rejected
        newest_end = (max(late) + 1) * self._window
        return LateOutcome(
            rejected,
            f"{rejected} log records rejected as late: their event-time windows (the latest "
            f"ending {timestamp(newest_end)}) had closed, {self._lateness:g}s after their end, "
            "before the request arrived",
        )


def batch_records(batch: ResolvedBatch) -> int:
    return sum(counted.records for counted in batch.values())


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")
