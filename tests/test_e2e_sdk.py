"""The official OpenTelemetry Python SDK exporters against the real service.

Each test starts the service on free loopback ports, sends through the SDK's OTLP exporter
(gRPC or HTTP, compressed or not), stops the service and compares the final report with the
counts the test computed from what it emitted.
"""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.sdk._logs.export import LogRecordExporter

from tests.support.expected import only_report, summary_of
from tests.support.sdk_senders import KEY, SdkSenders
from tests.support.servicetools import ONE_WINDOW, ServiceProcess, running_service


def grpc_exporter(service: ServiceProcess, gzip: bool) -> LogRecordExporter:
    return GrpcLogExporter(
        endpoint=f"http://{service.grpc_target}",
        insecure=True,
        compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
    )


def http_exporter(service: ServiceProcess, gzip: bool) -> LogRecordExporter:
    return HttpLogExporter(
        endpoint=f"{service.http_url}/v1/logs",
        compression=HttpCompression.Gzip if gzip else HttpCompression.NoCompression,
    )


EXPORTERS = {"grpc": grpc_exporter, "http": http_exporter}


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exporter_counts_every_attribute_placement(transport: str, gzip: bool) -> None:
    with running_service("--attribute-key", KEY, "--window", ONE_WINDOW) as service:
        # Small batches, so each provider sends several Export requests.
        senders = SdkSenders(lambda: EXPORTERS[transport](service, gzip), batch_size=7)
        senders.emit_every_placement(records_per_placement=6)
        senders.emit_every_placement(records_per_placement=3, tag="second round")
        senders.flush_and_shut_down()
        accepted = service.metric("otlp_stats_records_accepted_total", {"transport": transport})
        assert accepted == senders.expected.records
        assert service.stop() == 0
        report = only_report(service.all_reports())
    assert summary_of(report) == senders.expected.summary()
    assert report["records"] == senders.expected.records
