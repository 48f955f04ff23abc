"""Report sinks against real peers on loopback: a file, a webhook, Redis, OTLP metrics."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio
import pytest
import redis
import structlog
from aiohttp import web
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client import CollectorRegistry

from otlp_stats.clock import SystemClock
from otlp_stats.config import ConfigError, describe, load_settings
from otlp_stats.counting.aggregator import Aggregator, ValueReport, WindowReport
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.counting.sketches import DistinctEstimate
from otlp_stats.reporting.reporter import Reporter, render_json
from otlp_stats.reporting.sinks.base import (
    QueuedSink,
    Refused,
    ReportSinks,
    RetryLater,
    SinkReport,
)
from otlp_stats.reporting.sinks.build import open_sinks
from otlp_stats.reporting.sinks.outbox import KeptReport
from otlp_stats.reporting.sinks.uri import OtlpSpec, WebhookSpec, for_log, parse_sink_uri
from otlp_stats.reporting.sinks.webhook import Webhook
from otlp_stats.telemetry import Metrics
from tests.support.certs import make_credentials
from tests.support.redistools import RedisServer, free_port

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
KEY = "service.name"
LOG = structlog.get_logger("test")


def window(n: int, *, revision: int = 1, partial: bool = False) -> WindowReport:
    values = (
        ValueReport(f"svc-{n}", DistinctEstimate.exact(n + 2), 10 * n + 3),
        ValueReport(None, DistinctEstimate.exact(1), 1),
    )
    return WindowReport(
        start=T0 + 10 * n,
        end=T0 + 10 * (n + 1),
        partial=partial,
        records=10 * n + 4,
        distinct=DistinctEstimate.exact(n + 3),
        values=values,
        revision=revision,
    )


def json_line(report: WindowReport) -> str:
    return render_json(report, KEY, "unknown")


class Reporting:
    """A reporter with sinks, printing to a string; stdout's format is the test's choice."""

    def __init__(
        self,
        uris: list[str],
        report_format: str = "json",
        queue_size: int = 1000,
        backoff_first: float = 0.01,
    ):
        self.out = io.StringIO()
        self.sinks = open_sinks(
            uris, LOG, queue_size, replica="replica-a", backoff_first=backoff_first
        )
        self.registry = CollectorRegistry()
        self.registry.register(self.sinks.collector())
        self.reporter = Reporter(
            Aggregator(10, T0),
            RequestQueue(1, 1),
            SystemClock(),
            self.out,
            Metrics(CollectorRegistry()),
            KEY,
            "unknown",
            report_format,
            sinks=self.sinks,
        )
        self.sinks.start()

    def metric(self, name: str, sink: str) -> float:
        value = self.registry.get_sample_value(f"otlp_stats_sink_{name}", {"sink": sink})
        assert value is not None
        return value


@pytest.fixture
async def reporting() -> AsyncIterator[Callable[..., Reporting]]:
    made: list[ReportSinks] = []

    def make(uris: list[str], **kwargs: object) -> Reporting:
        pipeline = Reporting(uris, **kwargs)  # type: ignore[arg-type]
        made.append(pipeline.sinks)
        return pipeline

    yield make
    for sinks in made:
        await sinks.stop(1.0)


async def test_file_sink_holds_the_json_lines_whatever_stdout_prints(
    reporting: Callable[..., Reporting], tmp_path: Path
) -> None:
    path = tmp_path / "reports.jsonl"
    plain = Reporter(
        Aggregator(10, T0), RequestQueue(1, 1), SystemClock(), io.StringIO(),
        Metrics(CollectorRegistry()), KEY, "unknown", "text",
    )  # fmt: skip
    pipeline = reporting(["stdout", f"file://{path}"], report_format="text")
    reports = [window(0), window(1), window(0, revision=2), window(2, partial=True)]
    for report in reports:
        pipeline.reporter.print_report(report)
        plain.print_report(report)
    await pipeline.sinks.stop(5.0)
    assert path.read_text().splitlines() == [json_line(report) for report in reports]
    # stdout is what it was without sinks, byte for byte.
    assert pipeline.out.getvalue() == plain._out.getvalue()  # type: ignore[attr-defined]
    assert pipeline.metric("delivered_total", "file") == 4


async def test_a_sink_named_alone_replaces_stdout(
    reporting: Callable[..., Reporting], tmp_path: Path
) -> None:
    pipeline = reporting([f"file://{tmp_path / 'r.jsonl'}"])
    pipeline.reporter.print_report(window(0))
    await pipeline.sinks.stop(5.0)
    assert pipeline.out.getvalue() == ""
    assert (tmp_path / "r.jsonl").read_text() == json_line(window(0)) + "\n"


async def test_file_sink_rotates_by_size_and_keeps_a_bounded_number_of_old_files(
    reporting: Callable[..., Reporting], tmp_path: Path
) -> None:
    path = tmp_path / "reports.jsonl"
    line_bytes = len(json_line(window(5)).encode()) + 1
    pipeline = reporting([f"file://{path}?max_bytes={2 * line_bytes + 10}&backups=2"])
    reports = [window(n) for n in range(5, 13)]
    for report in reports:
        pipeline.reporter.print_report(report)
    await pipeline.sinks.stop(5.0)
    files = file_sizes(tmp_path)
    assert sorted(files) == ["reports.jsonl", "reports.jsonl.1", "reports.jsonl.2"]
    kept = [
        line
        for name in ("reports.jsonl.2", "reports.jsonl.1", "reports.jsonl")
        for line in (tmp_path / name).read_text().splitlines()
    ]
    # Two lines a file, three files: the newest six reports, in order; the oldest rotated out.
    assert kept == [json_line(report) for report in reports[-6:]]
    assert all(size <= 2 * line_bytes + 10 for size in files.values())


def file_sizes(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in directory.iterdir()}


def stream_reports(client: redis.Redis, stream: str, *, last: bool = False) -> list[str]:
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        client.xrevrange(stream, count=1) if last else client.xrange(stream),
    )
    return [fields[b"report"].decode() for _, fields in entries]


class WebhookReceiver:
    """/ok takes everything; /flaky answers 503 to each report's first try; /bad answers 400."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[str]] = {"ok": [], "flaky": [], "bad": []}
        self.headers: list[dict[str, str]] = []
        self._seen: set[str] = set()
        self._arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{path}", self.handle)
        self.runner = web.AppRunner(app)
        self.port = free_port()

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.text()
        self.bodies[path].append(body)
        self.headers.append(dict(request.headers))
        self._arrived.set()
        if path == "bad":
            return web.Response(status=400)
        if path == "flaky" and body not in self._seen:
            self._seen.add(body)
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.Response(status=204)

    async def wait_for(self, path: str, count: int) -> None:
        async with asyncio.timeout(10.0):
            while len(self.bodies[path]) < count:
                self._arrived.clear()
                await self._arrived.wait()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.runner.cleanup()


