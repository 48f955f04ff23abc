"""Event time against the real service: records counted in the windows of their own timestamps.

Each test starts the service with `--window-time event` on free loopback ports and sends
protobuf requests it built itself (so it chooses every record's time) over gRPC and HTTP,
through real clients, then compares what the service printed with a ground truth computed here.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otlp_stats.reporting.reporter import format_timestamp
from tests.support.fakes import export_request, log_record
from tests.support.grpctools import GrpcChannels
from tests.support.servicetools import ONE_WINDOW, ServiceProcess, running_service

KEY = "tenant"
NS = 1_000_000_000


def dated(body: str, value: str, seconds: float = 0.0, observed: float = 0.0) -> LogRecord:
    """A record with its own time (0: none) and observed time, in seconds since the epoch."""
    record = log_record(body, **{KEY: value})
    record.time_unix_nano = round(seconds * NS)
    record.observed_time_unix_nano = round(observed * NS)
    return record


def send_grpc(
    channels: GrpcChannels, service: ServiceProcess, request: ExportLogsServiceRequest
) -> ExportLogsServiceResponse:
    stub = channels.logs_stub(service.grpc_target)
    response: ExportLogsServiceResponse = stub.Export(request, timeout=10)
    return response


def send_http(
    service: ServiceProcess, request: ExportLogsServiceRequest, as_json: bool = False
) -> ExportLogsServiceResponse:
    body = json_format.MessageToJson(request).encode() if as_json else request.SerializeToString()
    content_type = "application/json" if as_json else "application/x-protobuf"
    sent = urllib.request.Request(
        f"{service.http_url}/v1/logs", body, {"Content-Type": content_type}, method="POST"
    )
    with urllib.request.urlopen(sent, timeout=10) as answer:
        assert answer.status == 200
        payload = answer.read()
    response = ExportLogsServiceResponse()
    if as_json:
        json_format.Parse(payload, response)
    else:
        response.ParseFromString(payload)
    return response


@dataclass
class GroundTruth:
    """Per window start and value: the distinct bodies and records sent there."""

    window: float
    counts: dict[tuple[str, str], tuple[set[str], int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: LogRecord, value: str, body: str) -> None:
        # The record's window as the service works it out: in whole nanoseconds.
        time_ns = record.time_unix_nano or record.observed_time_unix_nano
        start = format_timestamp(time_ns // round(self.window * NS) * self.window)
        with self.lock:
            bodies, records = self.counts.get((start, value), (set(), 0))
            self.counts[start, value] = (bodies | {body}, records + 1)

    def expected(self) -> dict[tuple[str, str], tuple[int, int]]:
        return {key: (len(bodies), records) for key, (bodies, records) in self.counts.items()}


def reported(reports: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """Per window start and value, what the reports say (each window is reported once)."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for report in reports:
        for entry in report["values"]:
            key = (report["window_start"], entry["value"])
            assert key not in found, key
            found[key] = (entry["distinct_messages"], entry["records"])
    return found


def test_disordered_records_from_concurrent_senders_land_in_their_own_windows(
    grpc_channels: GrpcChannels,
) -> None:
    window, lateness = 1.0, 2.0
    flags = ("--attribute-key", KEY, "--window-time", "event", "--window", "1")
    with running_service(*flags, "--allowed-lateness", str(lateness)) as service:
        truth = GroundTruth(window)

        def sender(number: int) -> int:
            rng = random.Random(number)
            sent = 0
            for _ in range(12):
                records = []
                for _ in range(rng.randint(1, 40)):
                    # Up to a second in the past: out of order, across windows, but well
                    # within the lateness (two seconds past each window's end).
                    when = time.time() - rng.uniform(0, 1.0)
                    value, body = rng.choice("abc"), f"message {rng.randint(0, 25)}"
                    if rng.random() < 0.2:
                        record = dated(body, value, observed=when)
                    else:
                        record = dated(body, value, when)
                    records.append(record)
                    truth.add(record, value, body)
                rng.shuffle(records)
                request = export_request(records)
                if number % 2:
                    response = send_http(service, request, as_json=number == 3)
                else:
                    response = send_grpc(grpc_channels, service, request)
                assert not response.HasField("partial_success"), response
                sent += len(records)
                time.sleep(rng.uniform(0, 0.2))
            return sent

        with ThreadPoolExecutor(4) as pool:
            sent = sum(pool.map(sender, range(4)))
        assert service.metric("otlp_stats_records_accepted_total") is not None
        # Windows close on their own, each at its end plus the lateness, in order.
        closed = service.reports_until(lambda report: True, timeout=10)
        assert service.stop() == 0
        reports = service.all_reports()
    assert closed[0]["partial"] is False and closed[0]["window_time"] == "event"
    starts = [report["window_start"] for report in reports]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(report["partial"] is False for report in reports[: len(closed)])
    assert reported(reports) == truth.expected()
    assert sum(report["records"] for report in reports) == sent


