"""Drive an OTLP/gRPC LogsService with concurrent callers and summarise what it accepted."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import grpc.aio
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from otlp_stats.loadgen.retry import RETRYABLE_CODES, retry_delay
from otlp_stats.loadgen.truth import GroundTruth
from otlp_stats.loadgen.workload import PreparedRequest

EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

_Export = Callable[..., Awaitable[bytes]]


@dataclass(frozen=True)
class LoadPlan:
    """How hard and how long to push; the run stops at whichever limit comes first."""

    target: str
    callers: int = 4
    duration: float | None = 10.0
    requests: int | None = None
    # Requests per second over all callers; None sends as fast as the callers get answers.
    rate: float | None = None
    retry: bool = False
    max_attempts: int = 20
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.duration is None and self.requests is None:
            raise ValueError("a load plan needs a duration or a request count to stop by itself")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be positive")
        if self.requests is not None and self.requests < 0:
            raise ValueError("requests must not be negative")
        if self.callers < 1:
            raise ValueError("callers must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.max_attempts < 1 or self.timeout <= 0:
            raise ValueError("max_attempts must be at least 1 and timeout positive")


@dataclass(frozen=True)
class LoadSummary:
    """Outcome of one run: what was sent, what the server took, how fast it answered."""

    target: str
    callers: int
    rate_limit: float | None
    elapsed_seconds: float
    requests_sent: int
    requests_ok: int
    # Final answers by gRPC status name: refused are the retryable "not now" codes.
    requests_refused: Mapping[str, int]
    requests_failed: Mapping[str, int]
    retries: int
    records_sent: int
    records_acknowledged: int
    # Records an OK answer declared rejected through OTLP partial success.
    records_rejected: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    truth: GroundTruth = field(repr=False, compare=False)

    @property
    def records_per_second(self) -> float:
        return self.records_acknowledged / self.elapsed_seconds if self.elapsed_seconds else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests_ok / self.elapsed_seconds if self.elapsed_seconds else 0.0

    def as_dict(self, *, include_truth: bool = False) -> dict[str, object]:
        summary: dict[str, object] = {
            "target": self.target,
            "callers": self.callers,
            "rate_limit": self.rate_limit,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "requests_sent": self.requests_sent,
            "requests_ok": self.requests_ok,
            "requests_refused": dict(self.requests_refused),
            "requests_failed": dict(self.requests_failed),
            "retries": self.retries,
            "records_sent": self.records_sent,
            "records_acknowledged": self.records_acknowledged,
            "records_rejected": self.records_rejected,
            "records_per_second": round(self.records_per_second, 1),
            "requests_per_second": round(self.requests_per_second, 2),
            "latency_ms": {
                "p50": round(self.latency_p50_ms, 3),
                "p99": round(self.latency_p99_ms, 3),
                "max": round(self.latency_max_ms, 3),
            },
        }
        if include_truth:
            summary["truth"] = [truth.as_dict() for truth in self.truth.values().values()]
        return summary


async def run_load(plan: LoadPlan, requests: Sequence[PreparedRequest]) -> LoadSummary:
    """Send `requests` round-robin until the plan's limit; RPC errors are tallied, not raised."""
    if not requests:
        raise ValueError("nothing to send: the request pool is empty")
    return await _LoadRun(plan, requests).execute()


