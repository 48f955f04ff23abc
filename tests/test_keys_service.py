"""Issue 18's proof: three attribute keys counted by the real service from one walk over each
request, over gRPC and OTLP/HTTP, each key found at every level (record, scope, resource)."""

from __future__ import annotations

import random
import signal
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.support.expected import ExpectedCounts, first_present, summary_of
from tests.support.fakes import Plain, export_request, log_record
from tests.support.grpctools import GrpcChannels
from tests.support.servicetools import ONE_WINDOW, ServiceProcess, running_service

KEYS = ("service.name", "k8s.namespace.name", "severity_text")
VALUES = {
    "service.name": ("checkout", "auth", "cart"),
    "k8s.namespace.name": ("prod", "staging"),
    "severity_text": ("INFO", "WARN", "ERROR"),
}
REQUESTS = 24


def _maybe(rng: random.Random, key: str) -> str | None:
    """A value of the key, or the key absent at this level (about a third of the time)."""
    return None if rng.random() < 0.35 else rng.choice(VALUES[key])


def _request(rng: random.Random, expected: dict[str, ExpectedCounts]) -> ExportLogsServiceRequest:
    """A request whose keys sit at random levels; `expected` learns what each key resolves to."""
    resource = {key: _maybe(rng, key) for key in KEYS}
    scope = {key: _maybe(rng, key) for key in KEYS}
    records = []
    for _ in range(rng.randint(1, 12)):
        on_record = {key: _maybe(rng, key) for key in KEYS}
        body = f"message {rng.randrange(15)}"
        attributes: dict[str, Plain] = {k: v for k, v in on_record.items() if v is not None}
        records.append(log_record(body, **attributes))
        for key in KEYS:
            value = first_present(on_record[key], scope[key], resource[key])
            expected[key].add(value, body)
    return export_request(
        records,
        resource={k: v for k, v in resource.items() if v is not None},
        scope={k: v for k, v in scope.items() if v is not None},
    )


def _post(service: ServiceProcess, request: ExportLogsServiceRequest) -> None:
    sent = urllib.request.Request(
        f"{service.http_url}/v1/logs",
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with urllib.request.urlopen(sent, timeout=10) as response:
        assert response.status == 200


def _key_flags() -> list[str]:
    return [flag for key in KEYS for flag in ("--attribute-key", key)]


@pytest.mark.parametrize("window_time", ["arrival", "event"])
def test_three_keys_over_both_transports_are_exact_from_one_walk_per_request(
    grpc_channels: GrpcChannels, window_time: str
) -> None:
    rng = random.Random(18)
    expected = {key: ExpectedCounts() for key in KEYS}
    requests = [_request(rng, expected) for _ in range(REQUESTS)]
    flags = [*_key_flags(), "--window", ONE_WINDOW, "--window-time", window_time]
    with running_service(*flags) as service:
        stub = grpc_channels.logs_stub(service.grpc_target)
        for number, request in enumerate(requests):
            if number % 2:
                _post(service, request)
            else:
                stub.Export(request, timeout=10)
        # Every Export has its answer once its records are counted: the walks are all done.
        scanned = service.metric("otlp_stats_requests_scanned_total")
        assert service.stop() == 0
        reports = service.all_reports()
    assert scanned == REQUESTS
    assert [report["attribute_key"] for report in reports] == list(KEYS)
    for report in reports:
        counts = expected[report["attribute_key"]]
        assert report["partial"] is True
        assert report["records"] == counts.records
        assert summary_of(report) == counts.summary()
    # Each level of each key was exercised: every key has values and records without it.
    for key in KEYS:
        assert {value for value, missing in expected[key].summary() if missing} == {"unknown"}


def test_text_reports_are_one_block_per_key(grpc_channels: GrpcChannels) -> None:
    rng = random.Random(7)
    expected = {key: ExpectedCounts() for key in KEYS}
    request = _request(rng, expected)
    flags = [*_key_flags(), "--window", ONE_WINDOW, "--report-format", "text"]
    with running_service(*flags) as service:
        grpc_channels.logs_stub(service.grpc_target).Export(request, timeout=10)
        assert service.stop() == 0
        service.process.wait(30)
        assert service.stdout.thread is not None
        service.stdout.thread.join(10)
    titles = [line for line in service.stdout.lines if line.startswith("window ")]
    assert [title.split("  ")[1] for title in titles] == [f"key={key}" for key in KEYS]
    totals = [line.split()[-1] for line in service.stdout.lines if line.strip().startswith("total")]
    assert totals == [str(expected[key].records) for key in KEYS]


def test_three_keys_with_several_processes_are_merged_per_key(
    grpc_channels: GrpcChannels,
) -> None:
    rng = random.Random(2)
    expected = {key: ExpectedCounts() for key in KEYS}
    requests = [_request(rng, expected) for _ in range(8)]
    flags = [*_key_flags(), "--window", ONE_WINDOW, "--processes", "2"]
    with running_service(*flags) as service:
        for number, request in enumerate(requests):
            if number % 2:
                _post(service, request)
            else:
                # A channel per request: the kernel spreads connections over the processes.
                grpc_channels.logs_stub(service.grpc_target).Export(request, timeout=10)
        assert service.stop() == 0
        reports = service.all_reports()
    assert [report["attribute_key"] for report in reports] == list(KEYS)
    for report in reports:
        assert summary_of(report) == expected[report["attribute_key"]].summary()


def test_three_keys_acknowledged_survive_a_kill_each_in_its_own_key(
    grpc_channels: GrpcChannels, tmp_path: Path
) -> None:
    """--durability ack journals each key's counts: a SIGKILL right after the answers, before
    any checkpoint, and the restarted service reports every key whole."""
    rng = random.Random(19)
    expected = {key: ExpectedCounts() for key in KEYS}
    requests = [_request(rng, expected) for _ in range(6)]
    flags = [*_key_flags(), "--window", ONE_WINDOW, "--store", f"sqlite://{tmp_path}/state.db"]
    flags += ["--durability", "ack", "--checkpoint-interval", "3600"]
    with running_service(*flags) as service:
        for request in requests:
            grpc_channels.logs_stub(service.grpc_target).Export(request, timeout=10)
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(10)
    with running_service(*flags) as service:
        restored = service.wait_log("state_restored")
        assert service.stop() == 0
        reports = service.all_reports()
    records = sum(counts.records for counts in expected.values()) // len(KEYS)
    assert restored["journaled_records"] == records
    assert [report["attribute_key"] for report in reports] == list(KEYS)
    for report in reports:
        assert summary_of(report) == expected[report["attribute_key"]].summary()
