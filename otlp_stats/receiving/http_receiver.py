"""The OTLP/HTTP front door: POST /v1/logs, translating refusals into HTTP answers.

It feeds the same Intake as the gRPC receiver. The body is read with a cap, then inflated and
decoded in a thread (a 64 MiB JSON body takes seconds to parse; the event loop also serves
gRPC and the probes), and handed to the Intake with its outcome, so that every refusal, even
one found while reading, is counted and logged in one place like a gRPC one.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from google.protobuf.message import Message

from otlp_stats.config import ListenAddress
from otlp_stats.counting.queue import Verdict
from otlp_stats.errors import (
    CountingFailed,
    ExportRefused,
    MalformedRequest,
    Overloaded,
    RequestTimeout,
    RequestTooLarge,
    ShuttingDown,
    Unauthenticated,
    UnsupportedMediaType,
)
from otlp_stats.receiving.compression import inflate
from otlp_stats.receiving.grpc_receiver import export_response, retry_delay_of, rpc_status
from otlp_stats.receiving.http_site import HttpSite
from otlp_stats.receiving.intake import Decoder, Intake
from otlp_stats.receiving.otlp_json import encode_json, json_to_wire
from otlp_stats.telemetry import Metrics

LOGS_PATH = "/v1/logs"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# The one table from refusal to HTTP status, as the OTLP/HTTP spec answers: 503 (with
# Retry-After) is the retryable one; every 4xx tells the sender not to retry.
_HTTP_STATUS: dict[type[ExportRefused], int] = {
    MalformedRequest: 400,
    RequestTooLarge: 413,
    UnsupportedMediaType: 415,
    Overloaded: 503,
    ShuttingDown: 503,
    # A stalled body is the sender's fault; OTLP/HTTP does not retry 401 or 408.
    Unauthenticated: 401,
    RequestTimeout: 408,
    # Our fault, and retrying would likely fail again: OTLP/HTTP does not retry a 500.
    CountingFailed: 500,
}


def http_status_for(refusal: ExportRefused) -> int:
    for kind, status in _HTTP_STATUS.items():
        if isinstance(refusal, kind):
            return status
    return 500


@dataclass(frozen=True)
class BodyEncoding:
    """One Content-Type the front door speaks: how requests decode and answers encode."""

    media_type: str
    decode: Decoder
    encode: Callable[[Message], bytes]
    # Decoding bodies up to this size (as sent, uncompressed) on the event loop costs less than
    # a thread: all of them for protobuf, which decodes to itself.
    inline_bytes: int

    @property
    def accepted(self) -> bytes:
        """The answer to an Export whose records were all accepted."""
        return _ACCEPTED_BODIES[self.media_type]


def _encode_protobuf(message: Message) -> bytes:
    return message.SerializeToString()


def _protobuf(payload: bytes) -> bytes:
    return payload


ENCODINGS = {
    PROTOBUF: BodyEncoding(PROTOBUF, _protobuf, _encode_protobuf, inline_bytes=1 << 62),
    # The C transcoder takes about 2 µs per KiB of OTLP/JSON.
    JSON: BodyEncoding(JSON, json_to_wire, encode_json, inline_bytes=64 * 1024),
}
_ACCEPTED_BODIES = {
    media_type: encoding.encode(export_response(Verdict(0)))
    for media_type, encoding in ENCODINGS.items()
}


def _cheap_to_decode(wire: bytes, content_encoding: str, encoding: BodyEncoding | None) -> bool:
    """Whether decoding costs less than handing it to a thread. A compressed body never is:
    a few KiB may inflate to the limit."""
    if content_encoding and content_encoding.strip().lower() != "identity":
        return False
    return encoding is None or len(wire) <= encoding.inline_bytes


@dataclass(frozen=True)
class DecodedBody:
    """A request body after reading, inflating and decoding, or the refusal that stopped it."""

    payload: bytes
    wire: bytes | None = None
    refusal: ExportRefused | None = None

    def decoder(self, _payload: bytes) -> bytes:
        """The Intake's decoder: hands over what the thread decoded, or raises why it could not."""
        if self.refusal is not None:
            raise self.refusal
        assert self.wire is not None
        return self.wire


def decode_body(
    wire: bytes, content_encoding: str, encoding: BodyEncoding | None, limit: int
) -> DecodedBody:
    """Inflate and decode one request body; blocking, so the handler runs it in a thread."""
    try:
        if encoding is None:
            raise UnsupportedMediaType(f"Content-Type must be {PROTOBUF} or {JSON} for {LOGS_PATH}")
        payload = inflate(wire, content_encoding, limit)
    except ExportRefused as refusal:
        return DecodedBody(b"", refusal=refusal)
    try:
        return DecodedBody(payload, wire=encoding.decode(payload))
    except ExportRefused as refusal:
        return DecodedBody(payload, refusal=refusal)