async def test_webhook_gets_every_report_as_json_with_the_headers_of_its_file(
    reporting: Callable[..., Reporting], receiver: WebhookReceiver, tmp_path: Path
) -> None:
    headers = tmp_path / "headers"
    headers.write_text("# the token stays out of the URI\nAuthorization: Bearer s3cret\n")
    pipeline = reporting([f"{receiver.url('ok')}?headers_file={headers}"])
    reports = [window(0), window(1), window(1, revision=2)]
    for report in reports:
        pipeline.reporter.print_report(report)
    await pipeline.sinks.stop(5.0)
    assert receiver.bodies["ok"] == [json_line(report) for report in reports]
    assert {h["Content-Type"] for h in receiver.headers} == {"application/json"}
    assert {h["Authorization"] for h in receiver.headers} == {"Bearer s3cret"}


async def test_webhook_retries_after_a_503_but_not_after_a_400(
    reporting: Callable[..., Reporting], receiver: WebhookReceiver
) -> None:
    pipeline = reporting([receiver.url("flaky"), receiver.url("bad")])
    reports = [window(0), window(1)]
    for report in reports:
        pipeline.reporter.print_report(report)
    await pipeline.sinks.stop(5.0)
    expected = [json_line(report) for report in reports]
    # Each report tried twice at the flaky one (503, then taken), once at the refusing one.
    assert receiver.bodies["flaky"] == [expected[0], expected[0], expected[1], expected[1]]
    assert receiver.bodies["bad"] == expected
    assert pipeline.metric("retried_total", "http") == 2
    assert pipeline.metric("delivered_total", "http") == 2
    assert pipeline.metric("failed_total", "http") == 2


