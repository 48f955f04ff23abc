"""`--processes 2` with each store: SQLite written by the supervisor alone, Redis given one
share per replica, merged from its processes first."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.processes.test_supervisor import TWO, send_from_many_connections, wait_accepted
from tests.store.test_store_redis import WINDOW, start_of, wait_for_window_start, wait_reported
from tests.support.expected import ExpectedCounts, only_report, summary_of
from tests.support.fakes import export_request, log_record
from tests.support.redistools import RedisServer
from tests.support.servicetools import ONE_WINDOW, running_service
from tests.test_event_time import KEY

Build = Callable[[random.Random], tuple[ExportLogsServiceRequest, Callable[[], None]]]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def counted_into(expected: ExpectedCounts, prefix: str) -> Build:
    lock = threading.Lock()

    def build(rng: random.Random) -> tuple[ExportLogsServiceRequest, Callable[[], None]]:
        bodies = [(rng.choice("pq"), f"{prefix} {rng.randint(0, 30)}") for _ in range(5)]
        request = export_request(log_record(body, **{KEY: value}) for value, body in bodies)

        def acknowledged() -> None:
            with lock:
                for value, body in bodies:
                    expected.add(value, body)

        return request, acknowledged

    return build


def test_with_sqlite_a_restart_of_the_service_resumes_its_open_window(tmp_path: Path) -> None:
    flags = (*TWO, "--window", ONE_WINDOW, "--store", f"sqlite:///{tmp_path / 'state.db'}")
    expected = ExpectedCounts()
    for run in ("first", "second"):
        with running_service(*flags) as service:
            send_from_many_connections(service, counted_into(expected, run), requests_each=4)
            wait_accepted(service, expected.records if run == "first" else 1)
            # The window is checkpointed by the supervisor, the store's one writer, at stop.
            assert service.stop() == 0
            report = only_report(service.all_reports())
    assert report["records"] == expected.records
    assert summary_of(report) == expected.summary()


def test_with_redis_the_processes_merge_first_and_the_replica_flushes_one_share(
    redis_server: RedisServer,
) -> None:
    flags = (*TWO, "--store", redis_server.url, "--replica-id", "r1", "--window", str(WINDOW))
    with running_service(*flags, "--merge-grace", "0.5") as service:
        expected = ExpectedCounts()
        first = wait_for_window_start()
        send_from_many_connections(
            service, counted_into(expected, "redis"), senders=6, requests_each=3
        )
        assert time.time() < first + WINDOW, "sending took longer than a window"
        [merged] = [r for r in wait_reported([service], first) if start_of(r) == first]
        assert service.stop() == 0
    assert merged["replicas"] == ["r1"]
    assert merged["records"] == expected.records
    assert summary_of(merged) == expected.summary()