class LogsHttpReceiver:
    """Handler for POST /v1/logs; the body limit applies as sent and again as decompressed."""

    def __init__(
        self,
        intake: Intake,
        metrics: Metrics,
        max_request_size: int,
        read_timeout: float | None = None,
    ) -> None:
        self._intake = intake
        self._duration = metrics.door("http").export_duration
        self._limit = max_request_size
        self._read_timeout = read_timeout

    async def export(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        encoding = ENCODINGS.get(request.content_type)
        try:
            body = await self._decode(request, encoding)
            verdict = await self._intake.accept(body.payload, "http", body.decoder)
        except ExportRefused as refusal:
            return refusal_response(refusal, encoding)
        finally:
            self._duration.observe(time.perf_counter() - started)
        assert encoding is not None  # an unknown Content-Type is always refused
        # OTLP/HTTP: partial success is a 200 too, its body saying what was rejected.
        if not verdict.rejected:
            return web.Response(body=encoding.accepted, content_type=encoding.media_type)
        return _message_response(200, export_response(verdict), encoding)

    async def _decode(self, request: web.Request, encoding: BodyEncoding | None) -> DecodedBody:
        try:
            if request.content.is_eof():
                # The whole body came with the headers (most small requests): nothing to wait
                # for, so no timer to arm.
                wire = await self._read(request)
            else:
                # A slow or stuck sender holds a connection and a growing buffer: bound its time.
                async with asyncio.timeout(self._read_timeout):
                    wire = await self._read(request)
        except RequestTooLarge as refusal:
            return DecodedBody(b"", refusal=refusal)
        except TimeoutError:
            timeout = RequestTimeout(f"request body not received within {self._read_timeout:g}s")
            return DecodedBody(b"", refusal=timeout)
        content_encoding = request.headers.get("Content-Encoding", "")
        if _cheap_to_decode(wire, content_encoding, encoding):
            # A thread hop costs more than these (about 40 µs of CPU); the rest could take long.
            return decode_body(wire, content_encoding, encoding, self._limit)
        return await asyncio.to_thread(decode_body, wire, content_encoding, encoding, self._limit)

    async def _read(self, request: web.Request) -> bytes:
        """The body as sent, refused as soon as it is known to pass the limit."""
        declared = request.content_length
        if declared is not None and declared > self._limit:
            raise RequestTooLarge(f"request of {declared} bytes exceeds the limit of {self._limit}")
        if declared == 0:
            return b""
        if declared is not None:
            # aiohttp's parser ends the body at Content-Length and raises if it is cut short.
            return await request.content.readexactly(declared)
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > self._limit:
                raise RequestTooLarge(f"request body exceeds the limit of {self._limit} bytes")
        return bytes(body)


def refusal_response(refusal: ExportRefused, encoding: BodyEncoding | None) -> web.Response:
    """The refusal's status with a google.rpc.Status body, plus Retry-After when retryable."""
    status = rpc_status(refusal)
    headers: dict[str, str] = {}
    delay = retry_delay_of(refusal)
    if delay is not None:
        # Retry-After takes whole seconds; rounding up never asks for a retry too early.
        headers["Retry-After"] = str(math.ceil(delay))
    if encoding is None:
        # No encoding the sender is known to read: say it in words.
        return web.Response(status=http_status_for(refusal), text=str(refusal), headers=headers)
    return _message_response(http_status_for(refusal), status, encoding, headers)


def _message_response(
    status: int,
    message: Message,
    encoding: BodyEncoding,
    headers: dict[str, str] | None = None,
) -> web.Response:
    # OTLP: the answer uses the Content-Type of the request.
    return web.Response(
        status=status,
        body=encoding.encode(message),
        content_type=encoding.media_type,
        headers=headers,
    )


def build_otlp_http_site(
    intake: Intake,
    metrics: Metrics,
    listen: ListenAddress,
    max_request_size: int,
    *,
    read_timeout: float | None = None,
    idle_timeout: float = 75.0,
    ssl_context: ssl.SSLContext | None = None,
    middlewares: Sequence[Middleware] = (),
    reuse_port: bool = False,
) -> HttpSite:
    """The OTLP/HTTP port: POST /v1/logs; aiohttp answers 405 to other methods, 404 elsewhere."""
    receiver = LogsHttpReceiver(intake, metrics, max_request_size, read_timeout)
    # client_max_size bounds request.read() should anything call it; the handler streams the
    # body itself with the same limit.
    app = web.Application(client_max_size=max_request_size, middlewares=middlewares)
    app.router.add_post(LOGS_PATH, receiver.export)
    # aiohttp would inflate a gzip body before the handler sees it, and how far ahead of the
    # reader depends on its version; the receiver inflates itself, with the limit as the cap.
    return HttpSite(
        app,
        listen,
        decompress_requests=False,
        ssl_context=ssl_context,
        idle_timeout=idle_timeout,
        reuse_port=reuse_port,
    )
