"""--durability ack with SQLite: SIGKILLs at random instants under load from retrying senders
(the load generator in its retry mode, and the OpenTelemetry SDK exporter), each restart on the
same ports and the same file. Every acknowledged message is in its day afterwards, and records
count more than acknowledged only for the requests a kill caught before their answer."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import signal
import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

from otlp_stats.loadgen.driver import LoadPlan, LoadSummary, run_load
from otlp_stats.loadgen.workload import Placement, PreparedRequest, Workload, build_requests
from tests.store.test_store_sqlite import day_of, wait_for_window_start
from tests.support.servicetools import ServiceProcess

KEY = "tenant"
WINDOW = 2.0
KILLS = 20
CALLERS = 4
RECORDS_PER_REQUEST = 10
SDK_VALUE = "sdk"
CHUNK = 40
# gRPC's reconnect backoff grows to 120 s by default; the server is back within seconds.
RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RecordingExporter(LogRecordExporter):
    """The SDK's gRPC exporter (it retries UNAVAILABLE itself); notes what it was told is in."""

    def __init__(self, target: str) -> None:
        self._inner = OTLPLogExporter(
            endpoint=f"http://{target}",
            insecure=True,
            timeout=15,
            # The SDK annotates a one-element tuple of strings; gRPC takes these as ints.
            channel_options=RECONNECT,  # type: ignore[arg-type]
        )
        self.acknowledged: list[str] = []
        self.unanswered = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self._inner.export(batch)
        bodies = [str(record.log_record.body) for record in batch]
        if result is LogRecordExportResult.SUCCESS:
            self.acknowledged += bodies
        else:
            self.unanswered += len(bodies)
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._inner.shutdown()