async def test_a_dead_sink_neither_holds_up_stdout_nor_the_other_sinks_and_counts_drops(
    reporting: Callable[..., Reporting], receiver: WebhookReceiver
) -> None:
    dead = f"redis-stream://127.0.0.1:{free_port()}/0?stream=reports&retries=100"
    pipeline = reporting(["stdout", dead, receiver.url("ok")], queue_size=2)
    reports = [window(n) for n in range(6)]
    for count, report in enumerate(reports, 1):
        pipeline.reporter.print_report(report)
        # stdout has each report at once: handing it to the sinks' queues never waits.
        assert len(pipeline.out.getvalue().splitlines()) == count
        await receiver.wait_for("ok", count)
    assert pipeline.out.getvalue().splitlines() == [json_line(report) for report in reports]
    assert receiver.bodies["ok"] == [json_line(report) for report in reports]
    # Six offered to a queue of two: at most two queued and one in delivery, the rest dropped.
    assert pipeline.metric("dropped_total", "redis-stream") >= 3
    await pipeline.sinks.stop(0.3)
    # What was left at stop is dropped too: every report accounted for, none delivered.
    assert pipeline.metric("dropped_total", "redis-stream") == 6
    assert pipeline.metric("delivered_total", "redis-stream") == 0
    assert pipeline.metric("retried_total", "redis-stream") >= 1
    assert pipeline.metric("queue_depth", "redis-stream") == 0
    assert pipeline.metric("dropped_total", "http") == 0


async def test_redis_stream_has_one_entry_per_report_trimmed_about_maxlen(
    reporting: Callable[..., Reporting], tmp_path: Path
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        pipeline = reporting([f"redis-stream://127.0.0.1:{server.port}/0?stream=reports"])
        reports = [window(n) for n in range(3)]
        for report in reports:
            pipeline.reporter.print_report(report)
        trimmed = reporting([f"redis-stream://127.0.0.1:{server.port}/0?stream=trimmed&maxlen=10"])
        many = [window(n) for n in range(400)]
        for report in many:
            trimmed.reporter.print_report(report)
        await pipeline.sinks.stop(10.0)
        await trimmed.sinks.stop(10.0)
        assert stream_reports(client, "reports") == [json_line(report) for report in reports]
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange("reports"))
        keys = [fields[b"idempotency_key"] for _, fields in entries]
        assert keys == [
            f"2026-01-01T00:00:{10 * n:02d}Z/{KEY}/1/replica-a".encode() for n in range(3)
        ]
        # MAXLEN ~ 10: whole nodes trimmed, so more than 10 stay but far fewer than 400.
        length = client.xlen("trimmed")
        assert 10 <= length < 250
        assert stream_reports(client, "trimmed", last=True) == [json_line(many[-1])]
        client.close()
    finally:
        server.stop()


