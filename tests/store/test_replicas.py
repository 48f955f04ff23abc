"""The replica merger against an in-memory shared store that can fail: a fake clock, no Redis."""

from __future__ import annotations

from collections.abc import Sequence

import redis
import structlog

from otlp_stats.counting.aggregator import (
    Aggregator,
    LabelTally,
    WindowReport,
    WindowSnapshot,
    merge_snapshots,
)
from otlp_stats.store.redis import SHARE_TTL_SECONDS, ShareId
from otlp_stats.store.replicas import MAX_PENDING_FLUSHES, ReplicaMerger
from tests.support.fakes import FakeClock

WINDOW = 10.0


Window = tuple[str, float]


def window_of(snapshot: WindowSnapshot) -> Window:
    return snapshot.attribute_key, snapshot.start


class FlakyShared:
    """The shared store's contract in a dict; `down` makes every call fail as Redis would."""

    def __init__(self) -> None:
        self.down = False
        # By (attribute key, window start), as Redis keeps keys apart.
        self.shares: dict[Window, dict[ShareId, WindowSnapshot]] = {}
        self.claims: dict[Window, str] = {}
        self.merged: list[WindowSnapshot] = []
        self.holds: dict[Window, set[ShareId]] = {}
        self.late: list[WindowSnapshot] = []

    def _check(self) -> None:
        if self.down:
            raise redis.ConnectionError("Redis is down")

    def flush(self, share: ShareId, snapshot: WindowSnapshot, journal: bool = False) -> None:
        self._check()
        self.shares.setdefault(window_of(snapshot), {})[share] = snapshot

    def claim(self, attribute_key: str, start: float, replica: str, timeout: float) -> bool:
        self._check()
        window = (attribute_key, start)
        return self.claims.setdefault(window, replica) == replica and window not in self.holds

    def is_merged(self, attribute_key: str, start: float) -> bool:
        self._check()
        return (attribute_key, start) in self.holds

    def collect(
        self, attribute_key: str, start: float, end: float
    ) -> list[tuple[ShareId, WindowSnapshot]]:
        self._check()
        shares = self.shares.get((attribute_key, start), {})
        return sorted(shares.items(), key=lambda item: item[0].member)

    def save_merged(self, merged: WindowSnapshot, shares: Sequence[ShareId], now: float) -> bool:
        self._check()
        if window_of(merged) in self.holds:
            return False
        self.merged.append(merged)
        self.holds[window_of(merged)] = set(shares)
        return True

    def add_late(self, share: ShareId, snapshot: WindowSnapshot, now: float) -> bool:
        self._check()
        held = self.holds.get(window_of(snapshot))
        if held is None or share in held:
            return False
        held.add(share)
        self.late.append(snapshot)
        return True

    def stored_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def replica(
    name: str, shared: FlakyShared, clock: FakeClock
) -> tuple[ReplicaMerger, list[WindowReport]]:
    printed: list[WindowReport] = []
    merger = ReplicaMerger(
        shared, name, clock, printed.append, 2.0, 30.0, 12, structlog.get_logger("test")
    )
    return merger, printed


def closed_window(clock: FakeClock, hashes: list[int]) -> WindowReport:
    aggregator = Aggregator(WINDOW, clock.now(), keep_sketches=True)
    aggregator.add(clock.now(), {"checkout": LabelTally.of_hashes(hashes)})
    [report] = aggregator.close_until(clock.now() // WINDOW * WINDOW + WINDOW)
    return report


async def test_the_replica_that_claims_prints_the_union_and_the_other_prints_nothing() -> None:
    clock, shared = FakeClock(), FlakyShared()
    first, first_printed = replica("a", shared, clock)
    second, second_printed = replica("b", shared, clock)
    first.window_closed(closed_window(clock, [1, 2, 3]))
    second.window_closed(closed_window(clock, [3, 4]))
    end = clock.now() // WINDOW * WINDOW + WINDOW
    clock.set(end + 0.5)  # both flush as their windows close, within the merge grace
    await first.step()
    await second.step()
    clock.set(end + 2.5)
    await first.step()
    await second.step()
    [report] = first_printed + second_printed
    assert (report.scope, report.replicas) == ("global", ("a", "b"))
    assert (report.records, report.distinct_messages) == (5, 4)
    assert first.pending == second.pending == 0
    await first.stop()
    await second.stop()


async def test_with_redis_down_reports_turn_local_and_the_backlog_is_bounded() -> None:
    clock, shared = FakeClock(), FlakyShared()
    merger, printed = replica("solo", shared, clock)
    shared.down = True
    for n in range(MAX_PENDING_FLUSHES + 40):
        merger.window_closed(closed_window(clock, [n]))
        clock.set(clock.now() + WINDOW)
        await merger.step()
    assert not merger.reachable
    assert merger.pending == MAX_PENDING_FLUSHES
    assert merger.dropped_flushes == 40
    # Every window got a report, all local, each with its own records: nothing dropped silently.
    assert len(printed) == MAX_PENDING_FLUSHES + 40 - 1
    assert {report.scope for report in printed} == {"local"}
    assert all(report.records == 1 for report in printed)

    shared.down = False
    clock.set(clock.now() + 60)  # past the longest backoff
    await merger.step()
    assert merger.reachable and merger.pending == 0
    globals_ = [report for report in printed if report.scope == "global"]
    assert globals_, "global reports resume once Redis answers"
    merged = merge_snapshots(shared.merged)
    assert merged.records == len(globals_)
    await merger.stop()


async def test_a_window_too_old_to_merge_completely_keeps_its_local_report_only() -> None:
    # Past the shares' time to live the others' shares may be gone: a merge would be partial
    # and, with the merged marker gone too, could count this window twice.
    clock, shared = FakeClock(), FlakyShared()
    merger, printed = replica("solo", shared, clock)
    shared.down = True
    merger.window_closed(closed_window(clock, [1]))
    clock.set(clock.now() + SHARE_TTL_SECONDS + 2 * WINDOW)
    await merger.step()
    shared.down = False
    clock.set(clock.now() + 60)
    await merger.step()
    assert [report.scope for report in printed] == ["local"]
    assert (merger.pending, merger.dropped_flushes, shared.merged) == (0, 1, [])
    await merger.stop()
