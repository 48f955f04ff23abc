"""The load generator builds the workload asked for and knows exactly what was acknowledged."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import fields, replace
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf.any_pb2 import Any as PackedAny
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from bench.proc_stats import _descendants
from bench.server_process import ServerProcess
from otlp_stats.loadgen import (
    GroundTruth,
    LoadPlan,
    Placement,
    PreparedRequest,
    Workload,
    build_requests,
    digest_requests,
    run_load,
)
from otlp_stats.loadgen.cli import build_parser, workload_flags, workload_from
from otlp_stats.loadgen.retry import RETRY_INFO_TRAILER, STATUS_DETAILS_TRAILER, retry_delay

REPO = Path(__file__).resolve().parent.parent
SMALL = Workload(records_per_request=200, distinct_values=4, resources_per_request=4, pool_size=3)
KEY = SMALL.attribute_key


def decode(request: PreparedRequest) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest.FromString(request.payload)


def records_with_context(
    request: PreparedRequest,
) -> Iterator[tuple[list[str], list[str], LogRecord]]:
    """Each record with the attribute keys of its resource and of its scope."""
    for resource_logs in decode(request).resource_logs:
        resource_keys = [kv.key for kv in resource_logs.resource.attributes]
        for scope_logs in resource_logs.scope_logs:
            scope_keys = [kv.key for kv in scope_logs.scope.attributes]
            for record in scope_logs.log_records:
                yield resource_keys, scope_keys, record


def find(attributes: list[KeyValue]) -> str | None:
    return next((kv.value.string_value for kv in attributes if kv.key == KEY), None)


def independent_tallies(request: PreparedRequest) -> dict[str | None, tuple[int, set[str]]]:
    """Records and bodies per value, resolved record > scope > resource from the payload."""
    tallies: dict[str | None, tuple[int, set[str]]] = {}
    for resource_logs in decode(request).resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                value = find(list(record.attributes))
                if value is None:
                    value = find(list(scope_logs.scope.attributes))
                if value is None:
                    value = find(list(resource_logs.resource.attributes))
                records, bodies = tallies.get(value, (0, set()))
                tallies[value] = (records + 1, bodies | {record.body.string_value})
    return tallies


@pytest.mark.parametrize("placement", list(Placement))
def test_counted_attribute_sits_only_where_asked(placement: Placement) -> None:
    for request in build_requests(replace(SMALL, placement=placement)):
        for resource_keys, scope_keys, record in records_with_context(request):
            record_keys = [kv.key for kv in record.attributes]
            assert resource_keys.count(KEY) == (placement is Placement.RESOURCE)
            assert scope_keys.count(KEY) == (placement is Placement.SCOPE)
            assert record_keys.count(KEY) == (placement is Placement.RECORD)
            assert len(record_keys) == SMALL.attributes_per_record


def test_requests_carry_the_asked_record_count_and_body_length() -> None:
    workload = replace(SMALL, records_per_request=123, body_length=64)
    requests = build_requests(workload)
    assert len(requests) == workload.pool_size
    for request in requests:
        bodies = [record.body.string_value for *_, record in records_with_context(request)]
        assert request.records == len(bodies) == 123
        assert {len(body) for body in bodies} == {64}


@pytest.mark.parametrize("share", [0.0, 0.2, 0.75])
def test_repeated_share_is_the_share_of_records_whose_body_recurs(share: float) -> None:
    requests = build_requests(replace(SMALL, repeated_share=share))
    bodies = Counter(
        record.body.string_value
        for request in requests
        for *_, record in records_with_context(request)
    )
    recurring = sum(count for count in bodies.values() if count > 1)
    assert recurring == round(share * SMALL.records_per_request) * SMALL.pool_size


def test_every_value_appears_in_the_pool() -> None:
    for placement in (Placement.RECORD, Placement.SCOPE, Placement.RESOURCE):
        requests = build_requests(replace(SMALL, placement=placement, distinct_values=7))
        values = {value for request in requests for value in request.tallies}
        assert len(values) == 7


def test_the_same_workload_builds_the_same_bytes_and_another_seed_does_not() -> None:
    assert digest_requests(build_requests(SMALL)) == digest_requests(build_requests(SMALL))
    assert digest_requests(build_requests(SMALL)) != digest_requests(
        build_requests(replace(SMALL, seed=2))
    )


@pytest.mark.parametrize("placement", list(Placement))
def test_tallies_match_an_independent_count_of_the_payload(placement: Placement) -> None:
    for request in build_requests(replace(SMALL, placement=placement)):
        expected = independent_tallies(request)
        assert {
            value: (t.records, set(t.bodies)) for value, t in request.tallies.items()
        } == expected
        if placement is Placement.NOWHERE:
            assert set(request.tallies) == {None}


def test_command_line_flags_rebuild_the_same_workload() -> None:
    # The harness relies on this to have the load generator process send its requests.
    workload = replace(SMALL, placement=Placement.SCOPE, repeated_share=0.35, seed=7)
    flags = workload_flags(workload)
    assert len(flags) == len(fields(Workload)), "a Workload field has no flag"
    args = build_parser().parse_args(["--target=127.0.0.1:1", *flags])
    assert workload_from(args) == workload


def test_ground_truth_adds_records_per_acknowledgement_and_unions_bodies() -> None:
    requests = build_requests(SMALL)
    truth = GroundTruth(requests)
    truth.acknowledge(requests[0])
    truth.acknowledge(requests[0])
    truth.acknowledge(requests[2])
    first, third = independent_tallies(requests[0]), independent_tallies(requests[2])
    values = truth.values()
    assert set(values) == set(first) | set(third)
    for value, found in values.items():
        records_first, bodies_first = first.get(value, (0, set()))
        records_third, bodies_third = third.get(value, (0, set()))
        assert found.records == 2 * records_first + records_third
        assert found.distinct_messages == len(bodies_first | bodies_third)
    assert truth.records == 3 * SMALL.records_per_request


def test_retry_delay_comes_from_either_retry_info_trailer_else_backoff() -> None:
    info = RetryInfo(retry_delay=Duration(seconds=2, nanos=500_000_000))
    status = Status(code=14, details=[PackedAny()])
    status.details[0].Pack(info)
    assert retry_delay([(RETRY_INFO_TRAILER, info.SerializeToString())], attempt=0) == 2.5
    assert retry_delay([(STATUS_DETAILS_TRAILER, status.SerializeToString())], attempt=0) == 2.5
    assert retry_delay([("other", "x"), (RETRY_INFO_TRAILER, b"\xff")], attempt=0) == 0.05
    assert retry_delay([], attempt=10) == 1.0


class ScriptedLogsService:
    """Answers Export from a script of outcomes, then OK; remembers what it was sent."""

    def __init__(self, script: list[grpc.StatusCode | int]) -> None:
        # A status code refuses with a 10 ms RetryInfo; an int is an OK naming rejected records.
        self.script = script
        self.received = 0

    async def export(
        self, payload: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        self.received += 1
        outcome = self.script.pop(0) if self.script else 0
        if isinstance(outcome, grpc.StatusCode):
            retry_info = RetryInfo(retry_delay=Duration(nanos=10_000_000))
            await context.abort(
                outcome,
                "scripted refusal",
                trailing_metadata=((RETRY_INFO_TRAILER, retry_info.SerializeToString()),),
            )
        partial = ExportLogsPartialSuccess(rejected_log_records=outcome)
        return bytes(ExportLogsServiceResponse(partial_success=partial).SerializeToString())


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedLogsService, str]]:
    service = ScriptedLogsService([])
    handler: grpc.RpcMethodHandler[bytes, bytes]
    handler = grpc.unary_unary_rpc_method_handler(service.export)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.logs.v1.LogsService", {"Export": handler}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, f"127.0.0.1:{port}"
    await server.stop(grace=None)


async def test_retry_waits_as_retry_info_says_then_counts_the_acknowledgement(
    scripted: tuple[ScriptedLogsService, str],
) -> None:
    service, target = scripted
    service.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
    requests = build_requests(SMALL)
    plan = LoadPlan(target, callers=1, duration=None, requests=2, retry=True)
    summary = await run_load(plan, requests)
    assert (summary.requests_ok, summary.retries, service.received) == (2, 2, 4)
    assert summary.requests_refused == {}
    assert summary.records_acknowledged == summary.truth.records == 2 * SMALL.records_per_request


async def test_without_retry_a_refusal_is_final_and_not_in_the_truth(
    scripted: tuple[ScriptedLogsService, str],
) -> None:
    service, target = scripted
    service.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT, 5]
    requests = build_requests(SMALL)
    summary = await run_load(LoadPlan(target, callers=1, duration=None, requests=3), requests)
    assert summary.requests_refused == {"UNAVAILABLE": 1}
    assert summary.requests_failed == {"INVALID_ARGUMENT": 1}
    assert summary.requests_ok == 1
    assert summary.records_rejected == 5
    assert summary.records_acknowledged == SMALL.records_per_request - 5
    # Which records a partial success rejected is unknown, so the truth leaves it out.
    assert summary.truth.records == 0


async def test_baseline_server_counts_exactly_what_was_acknowledged() -> None:
    argv = [sys.executable, "-m", "bench.baseline_server", "--listen", "127.0.0.1:0"]
    with ServerProcess("baseline", argv, cwd=REPO, env=dict(os.environ)) as server:
        await asyncio.to_thread(server.start)
        requests = build_requests(SMALL)
        # Each request once: distinct counts then compare exactly, whatever the windows.
        plan = LoadPlan(f"127.0.0.1:{server.grpc_port}", callers=2, duration=None, requests=3)
        summary = await run_load(plan, requests)
        stopped = await asyncio.to_thread(server.stop)
    assert stopped.exit_code == 0
    assert summary.records_acknowledged == summary.truth.records == 3 * SMALL.records_per_request
    assert stopped.reported_records == summary.records_acknowledged
    reported = {
        (entry["missing"], entry["value"]): (entry["records"], entry["distinct_messages"])
        for report in stopped.reports
        for entry in report["values"]  # type: ignore[attr-defined]
    }
    expected = {
        (truth.value is None, truth.value or "unknown"): (truth.records, truth.distinct_messages)
        for truth in summary.truth.values().values()
    }
    assert reported == expected


async def test_transport_yardstick_reports_requests_times_their_records() -> None:
    argv = [
        sys.executable, "-m", "bench.baseline_server", "--listen", "127.0.0.1:0",
        "--transport-only", "--records-per-request", str(SMALL.records_per_request),
    ]  # fmt: skip
    with ServerProcess("transport", argv, cwd=REPO, env=dict(os.environ)) as server:
        await asyncio.to_thread(server.start)
        plan = LoadPlan(f"127.0.0.1:{server.grpc_port}", callers=2, duration=None, requests=4)
        summary = await run_load(plan, build_requests(SMALL))
        stopped = await asyncio.to_thread(server.stop)
    assert stopped.exit_code == 0
    assert summary.records_acknowledged == 4 * SMALL.records_per_request
    assert stopped.reported_records == summary.records_acknowledged


def _listening_sockets(port: int) -> int:
    """Sockets listening on the loopback `port`, IPv4 or IPv6 (/proc/net/tcp*: state 0A)."""
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            found += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return found


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_transport_yardstick_serves_one_port_from_two_processes_and_stops_both() -> None:
    argv = [
        sys.executable, "-m", "bench.baseline_server", "--listen", "127.0.0.1:0",
        "--transport-only", "--records-per-request", str(SMALL.records_per_request),
        "--processes", "2",
    ]  # fmt: skip
    with ServerProcess("transport pair", argv, cwd=REPO, env=dict(os.environ)) as server:
        await asyncio.to_thread(server.start)
        children = _descendants(server.pid)
        assert len(children) == 1
        # SO_REUSEPORT: a listening socket of each process's on the one port.
        assert _listening_sockets(server.grpc_port) == 2
        plan = LoadPlan(f"127.0.0.1:{server.grpc_port}", callers=2, duration=None, requests=4)
        summary = await run_load(plan, build_requests(SMALL))
        stopped = await asyncio.to_thread(server.stop)
    assert stopped.exit_code == 0
    assert summary.records_acknowledged == 4 * SMALL.records_per_request
    assert not _running(children[0])  # stopped with it, not left behind
    assert _listening_sockets(server.grpc_port) == 0
