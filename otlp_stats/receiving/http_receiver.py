"""The OTLP/HTTP front door: POST /v1/logs, translating refusals into HTTP answers.

It feeds the same Intake as the gRPC receiver. The body is read with a cap (http_server.py),
then inflated and decoded, in a thread where that may take long (a compressed body, OTLP/JSON
past 1 MiB, or past 64 KiB when it goes to json_format: the event loop also serves gRPC and
the probes), and handed to the Intake with its outcome, so that every refusal, even one found
while reading, is counted and logged in one place like a gRPC one.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from otlp_stats.config import ListenAddress
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
from otlp_stats.receiving.auth import BearerTokens
from otlp_stats.receiving.compression import inflate
from otlp_stats.receiving.grpc_receiver import export_response, retry_delay_of, rpc_status
from otlp_stats.receiving.http_server import HttpAnswer, HttpServer, RequestHead
from otlp_stats.receiving.intake import Decoder, Intake
from otlp_stats.receiving.otlp_json import encode_json, json_to_wire, transcode_json
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
    NotDurable: 503,
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
    # A decoder as fast whatever the body, which may give up (None) for `decode` to decide,
    # and the size up to which it is tried on the event loop first.
    fast_decode: Callable[[bytes], bytes | None] | None = None
    fast_inline_bytes: int = 0

    @property
    def accepted_answer(self) -> HttpAnswer:
        """The answer to an Export whose records were all accepted, built once."""
        return _ACCEPTED_ANSWERS[self.media_type]


def _encode_protobuf(message: Message) -> bytes:
    return message.SerializeToString()


def _protobuf(payload: bytes) -> bytes:
    return payload


ENCODINGS = {
    PROTOBUF: BodyEncoding(PROTOBUF, _protobuf, _encode_protobuf, inline_bytes=1 << 62),
    # The C transcoder takes about 0.55 µs per KiB of OTLP/JSON, and the thread hop about
    # 150 µs of CPU for a body of 1,000 records (800 KiB): up to 1 MiB it runs on the event loop
    # (a millisecond at most). What it gives up on goes to json_format, 100 times slower: in a
    # thread from 64 KiB on.
    JSON: BodyEncoding(
        JSON,
        json_to_wire,
        encode_json,
        inline_bytes=64 * 1024,
        fast_decode=transcode_json,
        fast_inline_bytes=1024 * 1024,
    ),
}
_ACCEPTED_ANSWERS = {
    media_type: HttpAnswer(200, encoding.encode(export_response(Verdict(0))), media_type)
    for media_type, encoding in ENCODINGS.items()
}


def _cheap_to_decode(wire: bytes, content_encoding: str, encoding: BodyEncoding | None) -> bool:
    """Whether decoding costs less than handing it to a thread. A compressed body never is:
    a few KiB may inflate to the limit."""
    if _compressed(content_encoding):
        return False
    return encoding is None or len(wire) <= encoding.inline_bytes


def _compressed(content_encoding: str) -> bool:
    return bool(content_encoding) and content_encoding.strip().lower() != "identity"


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


def decode_fast(wire: bytes, content_encoding: str, encoding: BodyEncoding) -> DecodedBody | None:
    """The body decoded by the encoding's fast decoder, when it has one for a body of this size
    and does not give up; None leaves it to `decode_body`."""
    if encoding.fast_decode is None or len(wire) > encoding.fast_inline_bytes:
        return None
    if _compressed(content_encoding):
        return None
    decoded = encoding.fast_decode(wire)
    return None if decoded is None else DecodedBody(wire, wire=decoded)


class LogsHttpReceiver:
    """The door's answers: POST /v1/logs; the body limit applies as sent (http_server.py) and
    again as decompressed."""

    def __init__(
        self,
        intake: Intake,
        metrics: Metrics,
        max_request_size: int,
        tokens: BearerTokens | None = None,
    ) -> None:
        self._intake = intake
        self._duration = metrics.door("http").export_duration
        self._limit = max_request_size
        self._tokens = tokens

    def route(self, head: RequestHead) -> HttpAnswer | None:
        """404 elsewhere, 405 for other methods, 401 without a valid token (when tokens are
        configured): answered before the body is read, let alone decoded."""
        if head.path != LOGS_PATH:
            return HttpAnswer(404, b"404: Not Found")
        if head.method != "POST":
            return HttpAnswer(405, b"405: Method Not Allowed", headers=(("Allow", "POST"),))
        if self._tokens is not None:
            try:
                self._tokens.check(head.authorization, "http")
            except Unauthenticated as refusal:
                answer = refusal_response(refusal, ENCODINGS.get(head.content_type))
                # RFC 6750: a 401 names the scheme the client should use.
                return answer.with_headers(("WWW-Authenticate", 'Bearer realm="otlp-stats"'))
        return None

    async def answer(
        self, head: RequestHead, body: bytes, refusal: ExportRefused | None
    ) -> HttpAnswer:
        started = time.perf_counter()
        encoding = ENCODINGS.get(head.content_type)
        try:
            decoded = await self._decode(head, body, refusal, encoding)
            verdict = await self._intake.accept(decoded.payload, "http", decoded.decoder)
        except ExportRefused as refused:
            return refusal_response(refused, encoding)
        finally:
            self._duration.observe(time.perf_counter() - started)
        assert encoding is not None  # an unknown Content-Type is always refused
        # OTLP/HTTP: partial success is a 200 too, its body saying what was rejected.
        if not verdict.rejected:
            return encoding.accepted_answer
        return _message_response(200, export_response(verdict), encoding)

    async def _decode(
        self,
        head: RequestHead,
        wire: bytes,
        refusal: ExportRefused | None,
        encoding: BodyEncoding | None,
    ) -> DecodedBody:
        if refusal is not None:
            # Refused while read (too large, too slow): the Intake counts and logs it.
            return DecodedBody(b"", refusal=refusal)
        content_encoding = head.content_encoding
        if _cheap_to_decode(wire, content_encoding, encoding):
            # A thread hop costs more than these (about 40 µs of CPU); the rest could take long.
            return decode_body(wire, content_encoding, encoding, self._limit)
        if encoding is not None and (fast := decode_fast(wire, content_encoding, encoding)):
            return fast
        # (A body the fast decoder gave up on is tried by it again in the thread: a small cost
        # next to the reference path's.)
        return await asyncio.to_thread(decode_body, wire, content_encoding, encoding, self._limit)


def refusal_response(refusal: ExportRefused, encoding: BodyEncoding | None) -> HttpAnswer:
    """The refusal's status with a google.rpc.Status body, plus Retry-After when retryable."""
    status = rpc_status(refusal)
    headers: tuple[tuple[str, str], ...] = ()
    delay = retry_delay_of(refusal)
    if delay is not None:
        # Retry-After takes whole seconds; rounding up never asks for a retry too early.
        headers = (("Retry-After", str(math.ceil(delay))),)
    if encoding is None:
        # No encoding the sender is known to read: say it in words.
        return HttpAnswer(http_status_for(refusal), str(refusal).encode(), headers=headers)
    return _message_response(http_status_for(refusal), status, encoding, headers)


def _message_response(
    status: int,
    message: Message,
    encoding: BodyEncoding,
    headers: tuple[tuple[str, str], ...] = (),
) -> HttpAnswer:
    # OTLP: the answer uses the Content-Type of the request.
    return HttpAnswer(status, encoding.encode(message), encoding.media_type, headers)


def build_otlp_http_site(
    intake: Intake,
    metrics: Metrics,
    listen: ListenAddress,
    max_request_size: int,
    *,
    read_timeout: float | None = None,
    idle_timeout: float = 75.0,
    ssl_context: ssl.SSLContext | None = None,
    tokens: BearerTokens | None = None,
    reuse_port: bool = False,
) -> HttpServer:
    """The OTLP/HTTP port: POST /v1/logs; 405 to other methods, 404 elsewhere."""
    receiver = LogsHttpReceiver(intake, metrics, max_request_size, tokens)
    # The body is read as sent, Content-Encoding and all: the receiver inflates it itself, with
    # the limit as the cap.
    return HttpServer(
        receiver,
        listen,
        max_request_size,
        read_timeout=read_timeout,
        idle_timeout=idle_timeout,
        ssl_context=ssl_context,
        reuse_port=reuse_port,
    )
