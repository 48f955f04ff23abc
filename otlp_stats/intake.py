"""The transport-neutral front of the pipeline: stamp arrival, check limits, check bytes, admit.

Both front doors call `Intake.accept`; it either puts the request on the queue or raises an
ExportRefused. The request's bytes are checked by the scanner (scan.py), which validates them
and counts the records; the intake resolves, hashes and counts nothing. Nothing awaits between
stamping the arrival time and admitting the request, so a window can never close while one of
its requests is half-admitted.
"""

from __future__ import annotations

from collections.abc import Callable

from otlp_stats.clock import Clock
from otlp_stats.errors import ExportRefused, Overloaded, RequestTooLarge, ShuttingDown
from otlp_stats.health import Health
from otlp_stats.queue import QueuedRequest, QueueFull, RequestQueue
from otlp_stats.scan import CheckedRequest, Scanner
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
        max_records: int,
        retry_delay: float,
        refusal_log: RateLimitedLog,
        scanner: Scanner,
    ) -> None:
        self._queue = queue
        self._health = health
        self._clock = clock
        self._metrics = metrics
        self._max_request_size = max_request_size
        self._max_records = max_records
        self._retry_delay = retry_delay
        self._refusal_log = refusal_log
        self._scanner = scanner

    def accept(self, payload: bytes, transport: str, decoder: Decoder | None = None) -> int:
        """Admit one serialized ExportLogsServiceRequest; return its record count.

        Raises an ExportRefused, already counted in metrics and logged (rate-limited), for the
        edge to translate into its transport's status.
        """
        self._metrics.export_requests.labels(transport).inc()
        try:
            return self._accept(payload, transport, decoder)
        except ExportRefused as refusal:
            self._metrics.requests_refused.labels(transport, refusal.reason).inc()
            self._refusal_log.warning(
                "export_refused", transport=transport, reason=refusal.reason, detail=str(refusal)
            )
            raise

    def _accept(self, payload: bytes, transport: str, decoder: Decoder | None) -> int:
        arrival = self._clock.now()
        if not self._health.accepting:
            raise ShuttingDown(self._retry_delay)
        if len(payload) > self._max_request_size:
            raise RequestTooLarge(
                f"request of {len(payload)} bytes exceeds the limit of {self._max_request_size}"
            )
        wire = payload if decoder is None else decoder(payload)
        return self._admit(self._scanner.check(wire), arrival, transport)

    def _admit(self, request: CheckedRequest, arrival: float, transport: str) -> int:
        records = request.records
        if records == 0:
            # OTLP: an empty request is a success; there is nothing to queue.
            return 0
        if records > self._max_records:
            # Tallying holds about 90-130 bytes per record however small the record is on the
            # wire (a record can be 2 bytes), so the record count is bounded as the size is.
            raise RequestTooLarge(
                f"request of {records} log records exceeds the limit of {self._max_records}"
            )
        # The queue's byte bound counts what the request holds until tallied (after inflating
        # and JSON decoding: the bytes of the protobuf), not what came over the network.
        item = QueuedRequest(arrival, request.nbytes, transport, request)
        try:
            self._queue.put_nowait(item)
        except QueueFull as full:
            raise Overloaded(full.reason, self._retry_delay) from None
        self._metrics.records_accepted.labels(transport).inc(records)
        return records
