"""The gRPC servicer, driven through grpcio-testing: statuses, trailers, what gets queued."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc_testing
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from prometheus_client import CollectorRegistry

from otlp_stats.health import Health, HealthState
from otlp_stats.intake import Intake
from otlp_stats.queue import RequestQueue
from otlp_stats.receiver import RETRY_INFO_TRAILER, STATUS_DETAILS_TRAILER, LogsReceiver
from otlp_stats.scan import default_scanner
from otlp_stats.telemetry import Metrics, RateLimitedLog
from tests.fakes import FakeClock, export_request, log_record, worked_example_request

SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"]
EXPORT = SERVICE.methods_by_name["Export"]


class NullLogger:
    def warning(self, event: str, **fields: Any) -> None:
        pass


class SyncServicer:
    """grpc_testing calls servicers synchronously; run our async handler to completion.

    The request arrives as the message the test built; the real server hands the handler raw
    bytes, so serialize it (or pass bytes through) the way the wire would.
    """

    def __init__(self, receiver: LogsReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: ExportLogsServiceRequest | bytes, context: Any
    ) -> ExportLogsServiceResponse:
        raw = request if isinstance(request, bytes) else request.SerializeToString()
        return asyncio.run(self._receiver.Export(raw, context))


class Harness:
    def __init__(
        self,
        queue_size: int = 10,
        queue_bytes: int = 1 << 20,
        max_size: int = 1 << 20,
        max_records: int = 1000,
    ) -> None:
        self.health = Health()
        self.health.move_to(HealthState.SERVING)
        self.clock = FakeClock()
        self.queue = RequestQueue(queue_size, queue_bytes)
        self.metrics = Metrics(CollectorRegistry())
        intake = Intake(
            self.queue,
            self.health,
            self.clock,
            self.metrics,
            max_size,
            max_records,
            2.5,
            RateLimitedLog(NullLogger()),
            default_scanner("foo"),
        )
        servicer = SyncServicer(LogsReceiver(intake, self.metrics))
        self.server = grpc_testing.server_from_dictionary(
            {SERVICE: servicer}, grpc_testing.strict_real_time()
        )

    def export(
        self, request: ExportLogsServiceRequest | bytes
    ) -> tuple[Any, dict[str, Any], grpc.StatusCode, str]:
        rpc = self.server.invoke_unary_unary(EXPORT, (), request, None)
        response, trailing, code, details = rpc.termination()
        return response, dict(trailing or ()), code, details

    def refused(self, transport: str, reason: str) -> float:
        return (
            self.metrics.registry.get_sample_value(
                "otlp_stats_export_refused_total", {"transport": transport, "reason": reason}
            )
            or 0.0
        )


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_valid_request_is_queued_with_its_arrival_time_and_acknowledged(harness: Harness) -> None:
    response, _, code, _ = harness.export(worked_example_request())
    assert code == grpc.StatusCode.OK
    assert response == ExportLogsServiceResponse()
    assert harness.queue.depth == 1
    assert harness.queue.oldest_arrival() == harness.clock.now()
    assert (
        harness.metrics.registry.get_sample_value(
            "otlp_stats_records_accepted_total", {"transport": "grpc"}
        )
        == 5
    )


def test_empty_request_succeeds_and_queues_nothing(harness: Harness) -> None:
    for request in (ExportLogsServiceRequest(), export_request([])):
        _, _, code, _ = harness.export(request)
        assert code == grpc.StatusCode.OK
    assert harness.queue.depth == 0


def test_malformed_request_is_invalid_argument_with_a_reason_and_counts_nothing(
    harness: Harness,
) -> None:
    _, _, code, details = harness.export(b"\x0a\xff\xff\xff")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode ExportLogsServiceRequest" in details
    assert harness.queue.depth == 0
    assert harness.refused("grpc", "malformed") == 1


def test_full_queue_answers_unavailable_with_retry_info_in_both_trailers() -> None:
    harness = Harness(queue_size=1)
    assert harness.export(worked_example_request())[2] == grpc.StatusCode.OK
    _, trailers, code, details = harness.export(worked_example_request())
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "retry after 2.5s" in details
    retry_info = error_details_pb2.RetryInfo.FromString(trailers[RETRY_INFO_TRAILER])
    assert retry_info.retry_delay.ToMilliseconds() == 2500
    status = status_pb2.Status.FromString(trailers[STATUS_DETAILS_TRAILER])
    assert status.code == code_pb2.UNAVAILABLE
    unpacked = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(unpacked) and unpacked == retry_info
    assert harness.queue.depth == 1
    assert harness.refused("grpc", "queue_requests") == 1


def test_queue_full_by_bytes_is_refused_with_its_own_reason() -> None:
    harness = Harness(queue_bytes=300)
    big = export_request([log_record("x" * 200, foo="a")])
    assert harness.export(big)[2] == grpc.StatusCode.OK
    assert harness.export(big)[2] == grpc.StatusCode.UNAVAILABLE
    assert harness.refused("grpc", "queue_bytes") == 1


def test_draining_refuses_with_unavailable_and_retry_info(harness: Harness) -> None:
    harness.health.move_to(HealthState.DRAINING)
    _, trailers, code, _ = harness.export(worked_example_request())
    assert code == grpc.StatusCode.UNAVAILABLE
    assert RETRY_INFO_TRAILER in trailers
    assert harness.queue.depth == 0


def test_request_over_the_record_limit_is_resource_exhausted_and_not_queued() -> None:
    harness = Harness(max_records=3)
    _, trailers, code, details = harness.export(export_request([log_record("")] * 4))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4 log records exceeds the limit of 3" in details
    assert RETRY_INFO_TRAILER not in trailers
    assert harness.queue.depth == 0
    _, _, code, _ = harness.export(export_request([log_record("")] * 3))
    assert code == grpc.StatusCode.OK
    assert harness.queue.depth == 1


def test_request_over_the_size_limit_is_resource_exhausted_without_retry_info() -> None:
    harness = Harness(max_size=100)
    _, trailers, code, details = harness.export(export_request([log_record("x" * 200)]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceeds the limit of 100" in details
    assert RETRY_INFO_TRAILER not in trailers  # OTLP: RESOURCE_EXHAUSTED without RetryInfo is final
