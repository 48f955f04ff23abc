"""The transport-neutral front of the pipeline: stamp arrival, check limits, admit, await.

Both front doors call `Intake.accept`; it puts the request on the queue and awaits its verdict
from the worker that counts it (or counts a small one itself, below), or raises an
ExportRefused. A request is acknowledged only once its records are in the aggregator, so an
acknowledged record is never lost to a crash of the queue, and what cannot be counted
(malformed, too many records, shutting down) is refused to the sender that sent it; records
rejected as late (event time) are told to it as OTLP partial success. Nothing awaits between
stamping the arrival time and admitting the request, so a window can never close while one of
its requests is half-admitted.

Admission is cheap (no protobuf is read here), so when the workers fall behind, the queue fills
and further Exports are refused with a retryable status: the backpressure the senders see.

A small request (up to the counter's at_once_bytes) that finds nothing queued and nothing in work
is counted at once in its handler's turn, admitted against the same bounds: what a worker would
do, without handing it to a worker task and awaiting the verdict. As soon as anything is queued
or in work (a large request, a slow count, a burst), new requests queue behind it and a full
queue refuses them as before. Why this keeps backpressure is in docs/scaling.md (small requests).
When the acknowledgement is at once (--durability checkpoint), that count is one straight call
returning the verdict: no queued item, no future, no place reserved on the queue (nothing can
look at it before the call returns); with --durability ack it reserves its place and awaits the
commit as a queued request does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from otlp_stats.clock import Clock
from otlp_stats.counting.queue import QueuedRequest, QueueFull, RequestQueue, Verdict, all_counted
from otlp_stats.errors import (
    ExportRefused,
    NotDurable,
    Overloaded,
    RequestTooLarge,
    ShuttingDown,
)
from otlp_stats.health import Health
from otlp_stats.telemetry import Metrics, RateLimitedLog

# Turns a request body into protobuf bytes (OTLP/JSON, inflating) or raises the refusal that
# stopped it; the OTLP/HTTP door passes its own. The gRPC door's payload is the protobuf.
Decoder = Callable[[bytes], bytes]


class AtOnceCounter(Protocol):
    """Counts a small admitted request at once: the worker pool, in the service."""

    @property
    def at_once_bytes(self) -> int:
        """The largest request counted at once; bigger ones always go through the queue."""
        ...

    @property
    def answers_at_once(self) -> bool:
        """True if a counted request is answered at once, so count_at_once may be used."""
        ...

    def count_now(self, item: QueuedRequest) -> None:
        """Count it now and set its verdict; the item is reserved on the queue and released."""
        ...

    def count_at_once(self, arrival: float, wire: bytes) -> Verdict:
        """Count it now, unqueued; its verdict, or raises the refusal."""
        ...


class Intake:
    def __init__(
        self,
        queue: RequestQueue,
        health: Health,
        clock: Clock,
        metrics: Metrics,
        max_request_size: int,
        retry_delay: float,
        refusal_log: RateLimitedLog,
        counter: AtOnceCounter | None = None,
    ) -> None:
        self._queue = queue
        self._health = health
        self._clock = clock
        self._metrics = metrics
        self._max_request_size = max_request_size
        self._retry_delay = retry_delay
        self._refusal_log = refusal_log
        self._counter = counter
        self._at_once_bytes = counter.at_once_bytes if counter is not None else -1
        self._answers_at_once = counter is not None and counter.answers_at_once

    async def accept(
        self, payload: bytes, transport: str, decoder: Decoder | None = None
    ) -> Verdict:
        """Admit one serialized ExportLogsServiceRequest and return its verdict once its records
        are counted: how many were, and how many were rejected as late and why.

        Raises an ExportRefused, already counted in metrics and logged (rate-limited), for the
        edge to translate into its transport's status.
        """
        door = self._metrics.door(transport)
        door.export_requests += 1
        try:
            arrival = self._clock.now()
            wire = self._admissible(payload, decoder)
            if (
                self._answers_at_once
                and 0 < len(wire) <= self._at_once_bytes
                and not self._queue.depth
            ):
                # The straight path: nothing queued or in work, answered when counted.
                assert self._counter is not None  # answers_at_once says there is one
                verdict = self._counter.count_at_once(arrival, wire)
            else:
                verdict = await self._admit(self._queued(arrival, wire, transport))
        except ExportRefused as refusal:
            self._metrics.requests_refused.labels(transport, refusal.reason).inc()
            self._refusal_log.warning(
                "export_refused", transport=transport, reason=refusal.reason, detail=str(refusal)
            )
            raise
        door.records_accepted += verdict.counted
        return verdict

    def _admissible(self, payload: bytes, decoder: Decoder | None) -> bytes:
        """The request's protobuf bytes, or the refusal that stops it before it is admitted."""
        if not self._health.accepting:
            raise ShuttingDown(self._retry_delay)
        if self._health.unavailable is not None:
            # --durability ack, the journal cannot be written: refused before it is counted,
            # so the sender's retries do not count its records again and again meanwhile.
            raise NotDurable(self._retry_delay)
        if len(payload) > self._max_request_size:
            raise RequestTooLarge(
                f"request of {len(payload)} bytes exceeds the limit of {self._max_request_size}"
            )
        return payload if decoder is None else decoder(payload)

    @staticmethod
    def _queued(arrival: float, wire: bytes, transport: str) -> QueuedRequest:
        return QueuedRequest(arrival, wire, transport, asyncio.get_running_loop().create_future())

    async def _admit(self, item: QueuedRequest) -> Verdict:
        if not item.wire:
            # OTLP: an empty request is a success; there is nothing to queue.
            return all_counted(0)
        queue = self._queue
        if self._counter is not None and item.size <= self._at_once_bytes and not queue.depth:
            # Nothing queued or in work: nothing this request could overtake, nothing to wait for.
            queue.reserve(item)
            self._counter.count_now(item)
            if item.verdict.done():
                return item.verdict.result()  # the Verdict, or raises the refusal
            # --durability ack: answered once the group holding its counts is committed.
            return await item.verdict
        try:
            queue.put_nowait(item)
        except QueueFull as full:
            raise Overloaded(full.reason, self._retry_delay) from None
        # If the sender goes away (cancel, deadline), this await is cancelled and so is the
        # verdict: a worker then leaves the request uncounted, as the sender will send it again.
        return await item.verdict
