"""--durability ack with event time: late records merged into their stored window are durable
once their Export is answered. Each test sends a request of late records, kills the service with
SIGKILL the moment the answer arrives, starts it again on the same store, and finds the records
in their stored window and its day."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from tests.store.test_store_sqlite import day_of
from tests.support.fakes import export_request, log_record
from tests.support.redistools import RedisServer
from tests.support.servicetools import ServiceProcess

KEY = "tenant"
WINDOW = 60.0
NS = 1_000_000_000
RECORDS = 7


def late_request(window_start: float) -> ExportLogsServiceRequest:
    """RECORDS records of distinct bodies, all dated inside the window starting then."""
    records = []
    for number in range(RECORDS):
        record = log_record(f"late message {number}", **{KEY: "late"})
        record.time_unix_nano = round((window_start + 1 + number) * NS)
        records.append(record)
    return export_request(records)


def post(service: ServiceProcess, request: ExportLogsServiceRequest) -> ExportLogsServiceResponse:
    sent = urllib.request.Request(
        f"{service.http_url}/v1/logs",
        request.SerializeToString(),
        {"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with urllib.request.urlopen(sent, timeout=10) as answer:
        assert answer.status == 200
        response = ExportLogsServiceResponse()
        response.ParseFromString(answer.read())
    return response


def start_event_time(*flags: str) -> ServiceProcess:
    service = ServiceProcess(
        *("--attribute-key", KEY, "--window", str(WINDOW), "--window-time", "event"),
        *("--allowed-lateness", "1", "--durability", "ack", *flags),
    )
    service.wait_serving()
    return service


def stored_entry(service: ServiceProcess, resolution: str, start: str) -> dict[str, Any] | None:
    """The value "late" in the stored period of `resolution` starting at `start`."""
    status, body = service.http_get(f"/v1/distinct?resolution={resolution}&from={start}")
    assert status == 200, body
    for period in json.loads(body)["periods"]:
        for entry in period["values"]:
            if entry["value"] == "late":
                return dict(entry)
    return None


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def acknowledged_then_killed(*flags: str) -> tuple[ServiceProcess, float]:
    """Send the late request, SIGKILL as soon as it is answered, start again; the restarted
    service and the late window's start."""
    # Ten windows back: closed long ago, well within the store's retention (an hour). Within
    # today: the day's rollup is read back below.
    window_start = max((time.time() // WINDOW - 10) * WINDOW, time.time() // 86_400 * 86_400)
    service = start_event_time(*flags)
    try:
        response = post(service, late_request(window_start))
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(10)
    finally:
        if service.process.poll() is None:
            service.process.kill()
    # Accepted whole: merged into their stored window, not rejected as late.
    assert not response.HasField("partial_success"), response
    return start_event_time(*flags), window_start


def assert_in_window_and_day(service: ServiceProcess, window_start: float) -> None:
    window = stored_entry(service, "window", iso(window_start))
    day = stored_entry(service, "1d", day_of(window_start))
    assert window is not None and day is not None
    assert (window["records"], window["distinct_messages"]) == (RECORDS, RECORDS)
    assert (day["records"], day["distinct_messages"]) == (RECORDS, RECORDS)


def test_late_records_acknowledged_survive_a_sigkill_right_after_the_answer(
    tmp_path: Path,
) -> None:
    service, window_start = acknowledged_then_killed("--store", f"sqlite://{tmp_path}/state.db")
    try:
        assert_in_window_and_day(service, window_start)
        assert service.stop() == 0
    finally:
        if service.process.poll() is None:
            service.process.kill()


def test_late_records_acknowledged_by_a_replica_survive_a_sigkill_right_after_the_answer(
    tmp_path: Path,
) -> None:
    redis_server = RedisServer(tmp_path, appendfsync="everysec")
    redis_server.start()
    try:
        flags = ("--store", redis_server.url, "--replica-id", "solo", "--merge-grace", "1")
        service, window_start = acknowledged_then_killed(*flags)
        try:
            assert_in_window_and_day(service, window_start)
            assert service.stop() == 0
        finally:
            if service.process.poll() is None:
                service.process.kill()
    finally:
        redis_server.stop()