def assert_points_match(
    request: metrics_service_pb2.ExportMetricsServiceRequest, report: WindowReport
) -> None:
    (resource_metrics,) = request.resource_metrics
    resource = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
    assert resource == {"service.name": "otlp-stats", "service.instance.id": "replica-a"}
    (scope,) = resource_metrics.scope_metrics
    by_name = {metric.name: metric for metric in scope.metrics}
    assert set(by_name) == {"otlp_stats.distinct_messages", "otlp_stats.records"}
    records = by_name["otlp_stats.records"].sum
    assert records.aggregation_temporality == metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    gauge = by_name["otlp_stats.distinct_messages"].gauge
    expected = json.loads(json_line(report))["values"]
    for points, field in (
        (gauge.data_points, "distinct_messages"),
        (records.data_points, "records"),
    ):
        got = []
        for point in points:
            assert point.start_time_unix_nano == int(report.start * 1e9)
            assert point.time_unix_nano == int(report.end * 1e9)
            attributes = {a.key: a.value for a in point.attributes}
            got.append(
                {
                    "key": attributes["otlp_stats.key"].string_value,
                    "value": attributes["otlp_stats.value"].string_value,
                    "missing": attributes["otlp_stats.missing"].bool_value,
                    "overflow": attributes["otlp_stats.overflow"].bool_value,
                    "estimated": attributes["otlp_stats.estimated"].bool_value,
                    field: point.as_int,
                }
            )
        assert got == [
            {
                "key": KEY,
                "value": entry["value"],
                "missing": entry["missing"],
                "overflow": entry["overflow"],
                "estimated": entry["estimated"],
                field: entry[field],
            }
            for entry in expected
        ]


class MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    """Answers UNAVAILABLE to the first Export, then takes them all, with their token."""

    def __init__(self, *, refuse_first: bool = True, retry_delay: float | None = None) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.tokens: list[str] = []
        self.refused = 0 if refuse_first else 1
        self._retry_delay = retry_delay

    async def Export(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        if not self.refused:
            self.refused += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up", self._retry_info())
        self.tokens.append(str(dict(context.invocation_metadata() or ()).get("authorization")))
        self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def _retry_info(self) -> tuple[tuple[str, bytes], ...]:
        """google.rpc.RetryInfo in the status details, as a server asks for a pause."""
        if self._retry_delay is None:
            return ()
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromTimedelta(datetime.timedelta(seconds=self._retry_delay))
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], details=[detail])
        return (("grpc-status-details-bin", status.SerializeToString()),)


async def test_otlp_grpc_metrics_decode_to_the_report_points(
    reporting: Callable[..., Reporting], tmp_path: Path
) -> None:
    servicer = MetricsReceiver()
    server = grpc.aio.server()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    try:
        pipeline = reporting([f"otlp+grpc://127.0.0.1:{port}?token_file={token}"])
        reports = [window(0), window(1)]
        for report in reports:
            pipeline.reporter.print_report(report)
        await pipeline.sinks.stop(10.0)
    finally:
        await server.stop(None)
    assert servicer.refused == 1
    assert len(servicer.requests) == 2
    for request, report in zip(servicer.requests, reports, strict=True):
        assert_points_match(request, report)
    assert servicer.tokens == ["Bearer t0ken", "Bearer t0ken"]
    assert pipeline.metric("retried_total", "otlp+grpc") == 1


