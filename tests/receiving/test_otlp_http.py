"""The OTLP/HTTP front door on a real port, in process: what a sender gets back, what is counted.

The Intake, queue and workers are the real ones, the queue with a gate (pipeline_front), so a
test sees exactly what was admitted and can fill the queue at will.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
import structlog
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client import CollectorRegistry

from otlp_stats.clock import SystemClock
from otlp_stats.config import ListenAddress
from otlp_stats.counting.view import decode_view
from otlp_stats.health import Health, HealthState
from otlp_stats.receiving.http_receiver import JSON, PROTOBUF, build_otlp_http_site
from otlp_stats.receiving.http_server import HttpServer
from otlp_stats.receiving.intake import Intake
from otlp_stats.receiving.otlp_json import encode_json_request
from otlp_stats.telemetry import Metrics, RateLimitedLog
from tests.support.encodings import COMPRESSORS, compress
from tests.support.fakes import export_request, log_record, worked_example_request
from tests.support.pipeline_front import GatedQueue, worker_pool

LIMIT = 64 * 1024
WIDE_LIMIT = 8 * 1024 * 1024
RETRY_DELAY = 0.25
TRACE_ID = "5b8efff798038103d269b633813fc60c"


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]


@dataclass
class FrontDoor:
    url: str
    queue: GatedQueue
    health: Health
    registry: CollectorRegistry
    session: aiohttp.ClientSession

    async def post(self, body: bytes, content_type: str = PROTOBUF, **headers: str) -> Answer:
        async with self.session.post(
            self.url, data=body, headers={"Content-Type": content_type, **headers}
        ) as response:
            return Answer(
                response.status,
                response.content_type,
                await response.read(),
                dict(response.headers),
            )

    async def counted_bodies(self) -> list[list[str]]:
        """Per request admitted and counted, the string bodies of its records."""
        return [
            [
                AnyValue.FromString(record.body).string_value
                for resource_logs in decode_view(item.wire).resource_logs
                for scope_logs in resource_logs.scope_logs
                for record in scope_logs.log_records
            ]
            for item in self.queue.taken
            if item.verdict.done() and not item.verdict.cancelled() and not item.verdict.exception()
        ]

    def refused(self, reason: str) -> float | None:
        return self.registry.get_sample_value(
            "otlp_stats_export_refused_total", {"transport": "http", "reason": reason}
        )


@pytest.fixture
async def door() -> AsyncIterator[FrontDoor]:
    async with open_door(LIMIT) as opened:
        yield opened


@pytest.fixture
async def wide_door() -> AsyncIterator[FrontDoor]:
    """A door whose limit admits OTLP/JSON bodies past the sizes that decide where they decode."""
    async with open_door(WIDE_LIMIT) as opened:
        yield opened


@asynccontextmanager
async def open_door(limit: int) -> AsyncIterator[FrontDoor]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    health = Health()
    health.move_to(HealthState.SERVING)
    queue = GatedQueue(max_requests=2, max_bytes=limit * 4)
    workers, _ = worker_pool(queue, metrics, key="service.name")
    await workers.start()
    intake = Intake(
        queue,
        health,
        SystemClock(),
        metrics,
        limit,
        RETRY_DELAY,
        RateLimitedLog(structlog.get_logger("test")),
    )
    site: HttpServer = build_otlp_http_site(intake, metrics, ListenAddress("127.0.0.1", 0), limit)
    await site.start()
    # auto_decompress=False: the tests send Content-Encoding bodies exactly as given.
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield FrontDoor(f"http://127.0.0.1:{site.port}/v1/logs", queue, health, registry, session)
    await site.stop()
    await workers.stop()


def otlp_json_request() -> bytes:
    return json.dumps(
        {
            "resourceLogs": [
                {
                    "resource": {"attributes": [{"key": "foo", "value": {"stringValue": "res"}}]},
                    "scopeLogs": [
                        {
                            "scope": {"name": "lib", "attributes": []},
                            "logRecords": [
                                {
                                    "timeUnixNano": "1767225600000000000",
                                    "severityNumber": 9,
                                    "traceId": TRACE_ID,
                                    "spanId": "eee19b7ec3c1b174",
                                    "body": {"stringValue": "checkout done"},
                                    "attributes": [{"key": "foo", "value": {"stringValue": "rec"}}],
                                    "aFieldFromTheFuture": {"x": 1},
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    ).encode()


async def test_protobuf_success_answers_an_export_response_in_protobuf(door: FrontDoor) -> None:
    answer = await door.post(worked_example_request().SerializeToString())
    assert (answer.status, answer.content_type) == (200, PROTOBUF)
    assert ExportLogsServiceResponse.FromString(answer.body) == ExportLogsServiceResponse()
    assert await door.counted_bodies() == [[f"my log body {n}" for n in range(1, 6)]]


async def test_json_success_answers_in_json_despite_hex_ids_and_unknown_fields(
    door: FrontDoor,
) -> None:
    answer = await door.post(otlp_json_request(), JSON)
    assert (answer.status, answer.content_type) == (200, JSON)
    assert json.loads(answer.body) == {}
    assert await door.counted_bodies() == [["checkout done"]]


async def test_json_content_type_may_carry_a_charset(door: FrontDoor) -> None:
    answer = await door.post(b"{}", "application/json; charset=utf-8")
    assert (answer.status, answer.content_type) == (200, JSON)


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
@pytest.mark.parametrize("media_type", [PROTOBUF, JSON])
async def test_compressed_bodies_are_accepted(
    door: FrontDoor, encoding: str, media_type: str
) -> None:
    if media_type == JSON:
        plain, bodies = otlp_json_request(), ["checkout done"]
    else:
        plain = worked_example_request().SerializeToString()
        bodies = [f"my log body {n}" for n in range(1, 6)]
    headers = {"Content-Encoding": encoding}
    answer = await door.post(compress(plain, encoding), media_type, **headers)
    assert answer.status == 200
    assert await door.counted_bodies() == [bodies]


async def test_an_empty_request_succeeds_and_queues_nothing(door: FrontDoor) -> None:
    answer = await door.post(b"")
    assert answer.status == 200
    assert ExportLogsServiceResponse.FromString(answer.body) == ExportLogsServiceResponse()
    assert await door.counted_bodies() == []


async def test_malformed_protobuf_is_400_with_a_status_in_protobuf(door: FrontDoor) -> None:
    answer = await door.post(b"\x0a\x05\x0a\x03")
    assert (answer.status, answer.content_type) == (400, PROTOBUF)
    status = status_pb2.Status.FromString(answer.body)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "cannot decode" in status.message
    assert door.refused("malformed") == 1
    assert await door.counted_bodies() == []


async def test_malformed_json_is_400_with_a_status_in_json(door: FrontDoor) -> None:
    bad_id = otlp_json_request().replace(TRACE_ID.encode(), b"not-a-hex-id")
    answer = await door.post(bad_id, JSON)
    assert (answer.status, answer.content_type) == (400, JSON)
    status = json.loads(answer.body)
    assert status["code"] == code_pb2.INVALID_ARGUMENT
    assert "traceId" in status["message"]


async def test_broken_gzip_is_400(door: FrontDoor) -> None:
    truncated = gzip.compress(worked_example_request().SerializeToString())[:-6]
    answer = await door.post(truncated, **{"Content-Encoding": "gzip"})
    assert answer.status == 400
    assert "truncated" in status_pb2.Status.FromString(answer.body).message


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", ""])
async def test_other_content_types_are_415(door: FrontDoor, content_type: str) -> None:
    answer = await door.post(b"{}", content_type)
    assert answer.status == 415
    assert b"application/x-protobuf" in answer.body
    assert door.refused("unsupported_media_type") == 1


async def test_an_unsupported_content_encoding_is_415_in_the_request_encoding(
    door: FrontDoor,
) -> None:
    answer = await door.post(b"{}", JSON, **{"Content-Encoding": "br"})
    assert (answer.status, answer.content_type) == (415, JSON)
    assert "gzip" in json.loads(answer.body)["message"]


async def test_a_body_over_the_limit_is_413(door: FrontDoor) -> None:
    big = export_request([log_record("x" * (LIMIT + 1))]).SerializeToString()
    answer = await door.post(big)
    assert (answer.status, answer.content_type) == (413, PROTOBUF)
    assert status_pb2.Status.FromString(answer.body).code == code_pb2.RESOURCE_EXHAUSTED
    assert door.refused("too_large") == 1


async def test_a_chunked_body_over_the_limit_is_413(door: FrontDoor) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(LIMIT // 1024 + 2):
            yield bytes(1024)

    async with door.session.post(
        door.url, data=chunks(), headers={"Content-Type": PROTOBUF}
    ) as response:
        assert response.status == 413


async def test_a_gzip_bomb_is_413_by_its_decompressed_size(door: FrontDoor) -> None:
    # Valid protobuf (one record with a huge body) that gzips to a few KiB.
    bomb = gzip.compress(export_request([log_record("a" * (64 * LIMIT))]).SerializeToString())
    assert len(bomb) < LIMIT // 4
    answer = await door.post(bomb, **{"Content-Encoding": "gzip"})
    assert answer.status == 413
    assert "gzip-decoded body exceeds" in status_pb2.Status.FromString(answer.body).message
    assert await door.counted_bodies() == []


@pytest.mark.parametrize("encoding", ["zstd", "snappy", "x-snappy-framed"])
async def test_a_zstd_or_snappy_bomb_is_413_by_its_decompressed_size(
    door: FrontDoor, encoding: str
) -> None:
    # Snappy compresses at most about 20 times, so its bomb is 16 times the limit.
    request = export_request([log_record("a" * (16 * LIMIT))]).SerializeToString()
    bomb = compress(request, encoding)
    assert len(bomb) < LIMIT
    answer = await door.post(bomb, **{"Content-Encoding": encoding})
    assert answer.status == 413
    assert f"{encoding}-decoded body exceeds" in status_pb2.Status.FromString(answer.body).message
    assert await door.counted_bodies() == []


async def test_other_methods_are_405(door: FrontDoor) -> None:
    for method in ("GET", "PUT", "DELETE"):
        async with door.session.request(method, door.url) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"


async def test_other_paths_are_404(door: FrontDoor) -> None:
    async with door.session.post(
        door.url.replace("/v1/logs", "/v1/traces"), data=b"", headers={"Content-Type": PROTOBUF}
    ) as response:
        assert response.status == 404


async def test_a_full_queue_is_503_with_retry_after_and_retry_info(door: FrontDoor) -> None:
    request = worked_example_request().SerializeToString()
    door.queue.close_gate()
    waiting = [asyncio.create_task(door.post(request)) for _ in range(2)]
    await door.queue.wait_depth(2)
    answer = await door.post(request)
    assert (answer.status, answer.content_type) == (503, PROTOBUF)
    # Whole seconds, rounded up: 0.25 s becomes 1.
    assert answer.headers["Retry-After"] == "1"
    status = status_pb2.Status.FromString(answer.body)
    assert status.code == code_pb2.UNAVAILABLE
    retry_info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry_info)
    assert retry_info.retry_delay.ToNanoseconds() == 250_000_000
    assert door.refused("queue_requests") == 1
    door.queue.open_gate()
    assert [answer.status for answer in await asyncio.gather(*waiting)] == [200, 200]


async def test_a_draining_service_is_503_with_retry_after(door: FrontDoor) -> None:
    door.health.move_to(HealthState.DRAINING)
    answer = await door.post(otlp_json_request(), JSON)
    assert (answer.status, answer.content_type, answer.headers["Retry-After"]) == (503, JSON, "1")
    assert json.loads(answer.body)["details"][0]["@type"].endswith("google.rpc.RetryInfo")
    assert door.refused("not_serving") == 1
    assert await door.counted_bodies() == []


def json_bodies(records: int) -> tuple[bytes, list[str]]:
    """An OTLP/JSON request of `records` records (about 200 bytes each), and their bodies."""
    bodies = [f"request {index}: " + "ü" * 80 for index in range(records)]
    request = export_request([log_record(body, **{"service.name": "web"}) for body in bodies])
    return encode_json_request(request), bodies


@pytest.fixture
def threads_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions handed to a thread (the OTLP/HTTP door's decoding), by name."""
    used: list[str] = []
    to_thread = asyncio.to_thread

    async def noted(function: Callable[..., object], /, *args: object) -> object:
        used.append(function.__name__)
        return await to_thread(function, *args)

    # The door calls asyncio.to_thread, looked up at each call.
    monkeypatch.setattr(asyncio, "to_thread", noted)
    return used


