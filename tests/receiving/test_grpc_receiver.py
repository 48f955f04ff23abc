"""The gRPC servicer, driven through grpcio-testing: statuses, trailers, what gets queued."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

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
from otlp_stats.receiving.grpc_receiver import (
    RETRY_INFO_TRAILER,
    STATUS_DETAILS_TRAILER,
    LogsReceiver,
)
from otlp_stats.receiving.intake import Intake
from otlp_stats.telemetry import Metrics, RateLimitedLog
from tests.support.fakes import FakeClock, export_request, log_record, worked_example_request
from tests.support.pipeline_front import GatedQueue, worker_pool

SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"]
EXPORT = SERVICE.methods_by_name["Export"]
T = TypeVar("T")


class NullLogger:
    def warning(self, event: str, **fields: Any) -> None:
        pass


class SyncServicer:
    """grpc_testing calls servicers synchronously; run our async handler on the harness's loop.

    The request arrives as the message the test built; the real server hands the handler raw
    bytes, so serialize it (or pass bytes through) the way the wire would.
    """

    def __init__(self, receiver: LogsReceiver, loop: asyncio.AbstractEventLoop) -> None:
        self._receiver = receiver
        self._loop = loop

    def Export(
        self, request: ExportLogsServiceRequest | bytes, context: Any
    ) -> ExportLogsServiceResponse:
        raw = request if isinstance(request, bytes) else request.SerializeToString()
        return asyncio.run_coroutine_threadsafe(
            self._receiver.Export(raw, context), self._loop
        ).result()


class Harness:
    """The servicer, intake, queue and workers (pipeline_front) on an event loop of their own.

    grpc_testing runs each call in a thread of its own, so a call can wait for its verdict while
    the test goes on: `invoke` starts one, `export` runs one to its end.
    """

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
        self.queue = GatedQueue(queue_size, queue_bytes)
        self.metrics = Metrics(CollectorRegistry())
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.workers, self.counted = worker_pool(self.queue, self.metrics, max_records)
        self.run(self.workers.start())
        intake = Intake(
            self.queue,
            self.health,
            self.clock,
            self.metrics,
            max_size,
            2.5,
            RateLimitedLog(NullLogger()),
        )
        servicer = SyncServicer(LogsReceiver(intake, self.metrics), self.loop)
        self.server = grpc_testing.server_from_dictionary(
            {SERVICE: servicer}, grpc_testing.strict_real_time()
        )

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the harness's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def close_gate(self) -> None:
        """Workers take nothing from now on: admitted requests wait in the queue."""
        self.run(_called(self.queue.close_gate))

    def open_gate(self) -> None:
        self.run(_called(self.queue.open_gate))

    def close(self) -> None:
        self.run(self.workers.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def invoke(self, request: ExportLogsServiceRequest | bytes) -> Any:
        return self.server.invoke_unary_unary(EXPORT, (), request, None)

    def export(
        self, request: ExportLogsServiceRequest | bytes
    ) -> tuple[Any, dict[str, Any], grpc.StatusCode, str]:
        response, trailing, code, details = self.invoke(request).termination()
        return response, dict(trailing or ()), code, details

    def refused(self, transport: str, reason: str) -> float:
        return (
            self.metrics.registry.get_sample_value(
                "otlp_stats_export_refused_total", {"transport": transport, "reason": reason}
            )
            or 0.0
        )


async def _called(function: Callable[[], None]) -> None:
    function()


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**limits: int) -> Harness:
        made.append(Harness(**limits))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


def test_valid_request_is_counted_with_its_arrival_time_then_acknowledged(
    harness: Harness,
) -> None:
    harness.close_gate()
    call = harness.invoke(worked_example_request())
    harness.run(harness.queue.wait_depth(1))
    assert harness.queue.oldest_arrival() == harness.clock.now()
    assert harness.counted.batches == []  # not counted yet, so not answered yet
    harness.open_gate()
    response, _, code, _ = call.termination()
    assert code == grpc.StatusCode.OK
    assert response == ExportLogsServiceResponse()
    [(arrival, batch)] = harness.counted.batches
    assert arrival == harness.clock.now()
    assert {label: counted.records for label, counted in batch.items()} == {
        "bar": 1,
        "qux": 1,
        "baz": 2,
        None: 1,
    }
    assert harness.queue.depth == 0
    assert (
        harness.metrics.registry.get_sample_value(
            "otlp_stats_records_accepted_total", {"transport": "grpc"}
        )
        == 5
    )


def test_empty_request_succeeds_and_counts_nothing(harness: Harness) -> None:
    for request in (ExportLogsServiceRequest(), export_request([])):
        _, _, code, _ = harness.export(request)
        assert code == grpc.StatusCode.OK
    assert harness.queue.depth == 0
    assert harness.counted.batches == []


def test_malformed_request_is_invalid_argument_with_a_reason_and_counts_nothing(
    harness: Harness,
) -> None:
    _, _, code, details = harness.export(b"\x0a\xff\xff\xff")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode ExportLogsServiceRequest" in details
    assert harness.queue.depth == 0
    assert harness.counted.batches == []
    assert harness.refused("grpc", "malformed") == 1


def test_full_queue_answers_unavailable_with_retry_info_in_both_trailers(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(queue_size=1)
    harness.close_gate()
    waiting = harness.invoke(worked_example_request())
    harness.run(harness.queue.wait_depth(1))
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
    harness.open_gate()
    assert waiting.termination()[2] == grpc.StatusCode.OK


def test_queue_full_by_bytes_is_refused_with_its_own_reason(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(queue_bytes=300)
    big = export_request([log_record("x" * 200, foo="a")])
    harness.close_gate()
    waiting = harness.invoke(big)
    harness.run(harness.queue.wait_depth(1))
    assert harness.export(big)[2] == grpc.StatusCode.UNAVAILABLE
    assert harness.refused("grpc", "queue_bytes") == 1
    harness.open_gate()
    assert waiting.termination()[2] == grpc.StatusCode.OK


def test_draining_refuses_with_unavailable_and_retry_info(harness: Harness) -> None:
    harness.health.move_to(HealthState.DRAINING)
    _, trailers, code, _ = harness.export(worked_example_request())
    assert code == grpc.StatusCode.UNAVAILABLE
    assert RETRY_INFO_TRAILER in trailers
    assert harness.queue.depth == 0


def test_request_over_the_record_limit_is_resource_exhausted_and_not_counted(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(max_records=3)
    _, trailers, code, details = harness.export(export_request([log_record("")] * 4))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4 log records exceeds the limit of 3" in details
    assert RETRY_INFO_TRAILER not in trailers
    assert harness.counted.batches == []
    _, _, code, _ = harness.export(export_request([log_record("")] * 3))
    assert code == grpc.StatusCode.OK
    [(_, batch)] = harness.counted.batches
    assert [counted.records for counted in batch.values()] == [3]


def test_request_over_the_size_limit_is_resource_exhausted_without_retry_info(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(max_size=100)
    _, trailers, code, details = harness.export(export_request([log_record("x" * 200)]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceeds the limit of 100" in details
    assert RETRY_INFO_TRAILER not in trailers  # OTLP: RESOURCE_EXHAUSTED without RetryInfo is final
