"""The transport-neutral front of the pipeline: stamp arrival, check limits, admit, await.

Both front doors call `Intake.accept`; it puts the request on the queue and awaits its verdict
from the worker that counts it, or raises an ExportRefused. A request is acknowledged only once
its records are in the aggregator, so an acknowledged record is never lost to a crash of the
queue, and what cannot be counted (malformed, too many records, shutting down) is refused to the
sender that sent it; records rejected as late (event time) are told to it as OTLP partial
success. Nothing awaits between stamping the arrival time and admitting the request,
so a window can never close while one of its requests is half-admitted.

Admission is cheap (no protobuf is read here), so when the workers fall behind, the queue fills
and further Exports are refused with a retryable status: the backpressure the senders see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from otlp_stats.clock import Clock
from otlp_stats.counting.queue import QueuedRequest, QueueFull, RequestQueue, Verdict
from otlp_stats.errors import ExportRefused, Overloaded, RequestTooLarge, ShuttingDown
from otlp_stats.health import Health
from otlp_stats.telemetry import Metrics, RateLimitedLog

# Turns a request body into protobuf bytes (OTLP/JSON, inflating) or raises the refusal that
# stopped it; the OTLP/HTTP door passes its own. The gRPC door's payload is the protobuf.
Decoder = Callable[[bytes], bytes]


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
    ) -> None:
        self._queue = queue
        self._health = health
        self._clock = clock
        self._metrics = metrics
        self._max_request_size = max_request_size
        self._retry_delay = retry_delay
        self._refusal_log = refusal_log

    async def accept(
        self, payload: bytes, transport: str, decoder: Decoder | None = None
    ) -> Verdict:
        """Admit one serialized ExportLogsServiceRequest and return its verdict once its records
        are counted: how many were, and how many were rejected as late and why.

        Raises an ExportRefused, already counted in metrics and logged (rate-limited), for the
        edge to translate into its transport's status.
        """
        door = self._metrics.door(transport)
        door.export_requests.inc()
        try:
            verdict = await self._admit(self._request(payload, transport, decoder))
        except ExportRefused as refusal:
            self._metrics.requests_refused.labels(transport, refusal.reason).inc()
            self._refusal_log.warning(
                "export_refused", transport=transport, reason=refusal.reason, detail=str(refusal)
            )
            raise
        door.records_accepted.inc(verdict.counted)
        return verdict

    def _request(self, payload: bytes, transport: str, decoder: Decoder | None) -> QueuedRequest:
        arrival = self._clock.now()
        if not self._health.accepting:
            raise ShuttingDown(self._retry_delay)
        if len(payload) > self._max_request_size:
            raise RequestTooLarge(
                f"request of {len(payload)} bytes exceeds the limit of {self._max_request_size}"
            )
        wire = payload if decoder is None else decoder(payload)
        return QueuedRequest(arrival, wire, transport, asyncio.get_running_loop().create_future())

    async def _admit(self, item: QueuedRequest) -> Verdict:
        if not item.wire:
            # OTLP: an empty request is a success; there is nothing to queue.
            return Verdict(0)
        try:
            self._queue.put_nowait(item)
        except QueueFull as full:
            raise Overloaded(full.reason, self._retry_delay) from None
        # If the sender goes away (cancel, deadline), this await is cancelled and so is the
        # verdict: a worker then leaves the request uncounted, as the sender will send it again.
        return await item.verdict