async def test_otlp_http_metrics_decode_to_the_report_points(
    reporting: Callable[..., Reporting],
) -> None:
    received: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
    tries = []

    async def handle(request: web.Request) -> web.Response:
        tries.append(request.headers["Content-Type"])
        if len(tries) == 1:
            return web.Response(status=503, headers={"Retry-After": "0"})
        received.append(
            metrics_service_pb2.ExportMetricsServiceRequest.FromString(await request.read())
        )
        return web.Response(
            body=metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        pipeline = reporting([f"otlp+http://127.0.0.1:{port}/v1/metrics"])
        pipeline.reporter.print_report(window(3))
        await pipeline.sinks.stop(10.0)
    finally:
        await runner.cleanup()
    assert tries == ["application/x-protobuf"] * 2
    (request,) = received
    assert_points_match(request, window(3))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bogus://somewhere", "unknown sink"),
        ("redis-stream://127.0.0.1:6379/0", "needs ?stream=NAME"),
        ("https://hooks.example/x?headers_file=/nonexistent/headers", "cannot be read"),
        ("file:///nonexistent-dir/reports.jsonl", "no such directory"),
        ("file:///tmp/r.jsonl?max_bytes=-1", "max_bytes"),
    ],
)
def test_a_bad_sink_uri_is_a_configuration_error(uri: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--report-sink") as error:
        load_settings(["--report-sink", "stdout", "--report-sink", uri], environ={}, cwd=tmp_path)
    assert message in str(error.value)


def test_a_sink_named_twice_is_a_configuration_error(tmp_path: Path) -> None:
    # Their outbox rows would share one id: every report's keep would fail, none be kept.
    first = "redis-stream://:one@127.0.0.1:6379/0?stream=r"
    second = "redis-stream://:two@127.0.0.1:6379/0?stream=r"
    with pytest.raises(ConfigError, match="named twice") as error:
        load_settings(["--report-sink", first, "--report-sink", second], environ={}, cwd=tmp_path)
    assert "one" not in str(error.value) and "two" not in str(error.value)


def test_sinks_come_from_a_comma_list_in_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        [], environ={"OTLP_STATS_REPORT_SINK": f"stdout, file://{tmp_path}/r.jsonl"}, cwd=tmp_path
    )
    assert settings.report_sink == ("stdout", f"file://{tmp_path}/r.jsonl")
    assert load_settings([], environ={}, cwd=tmp_path).report_sink == ("stdout",)


async def test_sinks_run_off_the_reporters_loop() -> None:
    # The reporter's loop only hands over: a sink's own loop is another thread's.
    sinks = open_sinks(["stdout"], LOG)
    sinks.start()
    await sinks.stop(0.1)
    assert sinks.stdout and sinks.sinks == ()
    await asyncio.sleep(0)


