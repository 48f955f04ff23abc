"""Clients of a service running with TLS and bearer tokens: raw gRPC, raw HTTPS, SDK exporters."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import requests
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.sdk._logs.export import LogRecordExporter

from tests.support.certs import Identity
from tests.support.servicetools import ServiceProcess, metric_value

EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
KEY = "tenant"


def export_request(value: str, *bodies: str) -> bytes:
    """One request: a record per body, each with the counted attribute set to `value`."""
    records = [
        LogRecord(
            body=AnyValue(string_value=body),
            attributes=[KeyValue(key=KEY, value=AnyValue(string_value=value))],
        )
        for body in bodies
    ]
    request = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    )
    return request.SerializeToString()


@dataclass(frozen=True)
class ClientSide:
    """What a client brings: the CA it trusts, its certificate (for mTLS) and its token."""

    ca: Path | None = None  # None: plaintext
    identity: Identity | None = None
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {} if self.token is None else {"authorization": f"Bearer {self.token}"}

    def grpc_channel(self, service: ServiceProcess) -> grpc.Channel:
        if self.ca is None:
            return grpc.insecure_channel(service.grpc_target)
        return grpc.secure_channel(service.grpc_target, self.grpc_credentials())

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        assert self.ca is not None
        key, chain = (None, None)
        if self.identity is not None:
            chain, key = self.identity.read()
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), key, chain)

    def grpc_export(self, service: ServiceProcess, payload: bytes) -> None:
        """Raises grpc.RpcError on any refusal."""
        with self.grpc_channel(service) as channel:
            export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EXPORT)
            export(payload, timeout=10, metadata=tuple(self.headers().items()))

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca is None:
            return None
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.identity is not None:
            context.load_cert_chain(self.identity.cert, self.identity.key)
        return context

    def https(self, url: str, body: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
        """POST (with a body) or GET; the status, body and headers, 4xx and 5xx included."""
        headers = {**self.headers(), "Content-Type": "application/x-protobuf"}
        request = urllib.request.Request(url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.ssl_context()) as answer:
                return answer.status, answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def http_export(self, service: ServiceProcess, payload: bytes) -> tuple[int, bytes]:
        scheme = "http" if self.ca is None else "https"
        status, body, _ = self.https(
            f"{scheme}://127.0.0.1:{service.ports['http_port']}/v1/logs", payload
        )
        return status, body

    def sdk_exporter(self, service: ServiceProcess, transport: str) -> LogRecordExporter:
        if transport == "grpc":
            return GrpcLogExporter(
                endpoint=f"https://{service.grpc_target}",
                credentials=self.grpc_credentials(),
                headers=self.headers(),
            )
        assert self.ca is not None
        # requests lets REQUESTS_CA_BUNDLE (set on many CI machines) override a session's
        # `verify`, so the exporter's CA file would be ignored; a session that ignores the
        # environment keeps the test about the CA it names.
        session = requests.Session()
        session.trust_env = False
        return HttpLogExporter(
            session=session,
            endpoint=f"https://127.0.0.1:{service.ports['http_port']}/v1/logs",
            certificate_file=str(self.ca),
            client_certificate_file=None if self.identity is None else str(self.identity.cert),
            client_key_file=None if self.identity is None else str(self.identity.key),
            headers=self.headers(),
        )


def admin_metric(
    service: ServiceProcess, client: ClientSide, name: str, labels: dict[str, str]
) -> float | None:
    """A /metrics sample read over the admin port as `client` (https when it brings a CA)."""
    scheme = "http" if client.ca is None else "https"
    status, body, _ = client.https(f"{scheme}://127.0.0.1:{service.ports['admin_port']}/metrics")
    assert status == 200, body
    return metric_value(body.decode(), name, labels)
