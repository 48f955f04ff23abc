"""`--processes 2` against the real service: two serving processes on the same ports, one report.

Each test starts `python -m otlp_stats --processes 2` on free loopback ports and sends from many
connections at once, over gRPC (one connection per channel) and OTLP/HTTP (one per request), so
the kernel spreads them over both processes; what is printed is compared with a ground truth
computed here from what was acknowledged.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from tests.support.expected import ExpectedCounts, only_report, summary_of
from tests.support.fakes import export_request, log_record
from tests.support.servicetools import ONE_WINDOW, ServiceProcess, running_service
from tests.test_event_time import KEY, GroundTruth, dated, reported, send_http

TWO = ("--processes", "2", "--attribute-key", KEY)


@contextmanager
def own_connection(service: ServiceProcess) -> Iterator[LogsServiceStub]:
    """A stub on a connection of its own: channels in one process share one by default."""
    channel = grpc.insecure_channel(
        service.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
    )
    try:
        yield LogsServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        channel.close()


def send_from_many_connections(
    service: ServiceProcess,
    build: Callable[[random.Random], tuple[ExportLogsServiceRequest, Callable[[], None]]],
    senders: int = 8,
    requests_each: int = 10,
) -> int:
    """Half the senders over gRPC, half over HTTP; `build` gives a request and what to record
    once it is acknowledged. Returns the requests acknowledged."""

    def sender(number: int) -> int:
        rng = random.Random(number)
        sent = 0
        with own_connection(service) as stub:
            for _ in range(requests_each):
                request, acknowledged = build(rng)
                if number % 2:
                    send_http(service, request)
                else:
                    stub.Export(request, timeout=10)
                acknowledged()
                sent += 1
        return sent

    with ThreadPoolExecutor(senders) as pool:
        return sum(pool.map(sender, range(senders)))


def records_accepted(service: ServiceProcess) -> float:
    return sum(
        service.metric("otlp_stats_records_accepted_total", {"transport": door}) or 0.0
        for door in ("grpc", "http")
    )


def wait_accepted(service: ServiceProcess, records: int, timeout: float = 10.0) -> None:
    """Each process sends its metrics every second: poll the merged figure until it is there."""
    deadline = time.monotonic() + timeout
    while records_accepted(service) < records:
        assert time.monotonic() < deadline, f"{records} records not on /metrics"
        time.sleep(0.05)


def test_each_window_is_reported_once_with_every_process_share_in_it() -> None:
    flags = (*TWO, "--window-time", "event", "--window", "1", "--allowed-lateness", "2")
    with running_service(*flags) as service:
        truth = GroundTruth(1.0)

        def build(rng: random.Random) -> tuple[ExportLogsServiceRequest, Callable[[], None]]:
            records = []
            for _ in range(rng.randint(1, 30)):
                value, body = rng.choice("abcd"), f"message {rng.randint(0, 40)}"
                records.append((dated(body, value, time.time() - rng.uniform(0, 1.0)), value, body))
            request = export_request(record for record, _, _ in records)

            def acknowledged() -> None:
                for record, value, body in records:
                    truth.add(record, value, body)

            return request, acknowledged

        # Long enough to span several windows, each with shares from both processes.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            send_from_many_connections(service, build, requests_each=4)
        assert service.stop() == 0
        reports = service.all_reports()
    starts = [report["window_start"] for report in reports]
    assert len(starts) == len(set(starts)), "a window was reported more than once"
    assert len(reports) >= 3
    assert reported(reports) == truth.expected()


def test_sigterm_drains_both_processes_into_one_partial_report_and_one_metrics_page() -> None:
    with running_service(*TWO, "--window", ONE_WINDOW) as service:
        expected = ExpectedCounts()
        lock = threading.Lock()

        def build(rng: random.Random) -> tuple[ExportLogsServiceRequest, Callable[[], None]]:
            bodies = [(rng.choice("xyz"), f"body {rng.randint(0, 60)}") for _ in range(10)]
            request = export_request(log_record(body, **{KEY: value}) for value, body in bodies)

            def acknowledged() -> None:
                with lock:
                    for value, body in bodies:
                        expected.add(value, body)

            return request, acknowledged

        assert send_from_many_connections(service, build) == 80
        wait_accepted(service, expected.records)
        _, page = service.http_get("/metrics")
        assert page.count("# TYPE otlp_stats_records_counted_total counter") == 1
        assert service.metric("otlp_stats_processes") == 2
        assert service.metric("otlp_stats_records_counted_total") == expected.records
        assert service.metric("otlp_stats_queue_capacity_requests") == 2 * 512
        assert service.http_get("/readyz")[0] == 200
        assert service.stop() == 0
        report = only_report(service.all_reports())
    assert report["records"] == expected.records
    assert summary_of(report) == expected.summary()


def serving_pids(service: ServiceProcess) -> list[int]:
    pids: list[int] = service.wait_log("serving")["pids"]
    return pids


def test_a_killed_process_is_restarted_and_its_share_of_the_window_counted_lost() -> None:
    with running_service(*TWO, "--window", ONE_WINDOW) as service:
        sent = 0

        def build(rng: random.Random) -> tuple[ExportLogsServiceRequest, Callable[[], None]]:
            request = export_request([log_record(f"m{rng.randint(0, 9)}", **{KEY: "v"})])
            return request, lambda: None

        sent += send_from_many_connections(service, build)
        wait_accepted(service, sent)
        victim = serving_pids(service)[1]
        os.kill(victim, signal.SIGKILL)
        restarted = service.wait_log("process_restarted")
        assert restarted["pid"] != victim
        died = service.wait_log("process_died")
        assert died["pid"] == victim and died["lost_window_shares"] == 1
        assert service.metric("otlp_stats_process_restarts_total") == 1
        assert service.metric("otlp_stats_lost_window_shares_total") == 1
        # The replacement serves the same ports; counters never go back.
        sent += send_from_many_connections(service, build)
        wait_accepted(service, sent)
        assert _processes(service) == 2
        assert service.stop() == 0
        report = only_report(service.all_reports())
    # What the killed process had counted is gone, and said so above; the rest is reported.
    assert 0 < report["records"] < sent


def _processes(service: ServiceProcess) -> Any:
    return service.metric("otlp_stats_processes")


def test_a_port_in_use_fails_the_start_with_exit_code_1_and_no_restart() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = ServiceProcess(*TWO, "--grpc-listen", f"127.0.0.1:{port}")
        try:
            assert service.process.wait(60) == 1
        finally:
            if service.process.poll() is None:
                service.process.kill()
    assert service.stderr.thread is not None
    service.stderr.thread.join(10)
    events = [json.loads(line) for line in service.stderr.lines if line.startswith("{")]
    # The serving process says why; the supervisor that the start failed, and restarts nothing.
    assert any("Failed to bind" in e.get("error", "") and e.get("process") == 0 for e in events)
    assert {"error": "serving process 0 ended at start", "event": "start_failed"}.items() <= next(
        e for e in events if e["event"] == "start_failed" and "process" not in e
    ).items()
    assert not [e for e in events if e["event"] in ("process_died", "process_restarted")]