def test_otlp_uris_say_their_transport_tls_and_target(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here\n")
    grpc_spec = parse_sink_uri("otlp+grpcs://collector:4317")
    http_spec = parse_sink_uri(f"otlp+http://collector:4318?ca_file={ca}")
    assert isinstance(grpc_spec, OtlpSpec) and isinstance(http_spec, OtlpSpec)
    assert (grpc_spec.transport, grpc_spec.target, grpc_spec.tls) == (
        "grpc",
        "collector:4317",
        True,
    )
    # A CA file means TLS; the path defaults to the OTLP one.
    assert http_spec.target == "https://collector:4318/v1/metrics" and http_spec.tls


def test_the_start_line_hides_a_sink_password(tmp_path: Path) -> None:
    settings = load_settings(
        ["--report-sink", "redis-stream://user:hunter2@redis:6379/0?stream=s"],
        environ={},
        cwd=tmp_path,
    )
    shown = str(describe(settings)["report_sink"])
    assert "hunter2" not in shown and "user:***@redis" in shown


async def test_otlp_over_tls_verifies_the_server_with_the_ca_file(
    reporting: Callable[..., Reporting], tmp_path: Path
) -> None:
    credentials = make_credentials(tmp_path)
    cert, key = credentials.server.read()
    servicer = MetricsReceiver(refuse_first=False)
    server = grpc.aio.server()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    await server.start()
    try:
        trusting = reporting([f"otlp+grpcs://localhost:{port}?ca_file={credentials.ca}"])
        # The stranger CA did not sign the server's certificate: no handshake, no report.
        wary = reporting(
            [f"otlp+grpcs://localhost:{port}?ca_file={credentials.stranger_ca}&retries=0"]
        )
        trusting.reporter.print_report(window(4))
        wary.reporter.print_report(window(4))
        await trusting.sinks.stop(10.0)
        await wary.sinks.stop(10.0)
    finally:
        await server.stop(None)
    (request,) = servicer.requests
    assert_points_match(request, window(4))
    assert wary.metric("failed_total", "otlp+grpc") == 1
    assert wary.metric("delivered_total", "otlp+grpc") == 0


async def test_a_sink_that_cannot_open_keeps_trying_and_counts_what_it_could_not_send(
    tmp_path: Path,
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("checked at start\n")
    sinks = open_sinks([f"otlp+https://127.0.0.1:{free_port()}?ca_file={ca}"], LOG)
    ca.unlink()  # gone between the start's check and the sink's first connection
    registry = CollectorRegistry()
    registry.register(sinks.collector())
    sinks.start()
    sinks.offer(SinkReport(window(0), lambda _: {}, lambda _: "{}"))
    await sinks.stop(0.3)
    assert registry.get_sample_value("otlp_stats_sink_dropped_total", {"sink": "otlp+http"}) == 1
    assert registry.get_sample_value("otlp_stats_sink_delivered_total", {"sink": "otlp+http"}) == 0


async def test_the_pause_a_peer_asks_for_beats_the_backoff(
    reporting: Callable[..., Reporting], receiver: WebhookReceiver
) -> None:
    # A backoff of 30-60 s would outlast the stop's grace: only the peers' pauses
    # (Retry-After: 0, RetryInfo of 50 ms) get the reports through in time.
    servicer = MetricsReceiver(retry_delay=0.05)
    server = grpc.aio.server()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        pipeline = reporting(
            [receiver.url("flaky"), f"otlp+grpc://127.0.0.1:{port}"], backoff_first=60.0
        )
        pipeline.reporter.print_report(window(0))
        await pipeline.sinks.stop(5.0)
    finally:
        await server.stop(None)
    assert receiver.bodies["flaky"] == [json_line(window(0))] * 2
    assert servicer.refused == 1 and len(servicer.requests) == 1
    assert pipeline.metric("delivered_total", "http") == 1
    assert pipeline.metric("delivered_total", "otlp+grpc") == 1


def test_a_bad_sink_uri_is_told_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs") as error:
        load_settings(
            ["--report-sink", "redis-stream://u:hunter2@redis:1/0"], environ={}, cwd=tmp_path
        )
    assert "hunter2" not in str(error.value) and "u:***@redis" in str(error.value)


def test_a_webhook_keeps_its_own_query_and_leaves_ours_out(tmp_path: Path) -> None:
    headers = tmp_path / "headers"
    headers.write_text("X-Team: logs\n")
    spec = parse_sink_uri(f"https://hooks.example/t?key=abc&headers_file={headers}&retries=2")
    assert isinstance(spec, WebhookSpec)
    assert spec.url == "https://hooks.example/t?key=abc"
    assert (spec.headers, spec.retries, spec.scheme) == ((("X-Team", "logs"),), 2, "https")


class ScriptedTarget:
    """A peer that accepts or refuses each report as the test says, and tells it has answered."""

    def __init__(self) -> None:
        self.accept = True
        self.answered = asyncio.Event()

    async def open(self) -> None:
        pass

    async def deliver(self, item: SinkReport) -> None:
        self.answered.set()
        if not self.accept:
            raise Refused("400 for the test")

    async def close(self) -> None:
        pass


async def _delivered_one(sink: QueuedSink, target: ScriptedTarget, report: WindowReport) -> None:
    target.answered.clear()
    sink.offer(SinkReport(report, lambda _: {}, lambda _: "{}"))
    await target.answered.wait()
    await sink.wait_idle()


async def test_last_success_time_is_when_a_peer_last_accepted_a_report() -> None:
    wall = [1_800_000_000.0]
    ok, flaky = ScriptedTarget(), ScriptedTarget()
    sinks = [
        QueuedSink("http", target, 10, 0, LOG, wall_clock=lambda: wall[0]) for target in (ok, flaky)
    ]
    registry = CollectorRegistry()
    registry.register(ReportSinks(sinks, False, LOG).collector())

    def last_success() -> float | None:
        return registry.get_sample_value(
            "otlp_stats_sink_last_success_timestamp_seconds", {"sink": "http"}
        )

    runs = [asyncio.create_task(sink.run()) for sink in sinks]
    try:
        assert last_success() == 0  # none yet
        for sink, target in zip(sinks, (ok, flaky), strict=True):
            await _delivered_one(sink, target, window(0))
        assert last_success() == 1_800_000_000.0
        # One sink of the scheme down: the metric stays at its last success while the other
        # sink keeps delivering, so it shows.
        wall[0] += 60
        flaky.accept = False
        await _delivered_one(sinks[0], ok, window(1))
        await _delivered_one(sinks[1], flaky, window(1))
        assert sinks[0].last_success == 1_800_000_060.0
        assert sinks[1].failed == 1
        assert last_success() == 1_800_000_000.0
        wall[0] += 60
        flaky.accept = True
        await _delivered_one(sinks[1], flaky, window(2))
        assert last_success() == 1_800_000_060.0
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)


async def test_last_success_time_of_a_real_sink_is_the_wall_time_of_delivery(
    reporting: Callable[..., Reporting], tmp_path: Path
) -> None:
    pipeline = reporting([f"file://{tmp_path / 'r.jsonl'}"])
    before = time.time()
    pipeline.reporter.print_report(window(0))
    await pipeline.sinks.stop(5.0)
    assert before <= pipeline.metric("last_success_timestamp_seconds", "file") <= time.time()


SLACK_LIKE = "https://hooks.example/services/T01/B02/s3cr3tT0ken?sig=deadbeef"


def test_a_webhook_address_is_shown_without_the_secrets_in_its_path_and_query() -> None:
    shown = for_log(SLACK_LIKE)
    assert shown == "https://hooks.example/services/…?sig=***"
    assert for_log("redis-stream://u:pw@redis:6379/0?stream=r") == (
        "redis-stream://u:***@redis:6379/0?stream=r"
    )


def test_the_start_up_line_and_a_repeated_sink_hide_a_webhook_token(tmp_path: Path) -> None:
    settings = load_settings(["--report-sink", SLACK_LIKE], environ={}, cwd=tmp_path)
    assert "s3cr3tT0ken" not in str(describe(settings))
    with pytest.raises(ConfigError, match="named twice") as error:
        load_settings(
            ["--report-sink", SLACK_LIKE, "--report-sink", SLACK_LIKE], environ={}, cwd=tmp_path
        )
    assert "s3cr3tT0ken" not in str(error.value) and "deadbeef" not in str(error.value)


async def test_an_unreachable_webhook_is_retried_without_its_token_in_the_reason() -> None:
    spec = parse_sink_uri(f"http://127.0.0.1:{free_port()}/hook/s3cr3tT0ken?sig=deadbeef")
    assert isinstance(spec, WebhookSpec)
    hook = Webhook(spec)
    await hook.open()
    try:
        with pytest.raises(RetryLater) as error:
            await hook.deliver(SinkReport.kept(KeptReport(1, "0/k/1/-", "{}", ("x",))))
    finally:
        await hook.close()
    assert "s3cr3tT0ken" not in str(error.value) and "deadbeef" not in str(error.value)
    assert "127.0.0.1" in str(error.value)


def test_a_report_offered_once_the_sinks_are_closing_is_counted_as_dropped() -> None:
    target = ScriptedTarget()
    sink = QueuedSink("http", target, 10, 0, LOG)
    sinks = ReportSinks([sink], False, LOG)
    sinks.start()
    sinks.offer(SinkReport(window(0), lambda _: {}, lambda _: "{}"))
    sinks.close(grace=5.0)
    assert (sink.delivered, sink.dropped) == (1, 0)
    sinks.offer(SinkReport(window(60), lambda _: {}, lambda _: "{}"))
    # Neither queued where nobody will send it, nor lost without a trace.
    assert (sink.depth, sink.dropped) == (0, 1)
