"""The OTLP/HTTP door's HTTP/1.1 server: an asyncio.Protocol per connection on httptools.

A bare aiohttp Application handler costs 58-79 µs of CPU per request before it does anything
(its request object, router, middleware chain and response machinery); a bare protocol on
httptools 23-28 µs (measured side by side, 10-record requests, 32 callers). A small Export is
mostly that cost, and the door serves one resource, so it needs none of the machinery: it parses
with httptools (llhttp, the parser uvicorn uses), keeps the few headers the door reads, and
hands each complete request to a `Door` that answers it.

What it keeps of HTTP/1.1: keep-alive and pipelining (answers in request order), chunked bodies,
`Expect: 100-continue`, TLS (the listening socket's context), 404 and 405 with `Allow`, a body
refused with 413 as soon as its declared or received size passes the limit, a read timeout for a
request that stalls (408) and an idle timeout between requests. A connection is closed after any
answer that leaves its request's body unread, and after a parse error (400).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from functools import cached_property
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools

from otlp_stats.config import ListenAddress
from otlp_stats.errors import ExportRefused, RequestTimeout, RequestTooLarge

# More complete requests than this waiting on one connection (a pipelining sender) pause reading
# from it until they are answered; small requests never pause, which would cost two syscalls.
_MAX_PIPELINED = 8
# The request line and headers together, at most (aiohttp allowed 8 KiB a line): llhttp buffers
# nothing, but the URL and the header values kept are, until the headers end.
_MAX_HEAD_BYTES = 64 * 1024
# How long a connection refused mid-body keeps reading and discarding before it closes.
_LINGER_SECONDS = 5.0


@dataclass
class RequestHead:
    """What the door reads of a request before its body: the request line and a few headers."""

    method: str = ""
    path: str = ""
    # The media type alone, lower-cased ("application/json; charset=utf-8" is "application/json").
    content_type: str = ""
    content_encoding: str = ""
    authorization: str | None = None
    content_length: int | None = None
    expect_continue: bool = False


@dataclass(frozen=True)
class HttpAnswer:
    """A response: status, body, and the headers beyond Content-Length and Date."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    def with_headers(self, *headers: tuple[str, str]) -> HttpAnswer:
        return replace(self, headers=(*self.headers, *headers))

    def encode(self, date: bytes, keep_alive: bool) -> bytes:
        """The whole response, head and body."""
        head = self._keep_alive_head if keep_alive else self._head(keep_alive=False)
        return head + date + b"\r\n\r\n" + self.body

    @cached_property
    def _keep_alive_head(self) -> bytes:
        # Most answers are the same few (the accepted ones are built once): their head is too.
        return self._head(keep_alive=True)

    def _head(self, keep_alive: bool) -> bytes:
        """The head up to the Date header's value."""
        lines = [
            f"HTTP/1.1 {self.status} {_reason(self.status)}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        if not keep_alive:
            lines.append("Connection: close")
        lines.append("Date: ")
        return "\r\n".join(lines).encode("latin-1")


class Door(Protocol):
    """What answers the requests one server receives."""

    def route(self, head: RequestHead) -> HttpAnswer | None:
        """An answer given before the body is read (wrong path or method, refused credentials),
        or None to read the body."""
        ...

    async def answer(
        self, head: RequestHead, body: bytes, refusal: ExportRefused | None
    ) -> HttpAnswer:
        """The answer to a request whose body was read, or was refused (`refusal`) while read."""
        ...


@dataclass
class _Pending:
    """A request read to its end (or refused while read), waiting for its answer."""

    head: RequestHead
    body: bytes
    refusal: ExportRefused | None
    keep_alive: bool
    answer: HttpAnswer | None = None
    # Answered before its body was read to the end: the connection lingers before it closes.
    unread: bool = False


@dataclass
class _Settings:
    door: Door
    limit: int
    read_timeout: float | None
    idle_timeout: float
    spawn: Callable[[Coroutine[Any, Any, HttpAnswer]], asyncio.Task[HttpAnswer]]
    connections: set[_Connection] = field(default_factory=set)
    # Set when a connection answers or goes: a stopping server then looks again at who is busy.
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order, enforces the timeouts."""

    def __init__(self, settings: _Settings) -> None:
        self._settings = settings
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._head = RequestHead()
        self._url = b""
        self._chunks: list[bytes] = []
        self._received = 0
        # Set while a request's body is refused: the rest of it is not kept.
        self._refusal: ExportRefused | None = None
        self._reading = False  # between a request's first byte and its end
        self._read_started = 0.0
        self._reading_body_cut_short = False
        self._head_bytes = 0  # received of the current request before its headers ended
        self._in_head = False
        self._read_timer: asyncio.TimerHandle | None = None
        self._pending: deque[_Pending] = deque()
        self._task: asyncio.Task[HttpAnswer] | None = None
        self._closing = False
        self._paused = False
        self._last_active = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._settings.connections.add(self)
        self._arm_idle(self._settings.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._settings.connections.discard(self)
        self._settings.changed.set()
        self._closing = True
        for timer in (self._idle_timer, self._read_timer):
            if timer is not None:
                timer.cancel()
        # An Export in the intake is not cancelled: it is counted, as aiohttp's handlers were.
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            return  # refused at its headers (on_headers_complete)
        except httptools.HttpParserError:
            self._refuse_now(HttpAnswer(400, b"malformed HTTP request"))
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD_BYTES:
                self._in_head = False
                self._refuse_now(HttpAnswer(431, b"request headers too large"))
                return
        if self._reading and self._read_timer is None and self._settings.read_timeout:
            # The request did not arrive in one piece: from now on its time is bounded. Most
            # small requests arrive whole, and pay for no timer.
            self._read_timer = self._loop.call_at(
                self._read_started + self._settings.read_timeout, self._read_timed_out
            )

    # httptools callbacks

    def on_message_begin(self) -> None:
        # A fresh head even when closing: a queued request keeps its own, never overwritten.
        self._head = RequestHead()
        if self._closing:
            return  # a request pipelined behind one that closes the connection: not read
        self._url = b""
        self._chunks = []
        self._received = 0
        self._refusal = None
        self._reading = True
        self._in_head = True
        self._head_bytes = 0
        self._read_started = self._loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key == b"content-type":
            self._head.content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        elif key == b"content-encoding":
            self._head.content_encoding = value.decode("latin-1")
        elif key == b"authorization":
            self._head.authorization = value.decode("utf-8", "surrogateescape")
        elif key == b"content-length":
            # llhttp has checked it is a number, and that a second one agrees.
            self._head.content_length = int(value)
        elif key == b"expect":
            self._head.expect_continue = value.strip().lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._closing:
            return
        head = self._head
        head.method = self._parser.get_method().decode("latin-1")
        head.path = httptools.parse_url(self._url).path.decode("latin-1") if self._url else ""
        if self._parser.should_upgrade():
            # llhttp would take the body for the new protocol's bytes, and the door would see an
            # empty request: refused rather than acknowledged with its records lost.
            self._refuse_now(HttpAnswer(400, b"protocol upgrades are not served"))
            return
        early = self._settings.door.route(head)
        if early is not None:
            self._refuse_now(early)
            return
        declared, limit = head.content_length, self._settings.limit
        if declared is not None and declared > limit:
            # Refused before a byte of it is read; the connection closes after the answer.
            self._refusal = RequestTooLarge(
                f"request of {declared} bytes exceeds the limit of {limit}"
            )
            self._finish(keep_alive=False)
            return
        if head.expect_continue and not self._answers_due and self._transport is not None:
            # Only with nothing before it to answer: the 100 would overtake those answers.
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refusal is not None or self._closing:
            return
        self._received += len(body)
        limit = self._settings.limit
        if self._received > limit:
            self._chunks = []
            self._refusal = RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
            self._finish(keep_alive=False)
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._closing or not self._reading:
            return
        self._finish(keep_alive=self._parser.should_keep_alive(), complete=True)

    # answering

    def _finish(self, keep_alive: bool, *, complete: bool = False) -> None:
        """The request is read (or refused while read): queue it for its answer."""
        if self._closing:
            return  # the connection's last answer is queued already
        self._reading_body_cut_short = not complete
        self._reading = False
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        chunks, self._chunks = self._chunks, []
        # One chunk (most small bodies) is handed over as it is: no copy.
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        unread = self._reading_body_cut_short
        self._pending.append(_Pending(self._head, body, self._refusal, keep_alive, unread=unread))
        if not keep_alive:
            # Nothing after this request is read: its answer closes the connection.
            self._closing = True
        elif len(self._pending) >= _MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        if self._task is None:
            self._next()

    def _refuse_now(self, answer: HttpAnswer) -> None:
        """Answer without reading the body, then close: what follows cannot be parsed."""
        if self._closing:
            return  # the connection's last answer is queued already
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._reading = self._in_head = False
        self._pending.append(_Pending(self._head, b"", None, False, answer, unread=True))
        self._closing = True
        if self._task is None:
            self._next()

    def _next(self) -> None:
        """Answer the oldest pending request: at once if its answer is known, else in a task."""
        while self._pending and self._task is None:
            pending = self._pending[0]
            if pending.answer is not None:
                self._send(self._pending.popleft(), pending.answer)
                continue
            task = self._settings.spawn(
                self._settings.door.answer(pending.head, pending.body, pending.refusal)
            )
            self._task = task
            task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[HttpAnswer]) -> None:
        self._task = None
        if not self._pending:
            return  # the connection was lost meanwhile
        pending = self._pending.popleft()
        if task.cancelled():
            answer = HttpAnswer(
                503, b"the service is shutting down", headers=(("Retry-After", "1"),)
            )
        elif task.exception() is not None:
            answer = HttpAnswer(500, b"internal error")
        else:
            answer = task.result()
        self._send(pending, answer)
        self._next()

    def _send(self, pending: _Pending, answer: HttpAnswer) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(answer.encode(_http_date(), pending.keep_alive))
        self._last_active = self._loop.time()
        self._settings.changed.set()
        if not pending.keep_alive:
            self._close_after(pending, transport)
            return
        if self._paused and len(self._pending) < _MAX_PIPELINED:
            self._paused = False
            transport.resume_reading()

    def _close_after(self, pending: _Pending, transport: asyncio.Transport) -> None:
        if not pending.unread:
            transport.close()
            return
        # RFC 9112 9.6: a client may still be sending the body it was refused, and a reset would
        # lose it the answer. Say we are done, discard what comes for a while, then close.
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(_LINGER_SECONDS, transport.close)

    # timeouts

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self._reading:
            return
        timeout = self._settings.read_timeout or 0.0
        self._refusal = RequestTimeout(f"request body not received within {timeout:g}s")
        self._chunks = []
        self._finish(keep_alive=False)

    def _arm_idle(self, delay: float) -> None:
        self._idle_timer = self._loop.call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        """Close a connection without a request for the idle timeout; re-arm otherwise. Checked
        rather than re-armed per request, which would cost a timer each."""
        self._idle_timer = None
        if self._transport is None or self._transport.is_closing():
            return
        idle_timeout = self._settings.idle_timeout
        if not self.idle:
            # A request under way: its read timeout (or the intake) bounds it.
            self._arm_idle(idle_timeout)
            return
        quiet_for = self._loop.time() - self._last_active
        if quiet_for < idle_timeout:
            self._arm_idle(idle_timeout - quiet_for)
            return
        self._transport.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def _answers_due(self) -> bool:
        """Requests read and not yet answered."""
        return bool(self._pending) or self._task is not None

    @property
    def idle(self) -> bool:
        return not (self._reading or self._answers_due)


class HttpServer:
    """One door on one listen address, with a start/stop lifecycle."""

    def __init__(
        self,
        door: Door,
        listen: ListenAddress,
        max_body_size: int,
        *,
        read_timeout: float | None = None,
        idle_timeout: float = 75.0,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._door = door
        # Several serving processes on one port (--processes): the kernel spreads connections.
        self._reuse_port = reuse_port
        self._listen = listen
        self._limit = max_body_size
        self._read_timeout = read_timeout
        self._idle_timeout = idle_timeout
        self._ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[HttpAnswer]] = set()
        self._settings: _Settings | None = None
        self.port = 0

    def _spawn(self, coro: Coroutine[Any, Any, HttpAnswer]) -> asyncio.Task[HttpAnswer]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        settings = _Settings(
            self._door, self._limit, self._read_timeout, self._idle_timeout, self._spawn
        )
        self._settings = settings
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(settings),
            self._listen.host,
            self._listen.port,
            ssl=self._ssl_context,
            reuse_port=self._reuse_port or None,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening; within `grace`, let requests whose bodies are still arriving finish
        and every answer under way go out; then close every connection."""
        if self._server is None:
            return
        self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # A sender part-way through a body gets to finish it (and is answered, refused as the
        # service stops if the intake no longer takes it) rather than having it cut off.
        settings = self._settings
        while settings is not None and self._busy():
            settings.changed.clear()
            try:
                await asyncio.wait_for(settings.changed.wait(), deadline - loop.time())
            except TimeoutError:
                break
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.1, deadline - loop.time()))
        for task in list(self._tasks):
            task.cancel()
        if self._settings is not None:
            for connection in list(self._settings.connections):
                connection.close()
        await self._server.wait_closed()
        self._server = None

    def _busy(self) -> bool:
        """A connection is reading a request or owes an answer."""
        connections = self._settings.connections if self._settings is not None else set()
        return any(not connection.idle for connection in connections)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _DateHeader:
    """RFC 9110's Date (an origin server with a clock sends it), formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("latin-1")
        return self._value


_http_date = _DateHeader()
