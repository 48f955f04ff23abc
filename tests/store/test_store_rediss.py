"""Redis as managed services run it: TLS only, a password in the URL, a CA file to trust.

A real redis-server listens on `--tls-port` alone, with a certificate from a CA made here;
the store, `otlp-stats query` and the stream sink reach it with `rediss://` URLs, and the
password never shows in what they print or log.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import grpc
import pytest
import redis
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from otlp_stats.cli.main import main
from otlp_stats.config import ConfigError, load_settings
from otlp_stats.reporting.sinks.base import SinkReport
from otlp_stats.reporting.sinks.outbox import KeptReport
from otlp_stats.reporting.sinks.redis_stream import RedisStream
from otlp_stats.reporting.sinks.uri import RedisStreamSpec, parse_sink_uri
from tests.support.certs import Credentials, make_credentials
from tests.support.fakes import export_request, log_record
from tests.support.redistools import RedisServer, RedisTls, free_port
from tests.support.servicetools import ServiceProcess, running_service

PASSWORD = "s3cret-Pa55word"
KEY = "service.name"
WINDOW = 1.0


@pytest.fixture
def credentials(tmp_path: Path) -> Credentials:
    directory = tmp_path / "certs"
    directory.mkdir()
    return make_credentials(directory)


@pytest.fixture
def tls_redis(tmp_path: Path, credentials: Credentials) -> Iterator[RedisServer]:
    tls = RedisTls(credentials.server.cert, credentials.server.key, credentials.ca, PASSWORD)
    server = RedisServer(tmp_path, tls)
    server.start()
    yield server
    server.stop()


def _query(capsys: pytest.CaptureFixture[str], store: str, day: str) -> tuple[int, str, str]:
    status = main(["query", "--store", store, "--window", str(WINDOW), "--from", day, "--json"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _today() -> str:
    return datetime.fromtimestamp(time.time(), tz=UTC).strftime("%Y-%m-%d")


def test_service_stores_over_tls_and_query_reads_it_back_without_showing_the_password(
    tls_redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = (
        "--store", tls_redis.url,
        "--attribute-key", KEY,
        "--window", str(WINDOW),
        "--merge-grace", "0.3",
        "--replica-id", "solo",
    )  # fmt: skip
    bodies = [f"message {n}" for n in range(7)]
    with running_service(*flags) as service:
        with grpc.insecure_channel(service.grpc_target) as channel:
            LogsServiceStub(channel).Export(  # type: ignore[no-untyped-call]
                export_request(log_record(body, **{KEY: "checkout"}) for body in bodies),
                timeout=10,
            )
        reports = service.reports_until(
            lambda r: r.get("scope") == "global" and any(v["records"] for v in r["values"])
        )
        service.stop()
        logs = service.stderr_text
    assert [v["records"] for v in reports[-1]["values"] if v["value"] == "checkout"] == [7]
    status, out, err = _query(capsys, tls_redis.url, _today())
    assert status == 0, err
    values = [v for p in json.loads(out)["periods"] for v in p["values"]]
    assert [(v["value"], v["records"], v["distinct_messages"]) for v in values] == [
        ("checkout", 7, 7)
    ]
    assert "rediss://:***@127.0.0.1" in logs  # the start line names the store, masked
    assert PASSWORD not in logs + out + err


def test_a_ca_that_did_not_sign_the_server_fails_query_with_one_clear_line(
    tls_redis: RedisServer, credentials: Credentials, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tls_redis.url.replace(str(credentials.ca), str(credentials.stranger_ca))
    status, out, err = _query(capsys, wrong, _today())
    assert status == 3
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("otlp-stats query: the store cannot be read:")
    assert "certificate verify failed" in err
    assert PASSWORD not in err


def test_stream_sink_over_tls_adds_each_report_as_an_entry(
    tls_redis: RedisServer, credentials: Credentials
) -> None:
    uri = (
        f"rediss-stream://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0"
        f"?stream=reports&ssl_ca_certs={credentials.ca}"
    )
    spec = parse_sink_uri(uri)
    assert isinstance(spec, RedisStreamSpec)
    assert spec.scheme == "rediss-stream"

    async def deliver_two() -> None:
        sink = RedisStream(spec)
        await sink.open()
        try:
            for n, line in enumerate(('{"n": 1}', '{"n": 2}')):
                await sink.deliver(SinkReport.kept(KeptReport(n, f"key-{n}", line, ())))
        finally:
            await sink.close()

    asyncio.run(deliver_two())
    client = redis.Redis.from_url(tls_redis.url)
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange("reports"))
    client.close()
    assert [fields[b"report"] for _, fields in entries] == [b'{"n": 1}', b'{"n": 2}']


def test_the_service_delivers_its_reports_to_a_tls_stream_and_logs_no_password(
    tls_redis: RedisServer, credentials: Credentials
) -> None:
    sink = (
        f"rediss-stream://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0"
        f"?stream=reports&ssl_ca_certs={credentials.ca}"
    )
    service = ServiceProcess(
        *("--window", "3600", "--report-format", "json", "--attribute-key", KEY),
        *("--report-sink", "stdout", "--report-sink", sink),
    )
    try:
        service.wait_serving()
        with grpc.insecure_channel(service.grpc_target) as channel:
            LogsServiceStub(channel).Export(  # type: ignore[no-untyped-call]
                export_request(log_record(b, **{KEY: "checkout"}) for b in ("a", "b", "a")),
                timeout=10,
            )
        metrics = service.http_get("/metrics")[1]
        # SIGTERM closes the window: its partial report goes to stdout and the stream alike.
        assert service.stop() == 0
    finally:
        service.stop()
    printed = [line for line in service.stdout.lines if line.startswith("{")]
    client = redis.Redis.from_url(tls_redis.url)
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange("reports"))
    client.close()
    assert [fields[b"report"].decode() for _, fields in entries] == printed
    assert len(printed) == 1 and '"records":3' in printed[0]
    assert 'sink="rediss-stream"' in metrics
    assert PASSWORD not in service.stderr_text + metrics


def test_query_against_an_unreachable_redis_exits_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = _query(capsys, f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", _today())
    assert (status, out) == (3, "")
    assert len(err.splitlines()) == 1
    assert "connecting to 127.0.0.1" in err
    assert PASSWORD not in err


def test_rediss_urls_naming_a_missing_ca_file_fail_at_start_with_the_password_masked(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-ca.pem"
    with pytest.raises(ConfigError) as raised:
        load_settings(["--store", f"rediss://:{PASSWORD}@h:6380/0?ssl_ca_certs={missing}"])
    assert "ssl_ca_certs" in str(raised.value)
    assert PASSWORD not in str(raised.value)
    sink = f"rediss-stream://:{PASSWORD}@h:6380/0?stream=s&ssl_ca_certs={missing}"
    with pytest.raises(ConfigError) as raised:
        load_settings(["--report-sink", sink])
    assert "ssl_ca_certs" in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_tls_file_parameters_belong_to_rediss_stream_only() -> None:
    with pytest.raises(ValueError, match="unknown parameter"):
        parse_sink_uri("redis-stream://h:6379/0?stream=s&ssl_ca_certs=/etc/hosts")
    spec = parse_sink_uri("rediss-stream://h:6380/2?stream=s&ssl_ca_certs=/etc/hosts")
    assert isinstance(spec, RedisStreamSpec)
    assert spec.url == "rediss://h:6380/2?ssl_ca_certs=%2Fetc%2Fhosts"


def test_service_with_the_wrong_ca_logs_one_clear_line_and_keeps_counting(
    tls_redis: RedisServer, credentials: Credentials
) -> None:
    wrong = tls_redis.url.replace(str(credentials.ca), str(credentials.stranger_ca))
    flags = (
        "--store", wrong,
        "--attribute-key", KEY,
        "--window", str(WINDOW),
        "--merge-grace", "0.3",
        # Counting on with Redis unreachable is checkpoint's: ack waits for Redis at start.
        "--durability", "checkpoint",
    )  # fmt: skip
    with running_service(*flags) as service:
        with grpc.insecure_channel(service.grpc_target) as channel:
            LogsServiceStub(channel).Export(  # type: ignore[no-untyped-call]
                export_request([log_record("hello", **{KEY: "checkout"})]), timeout=10
            )
        unreachable = service.wait_log("store_unreachable")
        # The window is still reported, from this replica's own count (on a busy machine an
        # empty window may be reported locally first).
        local = service.reports_until(
            lambda r: r.get("scope") == "local" and any(v["records"] for v in r["values"])
        )
        service.stop()
        logs = service.stderr_text
    assert "certificate verify failed" in unreachable["error"]
    assert len([line for line in logs.splitlines() if "store_unreachable" in line]) == 1
    assert any(v["records"] == 1 for v in local[-1]["values"])
    assert PASSWORD not in logs
