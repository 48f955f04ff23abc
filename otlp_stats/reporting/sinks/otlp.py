"""otlp+grpc:// and otlp+http://: each report as OTLP metrics, per value a gauge of distinct
messages, a delta sum of records over the window, and a gauge of distinct patterns when they
are counted."""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from otlp_stats.reporting.sinks.base import Refused, RetryLater, SinkReport
from otlp_stats.reporting.sinks.uri import OtlpSpec, for_log
from otlp_stats.reporting.sinks.webhook import post_once

SERVICE_NAME = "otlp-stats"
DISTINCT_METRIC = "otlp_stats.distinct_messages"
RECORDS_METRIC = "otlp_stats.records"
PATTERNS_METRIC = "otlp_stats.distinct_patterns"
# The OTLP exporter specification's retryable gRPC codes.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_NANOS = 1_000_000_000


def _attribute(key: str, value: str | bool) -> common_pb2.KeyValue:
    if isinstance(value, bool):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(bool_value=value))
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def build_request(
    item: SinkReport, replica: str
) -> metrics_service_pb2.ExportMetricsServiceRequest:
    """One request per report: each metric, one point each per value of the window."""
    fields = item.fields
    # OTLP sinks keep nothing in the outbox, so their reports are never read back without one.
    assert item.report is not None, "an OTLP sink got a kept report"
    start = round(item.report.start * _NANOS)
    end = round(item.report.end * _NANOS)
    distinct = metrics_pb2.Gauge()
    records = metrics_pb2.Sum(
        aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_DELTA, is_monotonic=True
    )
    patterns = metrics_pb2.Gauge()
    for entry in fields["values"]:
        attributes = _point_attributes(fields["attribute_key"], entry)
        distinct.data_points.append(
            metrics_pb2.NumberDataPoint(
                attributes=attributes,
                start_time_unix_nano=start,
                time_unix_nano=end,
                as_int=entry["distinct_messages"],
            )
        )
        records.data_points.append(
            metrics_pb2.NumberDataPoint(
                attributes=attributes,
                start_time_unix_nano=start,
                time_unix_nano=end,
                as_int=entry["records"],
            )
        )
        # In the report's values only when patterns are counted (--count-patterns).
        if "distinct_patterns" in entry:
            patterns.data_points.append(
                metrics_pb2.NumberDataPoint(
                    attributes=attributes,
                    start_time_unix_nano=start,
                    time_unix_nano=end,
                    as_int=entry["distinct_patterns"],
                )
            )
    metrics = [
        metrics_pb2.Metric(
            name=DISTINCT_METRIC,
            description="Distinct log messages in the window.",
            unit="{message}",
            gauge=distinct,
        ),
        metrics_pb2.Metric(
            name=RECORDS_METRIC,
            description="Log records in the window.",
            unit="{record}",
            sum=records,
        ),
    ]
    if patterns.data_points:
        metrics.append(
            metrics_pb2.Metric(
                name=PATTERNS_METRIC,
                description="Distinct message patterns in the window.",
                unit="{pattern}",
                gauge=patterns,
            )
        )
    resource = [_attribute("service.name", SERVICE_NAME)]
    if replica:
        resource.append(_attribute("service.instance.id", replica))
    return metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource_pb2.Resource(attributes=resource),
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(
                        scope=common_pb2.InstrumentationScope(name=SERVICE_NAME),
                        metrics=metrics,
                    )
                ],
            )
        ]
    )


def _point_attributes(key: str, entry: dict[str, Any]) -> list[common_pb2.KeyValue]:
    return [
        _attribute("otlp_stats.key", key),
        _attribute("otlp_stats.value", entry["value"]),
        _attribute("otlp_stats.missing", bool(entry["missing"])),
        _attribute("otlp_stats.overflow", bool(entry["overflow"])),
        _attribute("otlp_stats.estimated", bool(entry["estimated"])),
    ]


def _retry_info(error: grpc.aio.AioRpcError) -> float | None:
    """The delay a server asks for in google.rpc.RetryInfo, in the status details."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                delay: float = info.retry_delay.seconds + info.retry_delay.nanos / _NANOS
                return delay
    return None


class OtlpMetrics:
    def __init__(self, spec: OtlpSpec, replica: str) -> None:
        self._spec = spec
        self._replica = replica
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._ssl: Any = None

    async def open(self) -> None:
        if self._spec.transport == "grpc":
            self._channel = self._grpc_channel()
            self._stub = metrics_service_pb2_grpc.MetricsServiceStub(self._channel)  # type: ignore[no-untyped-call]
        else:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._spec.timeout)
            )
            if self._spec.ca_file is not None:
                import ssl

                self._ssl = ssl.create_default_context(cafile=str(self._spec.ca_file))

    def _grpc_channel(self) -> grpc.aio.Channel:
        if not self._spec.tls:
            return grpc.aio.insecure_channel(self._spec.target)
        roots = self._spec.ca_file.read_bytes() if self._spec.ca_file is not None else None
        return grpc.aio.secure_channel(
            self._spec.target, grpc.ssl_channel_credentials(root_certificates=roots)
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, item: SinkReport) -> None:
        request = build_request(item, self._replica)
        if self._spec.transport == "grpc":
            await self._export_grpc(request)
        else:
            await self._export_http(request)

    async def _export_grpc(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        metadata = (("authorization", f"Bearer {self._spec.token}"),) if self._spec.token else ()
        try:
            await self._stub.Export(request, timeout=self._spec.timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            if error.code() in _RETRYABLE:
                raise RetryLater(
                    f"{error.code().name}: {error.details()}", _retry_info(error)
                ) from None
            raise Refused(f"{error.code().name}: {error.details()}") from None

    async def _export_http(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        assert self._session is not None, "deliver before open"
        headers = {"Content-Type": "application/x-protobuf"}
        if self._spec.token:
            headers["Authorization"] = f"Bearer {self._spec.token}"
        await post_once(
            self._session,
            self._spec.target,
            for_log(self._spec.target),
            request.SerializeToString(),
            headers,
            self._ssl if self._ssl is not None else True,
        )
