"""The OTLP/HTTP door's HTTP/1.1 server, with a fake door, over real sockets on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from otlp_stats.config import ListenAddress
from otlp_stats.errors import ExportRefused, RequestTooLarge
from otlp_stats.receiving.http_server import HttpAnswer, HttpServer, RequestHead

LIMIT = 1000


class EchoDoor:
    """Answers 200 with the body it got, or 413/408 for what was refused while read; `hold`
    keeps the answer to a body equal to it until released."""

    def __init__(self) -> None:
        self.seen: list[tuple[RequestHead, bytes, ExportRefused | None]] = []
        self.hold: bytes | None = None
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    def route(self, head: RequestHead) -> HttpAnswer | None:
        if head.path != "/v1/logs":
            return HttpAnswer(404, b"not here")
        if head.method != "POST":
            return HttpAnswer(405, b"", headers=(("Allow", "POST"),))
        return None

    async def answer(
        self, head: RequestHead, body: bytes, refusal: ExportRefused | None
    ) -> HttpAnswer:
        self.seen.append((head, body, refusal))
        if refusal is not None:
            return HttpAnswer(413 if isinstance(refusal, RequestTooLarge) else 408, b"refused")
        if body == self.hold:
            self.held.set()
            await self.release.wait()
        return HttpAnswer(200, body, "application/x-protobuf")


@pytest.fixture
async def door() -> EchoDoor:
    return EchoDoor()


@pytest.fixture
async def server(door: EchoDoor) -> AsyncIterator[HttpServer]:
    server = HttpServer(
        door, ListenAddress("127.0.0.1", 0), LIMIT, read_timeout=0.5, idle_timeout=0.5
    )
    await server.start()
    yield server
    await server.stop()


def post(body: bytes, *extra: str) -> bytes:
    head = [
        "POST /v1/logs HTTP/1.1",
        "Host: x",
        "Content-Type: application/x-protobuf; charset=binary",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def test_one_connection_serves_requests_one_after_another(
    server: HttpServer, door: EchoDoor
) -> None:
    reader, writer = await connect(server)
    for body in (b"first", b"second"):
        writer.write(post(body))
        status, headers, answer = await read_answer(reader)
        assert (status, answer) == (200, body)
        assert "connection" not in headers and headers["date"].endswith("GMT")
    assert [head.content_type for head, _, _ in door.seen] == ["application/x-protobuf"] * 2
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server: HttpServer, door: EchoDoor) -> None:
    door.hold = b"slow"
    reader, writer = await connect(server)
    writer.write(post(b"slow") + post(b"fast"))
    await asyncio.wait_for(door.held.wait(), 5)
    # The second waits for the first's answer: answers go out in request order.
    assert [body for _, body, _ in door.seen] == [b"slow"]
    door.release.set()
    assert (await read_answer(reader))[2] == b"slow"
    assert (await read_answer(reader))[2] == b"fast"
    writer.close()


async def test_a_chunked_body_reaches_the_door_whole(server: HttpServer, door: EchoDoor) -> None:
    reader, writer = await connect(server)
    writer.write(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    assert (await read_answer(reader))[2] == b"abcdefg"
    assert door.seen[0][0].content_length is None
    writer.close()


async def test_expect_100_continue_is_answered_before_the_body(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(
        post(b"", "Expect: 100-continue").replace(b"Content-Length: 0", b"Content-Length: 4")
    )
    assert (
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"body")
    assert (await read_answer(reader))[:3:2] == (200, b"body")
    writer.close()


async def test_a_declared_size_over_the_limit_is_413_before_the_body_and_closes(
    server: HttpServer, door: EchoDoor
) -> None:
    reader, writer = await connect(server)
    writer.write(post(b"").replace(b"Content-Length: 0", f"Content-Length: {LIMIT + 1}".encode()))
    status, headers, _ = await read_answer(reader)
    assert (status, headers["connection"]) == (413, "close")
    assert isinstance(door.seen[0][2], RequestTooLarge)
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_chunked_body_passing_the_limit_is_413(server: HttpServer) -> None:
    reader, writer = await connect(server)
    chunk = b"x" * 600
    writer.write(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"258\r\n" + chunk + b"\r\n" + b"258\r\n" + chunk + b"\r\n0\r\n\r\n"
    )  # fmt: skip
    assert (await read_answer(reader))[0] == 413
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_stalled_body_is_408_once_the_read_timeout_passes(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(post(b"").replace(b"Content-Length: 0", b"Content-Length: 10") + b"half")
    status, headers, _ = await read_answer(reader)
    assert (status, headers["connection"]) == (408, "close")
    writer.close()


async def test_an_idle_connection_is_closed_after_the_idle_timeout(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(post(b"once"))
    assert (await read_answer(reader))[0] == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""


@pytest.mark.parametrize(
    ("request_line", "status"),
    [(b"POST /elsewhere HTTP/1.1", 404), (b"GET /v1/logs HTTP/1.1", 405)],
)
async def test_other_paths_and_methods_are_answered_without_reading_on(
    server: HttpServer, request_line: bytes, status: int
) -> None:
    reader, writer = await connect(server)
    writer.write(request_line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    got, headers, _ = await read_answer(reader)
    assert got == status and headers["connection"] == "close"
    if status == 405:
        assert headers["allow"] == "POST"
    writer.close()


async def test_a_malformed_request_is_400_and_closes(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /v1/logs HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
    assert (await read_answer(reader))[0] == 400
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_connection_close_is_honoured(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(post(b"last", "Connection: close"))
    status, headers, _ = await read_answer(reader)
    assert (status, headers["connection"]) == (200, "close")
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_stop_closes_connections_and_stops_listening(door: EchoDoor) -> None:
    server = HttpServer(door, ListenAddress("127.0.0.1", 0), LIMIT)
    await server.start()
    reader, writer = await connect(server)
    writer.write(post(b"x"))
    assert (await read_answer(reader))[0] == 200
    await server.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    with pytest.raises(ConnectionRefusedError):
        await connect(server)


async def test_endless_headers_are_431_and_close(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /v1/logs HTTP/1.1\r\nX-Padding: " + b"a" * (70 * 1024))
    assert (await read_answer(reader))[0] == 431
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_an_upgrade_request_is_400_not_an_empty_export(
    server: HttpServer, door: EchoDoor
) -> None:
    # llhttp hands what follows an upgrade's headers to the new protocol: the body would be lost.
    reader, writer = await connect(server)
    writer.write(post(b"body", "Connection: Upgrade", "Upgrade: h2c"))
    assert (await read_answer(reader))[0] == 400
    assert door.seen == []
    writer.close()


@pytest.mark.parametrize(
    "refused",
    [
        b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n",
    ],
    ids=["404", "413-declared"],
)
async def test_requests_pipelined_behind_a_refusal_in_the_same_packet_are_not_read(
    server: HttpServer, door: EchoDoor, refused: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # One write: the parser meets the next requests after the refusal has closed the connection.
    reader, writer = await connect(server)
    writer.write(refused + post(b"after") + b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await read_answer(reader)
    assert status in (404, 413) and headers["connection"] == "close"
    # Exactly one answer, then the end: nothing behind the refusal is answered or counted.
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert all(body != b"after" for _, body, _ in door.seen)
    # Nor is a second answer written after the end of the stream (the loop would log the
    # protocol's failure and abort the transport, losing what it had not sent yet).
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    writer.close()


async def test_stop_lets_a_body_under_way_finish_and_be_answered(door: EchoDoor) -> None:
    server = HttpServer(door, ListenAddress("127.0.0.1", 0), LIMIT, read_timeout=5, idle_timeout=5)
    await server.start()
    reader, writer = await connect(server)
    whole = post(b"a body sent as the service stops", "Expect: 100-continue")
    head, body = whole.split(b"\r\n\r\n", 1)
    writer.write(head + b"\r\n\r\n")
    # The 100 says the server has read the head and now waits for the body.
    assert (
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    stopping = asyncio.create_task(server.stop(grace=5.0))
    writer.write(body)
    status, _, answer = await read_answer(reader)
    assert (status, answer) == (200, body)
    await asyncio.wait_for(stopping, 5)
    writer.close()