def sdk_sender(exporter: RecordingExporter, stop: threading.Event) -> None:
    """One record per Export (SimpleLogRecordProcessor exports in the emitting thread)."""
    provider = LoggerProvider(resource=Resource.create({KEY: SDK_VALUE}), shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("durability")
    number = 0
    while not stop.is_set():
        logger.emit(body=f"sdk message {number}")
        number += 1
        time.sleep(0.01)  # a steady trickle, not a flood: the load generator is the flood
    provider.shutdown()


def load_until(
    target: str,
    requests: Sequence[PreparedRequest],
    stop: threading.Event,
    summaries: list[LoadSummary],
) -> None:
    """The load generator in retry mode, in runs of CHUNK requests until `stop`: each run
    sends its requests once and retries each until answered, whatever the kills."""
    for first in range(0, len(requests), CHUNK):
        if stop.is_set():
            return
        # The ground truth of a run counts its requests by their index in it.
        chunk = [
            dataclasses.replace(request, index=n)
            for n, request in enumerate(requests[first : first + CHUNK])
        ]
        plan = LoadPlan(
            target,
            CALLERS,
            duration=120.0,
            requests=len(chunk),
            rate=80.0,
            retry=True,
            max_attempts=200,
            timeout=5,
        )
        summaries.append(asyncio.run(run_load(plan, chunk)))


def acknowledged_per_value(summaries: Sequence[LoadSummary]) -> dict[str, tuple[int, int]]:
    """Per value: records acknowledged, and distinct messages among them."""
    records: dict[str, int] = {}
    messages: dict[str, int] = {}
    for summary in summaries:
        for truth in summary.truth.values().values():
            assert truth.value is not None
            records[truth.value] = records.get(truth.value, 0) + truth.records
            # Every body is in one request only: the runs' distinct messages add up.
            messages[truth.value] = messages.get(truth.value, 0) + truth.distinct_messages
    return {value: (records[value], messages[value]) for value in records}


def start(store: str, ports: tuple[int, int, int]) -> ServiceProcess:
    grpc_port, http_port, admin_port = ports
    service = ServiceProcess(
        *("--store", store, "--attribute-key", KEY, "--window", str(WINDOW)),
        *("--durability", "ack", "--sketch-lg-k", "14"),
        *("--grpc-listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}"),
        *("--admin-listen", f"127.0.0.1:{admin_port}"),
    )
    service.wait_serving()
    return service


def day_entries(service: ServiceProcess, day: str) -> dict[str, dict[str, Any]]:
    status, body = service.http_get(f"/v1/distinct?resolution=1d&from={day}")
    assert status == 200, body
    [period] = json.loads(body)["periods"]
    return {entry["value"]: entry for entry in period["values"]}


def window_records(service: ServiceProcess, began: float) -> dict[str, int]:
    """Records per value summed over the stored windows since `began`."""
    since = datetime.fromtimestamp(began - WINDOW, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, body = service.http_get(f"/v1/distinct?resolution=window&from={since}&to={until}")
    assert status == 200, body
    records: dict[str, int] = {}
    for period in json.loads(body)["periods"]:
        for entry in period["values"]:
            records[entry["value"]] = records.get(entry["value"], 0) + entry["records"]
    return records


def holds(entries: dict[str, dict[str, Any]], expected: dict[str, tuple[int, int]]) -> bool:
    """True once the day has at least the records and distinct messages acknowledged per value."""
    return all(
        value in entries
        and entries[value]["records"] >= records
        and entries[value]["distinct_messages"] >= messages
        for value, (records, messages) in expected.items()
    )


def wait_for_day(
    service: ServiceProcess, day: str, expected: dict[str, tuple[int, int]], every: float
) -> dict[str, dict[str, Any]]:
    """The day's entries once they hold what `expected` says was acknowledged, or after 20 s
    (then the caller's assertions say what is missing): windows are stored after their
    reports, and a sender's last answer can come a window late from its retry backoff."""
    deadline = time.monotonic() + 20
    while True:
        entries = day_entries(service, day)
        if holds(entries, expected) or time.monotonic() > deadline:
            return entries
        time.sleep(every)


def assert_counted_once(
    entries: dict[str, dict[str, Any]],
    windows: dict[str, int],
    summary: Sequence[LoadSummary],
    exporter: RecordingExporter,
    sdk_value: str,
    kills: int,
    callers: int,
) -> tuple[int, int]:
    """Every acknowledged message is in the day, none twice, and the day is made of its
    windows; records beyond the acknowledged are only those a kill caught unanswered, at most
    one request per caller (and the SDK's one) per kill. Returns those extras: the load
    generator's and the SDK's."""
    sent = sum(chunk.requests_sent for chunk in summary)
    assert sum(chunk.requests_ok for chunk in summary) == sent > 0
    truth = acknowledged_per_value(summary)
    for value, (records, messages) in truth.items():
        got = entries[value]
        assert got["estimated"] is False
        assert got["distinct_messages"] == messages
        assert got["records"] >= records
    assert windows == {value: entry["records"] for value, entry in entries.items()}
    sdk_got = entries[sdk_value]
    assert sdk_got["distinct_messages"] >= len(set(exporter.acknowledged))
    assert sdk_got["distinct_messages"] <= len(set(exporter.acknowledged)) + exporter.unanswered
    acknowledged = sum(chunk.records_acknowledged for chunk in summary)
    extra = sum(entries[v]["records"] for v in truth) - acknowledged
    assert 0 <= extra <= kills * callers * RECORDS_PER_REQUEST
    sdk_extra = sdk_got["records"] - len(exporter.acknowledged)
    assert 0 <= sdk_extra <= kills
    return extra, sdk_extra


def kill_workload(pool_size: int) -> Workload:
    """Unique bodies of 4 values on the record, small requests: what the kill loops send."""
    return Workload(
        records_per_request=RECORDS_PER_REQUEST,
        attributes_per_record=1,
        repeated_share=0.0,
        attribute_key=KEY,
        distinct_values=4,
        placement=Placement.RECORD,
        resources_per_request=1,
        pool_size=pool_size,
    )


def test_twenty_kills_under_retrying_load_lose_nothing_acknowledged(tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path}/state.db"
    ports = (free_port(), free_port(), free_port())
    target = f"127.0.0.1:{ports[0]}"
    workload = kill_workload(pool_size=2_000)
    # Every body is sent in one request only, and the run sends each request at most once.
    requests = build_requests(workload)
    began = wait_for_window_start(window=WINDOW)
    service = start(store, ports)
    summary: list[LoadSummary] = []
    stop_sdk = threading.Event()
    stop_load = threading.Event()
    loadgen = threading.Thread(target=load_until, args=(target, requests, stop_load, summary))
    exporter = RecordingExporter(target)
    sdk = threading.Thread(target=sdk_sender, args=(exporter, stop_sdk))
    loadgen.start()
    sdk.start()
    chance = random.Random()
    journaled = []
    try:
        for _ in range(KILLS):
            # A random instant: group commits run every 10 ms under this load, so some kills
            # land while one is being written.
            time.sleep(chance.uniform(0.2, 1.0))
            service.process.send_signal(signal.SIGKILL)
            service.process.wait(10)
            service = start(store, ports)
            journaled.append(service.wait_log("state_restored")["journaled_records"])
        killed_at = time.time()
        stop_sdk.set()
        stop_load.set()
        sdk.join(60)
        loadgen.join(60)
        assert not loadgen.is_alive() and not sdk.is_alive()
        acknowledged = sum(chunk.records_acknowledged for chunk in summary)
        expected = acknowledged_per_value(summary)
        expected[SDK_VALUE] = (len(exporter.acknowledged), len(set(exporter.acknowledged)))
        entries = wait_for_day(service, day_of(began), expected, every=0.1)
        windows = window_records(service, began)
        assert service.stop() == 0
    finally:
        stop_sdk.set()
        stop_load.set()
        if service.process.poll() is None:
            service.process.kill()
    extra, sdk_extra = assert_counted_once(
        entries, windows, summary, exporter, SDK_VALUE, KILLS, CALLERS
    )
    # The journal did the work: restarts found acknowledged counts no checkpoint held yet.
    assert sum(journaled) > 0
    print(
        json.dumps(
            {
                "kills": KILLS,
                "acknowledged_records": acknowledged + len(exporter.acknowledged),
                "extra_records": extra + sdk_extra,
                "retries": sum(chunk.retries for chunk in summary),
                "load_runs": len(summary),
                "load_seconds": round(sum(chunk.elapsed_seconds for chunk in summary), 1),
                "journaled_records_at_restart": journaled,
                "kill_loop_seconds": round(killed_at - began, 1),
                "seconds": round(time.time() - began, 1),
            }
        )
    )
