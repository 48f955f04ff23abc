"""The OTLP/gRPC front door: LogsService/Export, translating refusals into gRPC statuses.

The servicer is thin: it hands the raw request bytes to the Intake and maps what it raises to
a status in one table. Requests arrive as raw bytes (no deserializer registered) so that a
malformed request gets INVALID_ARGUMENT with a reason instead of grpc's generic INTERNAL.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)

from otlp_stats.counting.queue import Verdict
from otlp_stats.errors import (
    CountingFailed,
    ExportRefused,
    MalformedRequest,
    NotDurable,
    Overloaded,
    RequestTimeout,
    RequestTooLarge,
    ShuttingDown,
    Unauthenticated,
    UnsupportedMediaType,
)
from otlp_stats.receiving.intake import Intake
from otlp_stats.telemetry import Metrics

SERVICE_NAME = "opentelemetry.proto.collector.logs.v1.LogsService"
EXPORT_METHOD = f"/{SERVICE_NAME}/Export"
# Where the Python SDK exporter looks for RetryInfo; Go clients read grpc-status-details-bin.
RETRY_INFO_TRAILER = "google.rpc.retryinfo-bin"
STATUS_DETAILS_TRAILER = "grpc-status-details-bin"

# The one table from refusal to gRPC status. OTLP: UNAVAILABLE is retryable; RESOURCE_EXHAUSTED
# is retryable only with RetryInfo, so a too-large request gets it without RetryInfo.
_GRPC_STATUS: dict[type[ExportRefused], grpc.StatusCode] = {
    MalformedRequest: grpc.StatusCode.INVALID_ARGUMENT,
    RequestTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Overloaded: grpc.StatusCode.UNAVAILABLE,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    NotDurable: grpc.StatusCode.UNAVAILABLE,
    UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    CountingFailed: grpc.StatusCode.INTERNAL,
}


def grpc_status_for(refusal: ExportRefused) -> grpc.StatusCode:
    for kind, code in _GRPC_STATUS.items():
        if isinstance(refusal, kind):
            return code
    return grpc.StatusCode.INTERNAL


def retry_delay_of(refusal: ExportRefused) -> float | None:
    """How long the sender should wait before retrying, or None when it should not retry."""
    delay = getattr(refusal, "retry_delay", None)
    return delay if refusal.retryable and delay is not None else None


def rpc_status(refusal: ExportRefused) -> status_pb2.Status:
    """The refusal as a google.rpc.Status, with RetryInfo when the sender should retry.

    Both front doors answer with it: gRPC in grpc-status-details-bin, HTTP as the body.
    """
    status = status_pb2.Status(
        code=getattr(code_pb2, grpc_status_for(refusal).name), message=str(refusal)
    )
    delay = retry_delay_of(refusal)
    if delay is not None:
        status.details.add().Pack(retry_info(delay))
    return status


# Shared by every fully accepted Export: nothing mutates it, and it is serialized as it is sent.
_ACCEPTED = ExportLogsServiceResponse()


def export_response(verdict: Verdict) -> ExportLogsServiceResponse:
    """The answer to a counted request: OTLP partial success when some records were rejected.

    OTLP: a server that accepted every record leaves partial_success unset.
    """
    if not verdict.rejected:
        return _ACCEPTED
    return ExportLogsServiceResponse(
        partial_success=ExportLogsPartialSuccess(
            rejected_log_records=verdict.rejected, error_message=verdict.message
        )
    )


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = Duration()
    delay.FromNanoseconds(round(seconds * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


class LogsReceiver:
    """Servicer for LogsService/Export; works with grpc.aio and grpc_testing contexts alike."""

    def __init__(self, intake: Intake, metrics: Metrics) -> None:
        self._intake = intake
        self._duration = metrics.door("grpc").export_duration

    async def Export(self, request: bytes, context: Any) -> ExportLogsServiceResponse:
        started = time.perf_counter()
        try:
            verdict = await self._intake.accept(request, "grpc")
        except ExportRefused as refusal:
            self._refuse(refusal, context)
            return _ACCEPTED  # discarded: the status says the call failed
        finally:
            self._duration.observe(time.perf_counter() - started)
        return export_response(verdict)

    @staticmethod
    def _refuse(refusal: ExportRefused, context: Any) -> None:
        # Status and trailers are set rather than raised with abort(): the response that follows
        # is discarded by gRPC for a non-OK status, and the code stays testable with grpc_testing.
        context.set_code(grpc_status_for(refusal))
        context.set_details(str(refusal))
        delay = retry_delay_of(refusal)
        if delay is not None:
            # RetryInfo twice: in the Status (Go clients) and alone (the Python SDK).
            context.set_trailing_metadata(
                (
                    (STATUS_DETAILS_TRAILER, rpc_status(refusal).SerializeToString()),
                    (RETRY_INFO_TRAILER, retry_info(delay).SerializeToString()),
                )
            )


def logs_service_handler(receiver: LogsReceiver) -> grpc.GenericRpcHandler:
    export: grpc.RpcMethodHandler[bytes, ExportLogsServiceResponse]
    export = grpc.unary_unary_rpc_method_handler(
        receiver.Export,
        request_deserializer=None,
        response_serializer=ExportLogsServiceResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Export": export})
