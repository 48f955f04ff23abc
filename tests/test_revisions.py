"""Late records against the real service: with SQLite, and with two replicas sharing a real
redis-server, they are merged into the stored window and its rollups and printed as a revision
with the full counts; beyond every retention they are still rejected as partial success."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from otlp_stats.reporting.reporter import format_timestamp
from tests.support.fakes import export_request
from tests.support.grpctools import GrpcChannels
from tests.support.redistools import RedisServer
from tests.support.servicetools import REPO, ServiceProcess, running_service
from tests.test_event_time import KEY, dated, send_grpc, send_http

WINDOW = 2.0
EVENT_TIME = ("--attribute-key", KEY, "--window-time", "event", "--window", str(WINDOW))
LATENESS = ("--allowed-lateness", "1")


def window_of(moment: float) -> float:
    return moment // WINDOW * WINDOW


def revisions_of(reports: Sequence[dict[str, Any]], start: float) -> list[dict[str, Any]]:
    return [
        r for r in reports if r["window_start"] == format_timestamp(start) and r["revision"] > 1
    ]


def values_of(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {e["value"]: (e["distinct_messages"], e["records"]) for e in report["values"]}


def test_sqlite_merges_late_records_prints_a_revision_and_the_day_has_them(
    tmp_path: Path, grpc_channels: GrpcChannels
) -> None:
    store = f"sqlite://{tmp_path}/state.db"
    with running_service(*EVENT_TIME, *LATENESS, "--store", store) as service:
        start = window_of(time.time())
        on_time = [dated(f"on time {n}", "a", start + 0.1) for n in range(3)]
        assert not send_grpc(grpc_channels, service, export_request(on_time)).HasField(
            "partial_success"
        )
        service.reports_until(lambda r: r["window_start"] == format_timestamp(start))
        # The window has been printed: these are late. Three years old is beyond every
        # retention (months keep 24): rejected; the others are merged and acknowledged.
        late = [dated("on time 0", "a", start + 0.5), dated("late", "b", start + 1.9)]
        late += [dated("late", "b", start + 1.0), dated("ancient", "b", start - 3 * 366 * 86400)]
        response = send_http(service, export_request(late))
        assert response.partial_success.rejected_log_records == 1
        assert "older than the store keeps" in response.partial_success.error_message
        [revision] = service.reports_until(lambda r: r["revision"] > 1, timeout=10)[-1:]
        assert (revision["window_start"], revision["revision"]) == (format_timestamp(start), 2)
        assert revision["window_end"] == format_timestamp(start + WINDOW)
        assert values_of(revision) == {"a": (3, 4), "b": (1, 2)}
        assert revision["records"] == 6 and revision["window_time"] == "event"
        late_records = "otlp_stats_late_records_total"
        assert service.metric(late_records, {"reason": "merged"}) == 3
        assert service.metric(late_records, {"reason": "beyond_retention"}) == 1
        assert service.metric(late_records, {"reason": "window_closed"}) == 0
        assert service.metric("otlp_stats_revisions_total") == 1
        assert service.metric("otlp_stats_records_accepted_total", {"transport": "http"}) == 3
        assert service.stop() == 0
    day = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d")
    answer = subprocess.run(
        [sys.executable, "-m", "otlp_stats", "query", "--store", store, "--from", day, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    [period] = json.loads(answer.stdout)["periods"]
    assert {v["value"]: (v["distinct_messages"], v["records"]) for v in period["values"]} == {
        "a": (3, 4),
        "b": (1, 2),
    }


def test_memory_store_still_rejects_late_records_as_partial_success(
    grpc_channels: GrpcChannels,
) -> None:
    with running_service(*EVENT_TIME, *LATENESS) as service:
        late = [dated(f"late {n}", "a", time.time() - 60) for n in range(4)]
        response = send_grpc(grpc_channels, service, export_request(late))
        assert response.partial_success.rejected_log_records == 4
        assert service.metric("otlp_stats_late_records_total", {"reason": "window_closed"}) == 4
        assert service.metric("otlp_stats_late_records_total", {"reason": "merged"}) == 0
        assert service.stop() == 0
        assert not [r for r in service.all_reports() if r["revision"] > 1]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_two_replicas_on_redis_agree_on_the_revisions_of_a_window(
    redis_server: RedisServer, grpc_channels: GrpcChannels
) -> None:
    shared = ("--store", redis_server.url, "--merge-grace", "1", "--claim-timeout", "5")
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                running_service(*EVENT_TIME, *LATENESS, *shared, "--replica-id", name)
            )
            for name in ("a", "b")
        ]
        start = window_of(time.time())
        for n, replica in enumerate(replicas):
            records = [dated(f"on time {n}", "x", start + 0.2)]
            send_grpc(grpc_channels, replica, export_request(records))
        first = wait_printed(replicas, lambda r: r["window_start"] == format_timestamp(start))
        assert first["scope"] == "global" and first["records"] == 2
        # Late records on both replicas, a burst of them: merged into the one global window.
        for burst in range(3):
            for n, replica in enumerate(replicas):
                records = [dated(f"late {n} {burst}", "y", start + 1.5)]
                response = send_grpc(grpc_channels, replica, export_request(records))
                assert not response.HasField("partial_success")
        last = wait_printed(
            replicas, lambda r: r["revision"] > 1 and r["records"] == 8, timeout=WINDOW * 4
        )
        time.sleep(WINDOW + 0.5)  # any further revision would be printed by now
        for replica in replicas:
            assert replica.stop() == 0
        reports = [r for replica in replicas for r in replica.all_reports()]
    revisions = revisions_of(reports, start)
    # One replica printed each revision: numbers never repeat; at most one per window
    # length for the burst, so few; the last carries everything.
    numbers = sorted(r["revision"] for r in revisions)
    assert numbers == list(range(2, 2 + len(numbers))) and len(numbers) <= 3
    assert max(revisions, key=lambda r: r["revision"]) == last
    assert values_of(last) == {"x": (2, 2), "y": (6, 6)}
    assert last["scope"] == "global" and last["replicas"] == ["a", "b"]


def wait_printed(
    services: Sequence[ServiceProcess], predicate: Any, timeout: float = 15.0
) -> dict[str, Any]:
    """The first report any of the services printed that `predicate` accepts."""
    deadline = time.monotonic() + timeout
    while True:
        for service in services:
            for line in list(service.stdout.lines):
                report = json.loads(line)
                if not report["partial"] and predicate(report):
                    return dict(report)
        assert time.monotonic() < deadline, "no such report:\n" + services[0].stderr_text
        time.sleep(0.05)