def test_records_from_a_broken_clock_or_without_a_time_count_at_arrival(
    grpc_channels: GrpcChannels,
) -> None:
    flags = ("--attribute-key", KEY, "--window-time", "event", "--window", ONE_WINDOW)
    with running_service(*flags) as service:
        now = time.time()
        year_2096 = 3_976_214_400.0
        records = [
            dated("ordinary", "a", now - 1),
            dated("from 2096", "a", year_2096),
            dated("no time at all", "a"),
            dated("observed only", "a", observed=now - 2),
        ]
        response = send_grpc(grpc_channels, service, export_request(records))
        assert not response.HasField("partial_success")
        adjusted = "otlp_stats_timestamps_adjusted_total"
        assert service.metric(adjusted, {"reason": "future"}) == 1
        assert service.metric(adjusted, {"reason": "missing"}) == 1
        assert service.stop() == 0
        [report] = service.all_reports()  # nothing in 2096: one window, the current one
    assert report["window_start"] == format_timestamp(1e9) and report["records"] == 4
    assert report["window_time"] == "event" and report["revision"] == 1


def test_a_late_request_gets_partial_success_and_the_rest_is_counted(
    grpc_channels: GrpcChannels,
) -> None:
    flags = ("--attribute-key", KEY, "--window-time", "event", "--window", "1")
    with running_service(*flags, "--allowed-lateness", "1") as service:
        senders: dict[str, Callable[[ExportLogsServiceRequest], ExportLogsServiceResponse]] = {
            "grpc": lambda request: send_grpc(grpc_channels, service, request),
            "http": lambda request: send_http(service, request),
            "http json": lambda request: send_http(service, request, as_json=True),
        }
        for late, (name, send) in enumerate(senders.items(), start=2):
            now = time.time()
            records = [dated(f"late {n}", "a", now - 60 - n) for n in range(late)]
            records += [dated("on time", "b", now), dated("undated", "b")]
            random.Random(late).shuffle(records)
            response = send(export_request(records))
            assert response.partial_success.rejected_log_records == late, name
            assert "rejected as late" in response.partial_success.error_message, name
        late_records = service.metric("otlp_stats_late_records_total", {"reason": "window_closed"})
        assert late_records == 2 + 3 + 4
        assert service.metric("otlp_stats_records_accepted_total", {"transport": "grpc"}) == 2
        assert service.metric("otlp_stats_records_accepted_total", {"transport": "http"}) == 4
        assert service.stop() == 0
        reports = service.all_reports()
    assert sum(report["records"] for report in reports) == 6
    assert {e["value"] for report in reports for e in report["values"]} == {"b"}


def test_arrival_time_reports_say_so_and_take_no_timestamps(
    grpc_channels: GrpcChannels,
) -> None:
    with running_service("--attribute-key", KEY, "--window", ONE_WINDOW) as service:
        records = [dated("old", "a", time.time() - 3600), dated("future", "a", 3_976_214_400.0)]
        response = send_grpc(grpc_channels, service, export_request(records))
        assert not response.HasField("partial_success")
        assert service.metric("otlp_stats_timestamps_adjusted_total", {"reason": "future"}) == 0
        assert service.stop() == 0
        [report] = service.all_reports()
    assert report["window_time"] == "arrival" and report["revision"] == 1
    assert report["records"] == 2