class _LoadRun:
    """The mutable tallies of one run, shared by its callers (one event loop, no locks)."""

    def __init__(self, plan: LoadPlan, requests: Sequence[PreparedRequest]) -> None:
        self.plan = plan
        self.requests = requests
        self.truth = GroundTruth(requests)
        self.pacer = _Pacer(plan.rate) if plan.rate is not None else None
        self.issued = 0
        self.deadline = float("inf")
        self.requests_sent = 0
        self.requests_ok = 0
        self.refused: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.retries = 0
        self.records_sent = 0
        self.records_acknowledged = 0
        self.records_rejected = 0
        self.latencies: list[float] = []

    async def execute(self) -> LoadSummary:
        options = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            # gRPC's own reconnect backoff grows to 120 s: a retrying sender would then fail
            # fast for minutes against a server that restarted in a second.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        async with grpc.aio.insecure_channel(self.plan.target, options=options) as channel:
            export: _Export = channel.unary_unary(EXPORT_METHOD)  # raw bytes both ways
            started = time.perf_counter()
            if self.plan.duration is not None:
                self.deadline = time.monotonic() + self.plan.duration
            async with asyncio.TaskGroup() as callers:
                for _ in range(self.plan.callers):
                    callers.create_task(self._call_until_done(export))
            elapsed = time.perf_counter() - started
        return self._summary(elapsed)

    async def _call_until_done(self, export: _Export) -> None:
        while (request := self._next_request()) is not None:
            if self.pacer is not None and not await self.pacer.wait(self.deadline):
                return
            await self._send(export, request)

    def _next_request(self) -> PreparedRequest | None:
        if self.plan.requests is not None and self.issued >= self.plan.requests:
            return None
        if time.monotonic() >= self.deadline:
            return None
        request = self.requests[self.issued % len(self.requests)]
        self.issued += 1
        return request

    async def _send(self, export: _Export, request: PreparedRequest) -> None:
        self.requests_sent += 1
        self.records_sent += request.records
        for attempt in range(self.plan.max_attempts):
            started = time.perf_counter()
            try:
                response = await export(request.payload, timeout=self.plan.timeout)
            except grpc.aio.AioRpcError as error:
                code: grpc.StatusCode = error.code()
                if code not in RETRYABLE_CODES:
                    self.failed[code.name] += 1
                    return
                delay = retry_delay(error.trailing_metadata() or (), attempt)
                if not self._may_retry(attempt, delay):
                    self.refused[code.name] += 1
                    return
                self.retries += 1
                await asyncio.sleep(delay)
                continue
            self.latencies.append(time.perf_counter() - started)
            self._acknowledge(request, response)
            return

    def _may_retry(self, attempt: int, delay: float) -> bool:
        return (
            self.plan.retry
            and attempt + 1 < self.plan.max_attempts
            and time.monotonic() + delay < self.deadline
        )

    def _acknowledge(self, request: PreparedRequest, response: bytes) -> None:
        self.requests_ok += 1
        rejected = ExportLogsServiceResponse.FromString(
            response
        ).partial_success.rejected_log_records
        rejected = min(max(rejected, 0), request.records)
        self.records_rejected += rejected
        self.records_acknowledged += request.records - rejected
        # Which records a partial success rejected is unknown, so such a request stays out of
        # the ground truth (its records still show in records_acknowledged).
        if rejected == 0:
            self.truth.acknowledge(request)

    def _summary(self, elapsed: float) -> LoadSummary:
        latencies = sorted(self.latencies)
        return LoadSummary(
            target=self.plan.target,
            callers=self.plan.callers,
            rate_limit=self.plan.rate,
            elapsed_seconds=elapsed,
            requests_sent=self.requests_sent,
            requests_ok=self.requests_ok,
            requests_refused=dict(self.refused),
            requests_failed=dict(self.failed),
            retries=self.retries,
            records_sent=self.records_sent,
            records_acknowledged=self.records_acknowledged,
            records_rejected=self.records_rejected,
            latency_p50_ms=_percentile(latencies, 0.50) * 1000,
            latency_p99_ms=_percentile(latencies, 0.99) * 1000,
            latency_max_ms=(latencies[-1] if latencies else 0.0) * 1000,
            truth=self.truth,
        )


class _Pacer:
    """Hands out send slots `1/rate` apart; a caller that falls behind gets no catch-up burst."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_slot: float | None = None

    async def wait(self, deadline: float) -> bool:
        """Sleep until this caller's slot; False, at once, if the slot falls after `deadline`."""
        now = time.monotonic()
        slot = now if self.next_slot is None else max(now, self.next_slot)
        if slot >= deadline:
            return False
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
        return True


def _percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of an already sorted sequence; 0 when empty."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(len(ordered) * share))
    return ordered[rank - 1]
