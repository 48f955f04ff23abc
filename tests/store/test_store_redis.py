"""Replicas sharing a real redis-server: one global report per window, equal to the union;
replicas may stop; Redis may go away and come back, and no replica crashes."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from otlp_stats.counting.aggregator import Aggregator, LabelTally, WindowReport
from otlp_stats.store.periods import DEFAULT_RETENTION, Retention, parse_retention
from otlp_stats.store.redis import RedisStore, ShareId
from otlp_stats.store.replicas import ReplicaMerger
from tests.support.expected import ExpectedCounts, summary_of
from tests.support.fakes import FakeClock, export_request, log_record
from tests.support.redistools import RedisServer
from tests.support.sdk_senders import KEY, SdkSenders, flush_all_at_once
from tests.support.servicetools import ServiceProcess, running_service

# The first configured attribute key: a snapshot naming none (the aggregator's) is its.
FIRST_KEY = "service.name"

WINDOW = 3.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def replica_flags(server: RedisServer, name: str, *more: str) -> tuple[str, ...]:
    return (
        "--store", server.url,
        "--replica-id", name,
        "--attribute-key", KEY,
        "--window", str(WINDOW),
        "--merge-grace", "1",
        "--claim-timeout", "5",
        *more,
    )  # fmt: skip


def start_of(report: dict[str, Any]) -> float:
    return datetime.fromisoformat(report["window_start"].replace("Z", "+00:00")).timestamp()


def wait_for_window_start(margin: float = 0.2) -> float:
    now = time.time()
    start = (now // WINDOW + 1) * WINDOW
    time.sleep(start + margin - now)
    return start


def printed(services: Sequence[ServiceProcess], scope: str) -> list[dict[str, Any]]:
    reports = []
    for service in services:
        for line in list(service.stdout.lines):
            report = json.loads(line)
            if report.get("scope") == scope and not report["partial"]:
                reports.append(report)
    return reports


def wait_reported(
    services: Sequence[ServiceProcess], start: float, scope: str = "global", timeout: float = 15
) -> list[dict[str, Any]]:
    """Every report of `scope` printed so far, once one covers the window starting at `start`."""
    deadline = time.monotonic() + timeout
    while True:
        reports = printed(services, scope)
        if any(start_of(r) >= start for r in reports):
            return reports
        assert time.monotonic() < deadline, f"no {scope} report for {start}"
        time.sleep(0.1)


def send(service: ServiceProcess, bodies: Sequence[str], value: str = "checkout") -> None:
    with grpc.insecure_channel(service.grpc_target) as channel:
        LogsServiceStub(channel).Export(  # type: ignore[no-untyped-call]
            export_request(log_record(body, **{KEY: value}) for body in bodies), timeout=10
        )


def test_three_replicas_print_one_global_report_per_window(redis_server: RedisServer) -> None:
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(running_service(*replica_flags(redis_server, f"r{n}")))
            for n in (1, 2, 3)
        ]
        # The SDK sends the same bodies to all three: the global report is their union.
        expected = ExpectedCounts()
        senders = [
            SdkSenders(
                lambda service=service: OTLPLogExporter(  # type: ignore[misc]
                    endpoint=f"http://{service.grpc_target}", insecure=True
                ),
                batch_size=16,
                expected=expected,
            )
            for service in replicas
        ]
        first = wait_for_window_start()
        for sender in senders:
            sender.emit_every_placement(records_per_placement=4)
        flush_all_at_once(senders)
        assert time.time() < first + WINDOW, "the SDK took longer than a window"
        [union] = [r for r in wait_reported(replicas, first) if start_of(r) == first]
        assert summary_of(union) == expected.summary()
        assert union["records"] == expected.records
        assert union["replicas"] == ["r1", "r2", "r3"]

        # Round-robin over the three, then over two once r3 has stopped mid-window.
        sent = 0
        turn = itertools.cycle(replicas)
        second = wait_for_window_start()
        for step in range(30):
            if step == 12:
                assert replicas[2].stop() == 0
                turn = itertools.cycle(replicas[:2])
            send(next(turn), [f"body {step % 7}", f"body {step}"])
            sent += 2
            time.sleep(WINDOW * 3 / 30)
        last = time.time() // WINDOW * WINDOW
        wait_reported(replicas[:2], last)
        for service in replicas[:2]:
            assert service.stop() == 0
    starts = sorted(start_of(r) for r in printed(replicas, "global"))
    assert starts == sorted(set(starts)), "a window was reported twice"
    expected_starts = [first + WINDOW * n for n in range(round((last - first) / WINDOW) + 1)]
    assert [s for s in starts if first <= s <= last] == expected_starts, "a window went missing"
    # Every replica's global reports: r3 may win the claim of a window that closed just before
    # it stopped (its stop takes a while: it answers what waits first), and print it itself.
    reports = printed(replicas, "global")
    records = sum(r["records"] for r in reports if second <= start_of(r) <= last)
    assert records == sent
    assert {"r1", "r2", "r3"} <= {name for r in reports for name in r["replicas"]}


def test_redis_going_away_leaves_local_reports_and_global_ones_resume(
    redis_server: RedisServer,
) -> None:
    # --durability checkpoint: Exports are accepted with Redis down (with ack they are refused,
    # retryable: tests/store/test_redis_durability.py).
    flags = replica_flags(
        redis_server, "solo", "--window", "1", "--merge-grace", "0.3", "--durability", "checkpoint"
    )
    with running_service(*flags) as service:
        sent_by_window: dict[float, int] = {}
        stop_sending = threading.Event()

        def keep_sending() -> None:
            for n in itertools.count():
                if stop_sending.is_set():
                    return
                window = time.time() // 1
                send(service, [f"message {n}", f"message {n % 5}"])
                sent_by_window[window] = sent_by_window.get(window, 0) + 2
                time.sleep(0.05)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            wait_reported([service], time.time() // 1)
            redis_server.stop()
            outage = time.time() // 1
            wait_reported([service], outage + 1, scope="local")
            assert service.metric("otlp_stats_store_reachable") == 0
            status, body = service.http_get("/readyz")
            assert status == 200 and "unreachable" in json.loads(body)["store"]
            time.sleep(1.5)
            redis_server.start()
            back = time.time() // 1
            wait_reported([service], back + 1)
            assert service.metric("otlp_stats_store_reachable") == 1
        finally:
            stop_sending.set()
            sender.join(30)
        last = time.time() // 1  # every request sent has arrived by now
        wait_reported([service], last)
        assert service.process.poll() is None, "the replica crashed"
        assert service.stop() == 0
    reports = printed([service], "global") + printed([service], "local")
    by_window: dict[float, int] = {}
    for report in reports:  # a window may have a local report and, later, a global one
        by_window[start_of(report)] = max(by_window.get(start_of(report), 0), report["records"])
    # Per window the sender's clock and the arrival stamp may differ by a request; in total,
    # every acknowledged record is in exactly one window's report.
    assert sum(by_window.values()) == sum(sent_by_window.values())
    assert printed([service], "local"), "no local report during the outage"


# --- the merger in-process against the real redis-server, on a fake clock -----------------------

MERGER_WINDOW = 10.0


def merger(
    server: RedisServer,
    name: str,
    clock: FakeClock,
    retention: Retention = DEFAULT_RETENTION,
    incarnation: str | None = None,
) -> tuple[ReplicaMerger, list[WindowReport]]:
    """A replica as one process run of it; by default each call is a new run."""
    printed: list[WindowReport] = []
    store = RedisStore(server.url, ("1d",), retention, MERGER_WINDOW, first_key=FIRST_KEY)
    replica = ReplicaMerger(
        store, name, clock, printed.append, 2.0, 30.0, 12, structlog.get_logger("test"), incarnation
    )
    return replica, printed


def closed_window(clock: FakeClock, hashes: list[int], partial: bool = False) -> WindowReport:
    aggregator = Aggregator(MERGER_WINDOW, clock.now(), keep_sketches=True)
    aggregator.add(clock.now(), {"checkout": LabelTally.of_hashes(hashes)})
    if partial:
        [report] = aggregator.close_all(clock.now())
        return report
    [report] = aggregator.close_until(clock.now() // MERGER_WINDOW * MERGER_WINDOW + MERGER_WINDOW)
    return report


def day_records(server: RedisServer) -> list[tuple[int, int]]:
    """(windows, records) of each stored day."""
    store = RedisStore(server.url, ("1d",), DEFAULT_RETENTION, MERGER_WINDOW, first_key=FIRST_KEY)
    try:
        days = store.query(FIRST_KEY, "1d", 0, 1e12, None)
    finally:
        store.close()
    return [(day.windows, sum(entry.records for entry in day.entries)) for day in days]


async def test_a_share_flushed_after_the_merge_is_added_once_and_reported_late(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    first, first_printed = merger(redis_server, "a", clock)
    second, second_printed = merger(redis_server, "b", clock, incarnation="run1")
    end = clock.now() // MERGER_WINDOW * MERGER_WINDOW + MERGER_WINDOW
    late = closed_window(clock, [4, 5, 6, 7])
    first.window_closed(closed_window(clock, [1, 2, 3]))
    clock.set(end + 2.5)
    await first.step()  # merges its own share alone: the other replica lags
    second.window_closed(late)
    clock.set(end + 3.0)
    await second.step()
    await second.step()
    assert [(r.scope, r.records) for r in first_printed] == [("global", 3)]
    assert [(r.scope, r.records, r.replicas) for r in second_printed] == [("late", 4, ("b",))]
    assert second.late_shares == 1
    # Added to the day once, and the day still holds one window.
    assert day_records(redis_server) == [(1, 7)]
    assert late.snapshot is not None
    assert not second.store.add_late(ShareId("b", "run1"), late.snapshot, clock.now())
    assert day_records(redis_server) == [(1, 7)]
    await first.stop()
    await second.stop()


async def test_a_replica_restarting_within_a_window_adds_to_its_earlier_share(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    before, _ = merger(redis_server, "c", clock)
    before.window_closed(closed_window(clock, [10, 11], partial=True))
    await before.stop()  # flushes its partial window on the way out
    after, printed = merger(redis_server, "c", clock)
    after.window_closed(closed_window(clock, [12]))
    end = clock.now() // MERGER_WINDOW * MERGER_WINDOW + MERGER_WINDOW
    clock.set(end + 2.5)
    await after.step()
    [report] = printed
    assert (report.scope, report.replicas) == ("global", ("c",))
    assert (report.records, report.distinct_messages) == (3, 3)
    await after.stop()


async def test_a_window_retention_deleted_is_not_merged_again(redis_server: RedisServer) -> None:
    clock = FakeClock()
    retention = parse_retention("window=10m")
    first, first_printed = merger(redis_server, "a", clock, retention)
    second, second_printed = merger(redis_server, "b", clock, retention)
    end = clock.now() // MERGER_WINDOW * MERGER_WINDOW + MERGER_WINDOW
    first.window_closed(closed_window(clock, [1, 2, 3]))
    second.window_closed(closed_window(clock, [4, 5]))
    clock.set(end + 0.5)
    await first.step()
    await second.step()
    clock.set(end + 2.5)
    await first.step()  # merges both shares; the other replica is then away for 11 minutes
    clock.set(end + 660)
    later = closed_window(clock, [9])
    first.window_closed(later)
    clock.set(later.end + 2.5)
    await first.step()  # its commit deletes the first window's merged copy (retention)
    await second.step()
    assert [(r.scope, r.records) for r in first_printed] == [("global", 5), ("global", 1)]
    assert second_printed == []
    assert day_records(redis_server) == [(2, 6)]
    await first.stop()
    await second.stop()


async def test_the_last_replica_stopping_merges_the_window_it_closed_in_its_grace(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    only, printed = merger(redis_server, "a", clock)
    only.window_closed(closed_window(clock, [1, 2, 3]))
    end = clock.now() // MERGER_WINDOW * MERGER_WINDOW + MERGER_WINDOW
    clock.set(end + 0.5)
    await only.step()  # flushed; the merge grace has not passed, and nobody else is running
    stopping = asyncio.create_task(only.stop())
    await clock.advance(3.0)  # the merge grace and the margin running replicas get first
    await asyncio.wait_for(stopping, 30)
    assert [(r.scope, r.records, r.replicas) for r in printed] == [("global", 3, ("a",))]
    assert day_records(redis_server) == [(1, 3)]