@pytest.mark.parametrize(
    ("records", "threads"),
    [
        pytest.param(100, [], id="small: decoded on the event loop"),
        pytest.param(1_000, [], id="1,000 records: transcoded on the event loop"),
        pytest.param(8_000, ["decode_body"], id="past 1 MiB: decoded in a thread"),
    ],
)
async def test_a_json_body_is_counted_wherever_it_is_decoded(
    wide_door: FrontDoor, threads_used: list[str], records: int, threads: list[str]
) -> None:
    body, bodies = json_bodies(records)
    answer = await wide_door.post(body, JSON)
    assert (answer.status, answer.content_type) == (200, JSON)
    assert await wide_door.counted_bodies() == [bodies]
    # A thread hop costs more CPU than transcoding up to 1 MiB of OTLP/JSON.
    assert threads_used == threads


async def test_a_large_json_body_the_transcoder_gives_up_on_gets_the_reference_verdict(
    wide_door: FrontDoor, threads_used: list[str]
) -> None:
    body, _ = json_bodies(1_000)
    bad_id = body.replace(b'"body"', b'"traceId": "not-a-hex-id", "body"', 1)
    answer = await wide_door.post(bad_id, JSON)
    assert (answer.status, answer.content_type) == (400, JSON)
    status = json.loads(answer.body)
    assert status["code"] == code_pb2.INVALID_ARGUMENT
    assert "traceId must be a hex string" in status["message"]
    # json_format, a hundred times slower than the transcoder, never holds the event loop.
    assert threads_used == ["decode_body"]


async def test_large_malformed_json_is_400_with_the_parser_s_reason(wide_door: FrontDoor) -> None:
    body, _ = json_bodies(1_000)
    answer = await wide_door.post(body[:-2], JSON)
    assert (answer.status, answer.content_type) == (400, JSON)
    assert "request body is not JSON" in json.loads(answer.body)["message"]
    assert await wide_door.counted_bodies() == []


async def test_a_chunked_json_body_is_counted(wide_door: FrontDoor) -> None:
    body, bodies = json_bodies(1_000)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 10_000):
            yield body[start : start + 10_000]

    async with wide_door.session.post(
        wide_door.url, data=chunks(), headers={"Content-Type": JSON}
    ) as response:
        assert response.status == 200
    assert await wide_door.counted_bodies() == [bodies]
