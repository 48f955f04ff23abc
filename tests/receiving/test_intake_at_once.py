"""The Intake counts a small request at once only when nothing is queued or in work; otherwise
it queues as any request does, and a full queue refuses it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import structlog
from prometheus_client import CollectorRegistry

from otlp_stats.clock import SystemClock
from otlp_stats.counting.queue import QueuedRequest, Verdict
from otlp_stats.counting.workers import AT_ONCE_BYTES, Done, Journaled, Stored, WorkerPool
from otlp_stats.errors import CountingFailed, MalformedRequest, Overloaded
from otlp_stats.health import Health, HealthState
from otlp_stats.receiving.intake import Intake
from otlp_stats.telemetry import Metrics, RateLimitedLog
from tests.support.fakes import export_request, log_record
from tests.support.pipeline_front import CountedBatches, GatedQueue, worker_pool

SMALL = export_request(
    [log_record("hello", foo="a"), log_record("bye", foo="b")]
).SerializeToString()
# Over the at-once size: one record whose body alone is bigger.
LARGE = export_request([log_record("x" * AT_ONCE_BYTES, foo="a")]).SerializeToString()


@dataclass
class Front:
    intake: Intake
    queue: GatedQueue
    counted: CountedBatches
    metrics: Metrics


@pytest.fixture
async def front() -> AsyncIterator[Front]:
    metrics = Metrics(CollectorRegistry())
    queue = GatedQueue(max_requests=3, max_bytes=1 << 20)
    workers, counted = worker_pool(queue, metrics)
    await workers.start()
    yield Front(_intake(queue, metrics, workers), queue, counted, metrics)
    queue.open_gate()
    await workers.stop()


def _intake(queue: GatedQueue, metrics: Metrics, workers: WorkerPool) -> Intake:
    health = Health()
    health.move_to(HealthState.SERVING)
    return Intake(
        queue,
        health,
        SystemClock(),
        metrics,
        1 << 20,
        2.5,
        RateLimitedLog(structlog.get_logger("test")),
        counter=workers,
    )


async def test_a_small_request_is_counted_at_once_when_nothing_is_queued_or_in_work(
    front: Front,
) -> None:
    front.queue.close_gate()  # a worker would hold it: only the handler's own count can answer
    verdict = await front.intake.accept(SMALL, "grpc")
    assert verdict == Verdict(2)
    assert len(front.counted.batches) == 1
    assert front.queue.taken == [] and front.queue.depth == 0
    assert front.metrics.registry.get_sample_value("otlp_stats_records_counted_total") == 2


async def test_a_request_in_a_workers_hands_makes_a_small_one_queue_behind_it(
    front: Front,
) -> None:
    front.queue.close_gate()
    held = _queued()
    front.queue.put_nowait(held)
    await _until(lambda: front.queue.waiting == 0)  # the worker took it: in work, none waits
    late = asyncio.create_task(front.intake.accept(SMALL, "grpc"))
    await front.queue.wait_depth(2)
    assert not late.done() and front.counted.batches == []
    front.queue.open_gate()
    assert await late == Verdict(2)
    assert [item.wire for item in front.queue.taken] == [held.wire, SMALL]


async def test_a_request_over_the_at_once_size_always_goes_to_a_worker(front: Front) -> None:
    front.queue.close_gate()
    large = asyncio.create_task(front.intake.accept(LARGE, "grpc"))
    await front.queue.wait_depth(1)
    assert not large.done()
    front.queue.open_gate()
    assert await large == Verdict(1)
    assert [item.wire for item in front.queue.taken] == [LARGE]


async def test_a_full_queue_refuses_a_small_request_with_a_retryable_status(
    front: Front,
) -> None:
    front.queue.close_gate()
    for _ in range(front.queue.max_requests):
        front.queue.put_nowait(_queued())
    with pytest.raises(Overloaded) as refused:
        await front.intake.accept(SMALL, "grpc")
    assert refused.value.retryable
    assert front.counted.batches == []
    assert front.queue.depth == front.queue.max_requests


async def test_a_malformed_small_request_is_refused_and_releases_its_place(front: Front) -> None:
    with pytest.raises(MalformedRequest):
        await front.intake.accept(b"\xff\xff\xff", "http")
    assert front.queue.depth == 0 and front.queue.oldest_arrival() is None
    refused = front.metrics.registry.get_sample_value(
        "otlp_stats_export_refused_total", {"transport": "http", "reason": "malformed"}
    )
    assert refused == 1


async def test_a_fault_in_the_at_once_count_refuses_the_request_and_is_a_metric(
    front: Front,
) -> None:
    def broken(arrival: float, batch: object) -> int:
        raise RuntimeError("a bug")

    front.counted.add = broken  # type: ignore[method-assign]
    with pytest.raises(CountingFailed):
        await front.intake.accept(SMALL, "grpc")
    registry = front.metrics.registry
    assert registry.get_sample_value("otlp_stats_records_failed_total") == 2
    assert registry.get_sample_value("otlp_stats_records_counted_total") == 0
    refused = {"transport": "grpc", "reason": "internal"}
    assert registry.get_sample_value("otlp_stats_export_refused_total", refused) == 1
    assert front.queue.depth == 0


class HeldAnswers:
    """An acknowledger that answers when told, as --durability ack does once committed."""

    def __init__(self) -> None:
        self.waiting: list[tuple[asyncio.Future[Verdict], Verdict, Done]] = []

    def acknowledge(
        self,
        verdict: asyncio.Future[Verdict],
        answer: Verdict,
        counted: Journaled,
        done: Done,
        stored: Stored = None,
    ) -> None:
        self.waiting.append((verdict, answer, done))

    def answer_all(self) -> None:
        for verdict, answer, done in self.waiting:
            verdict.set_result(answer)
            done()


async def test_an_acknowledgement_that_waits_keeps_the_small_requests_place_until_answered() -> (
    None
):
    """With --durability ack the small request counted at once is answered only once its
    counts are committed, and holds its place in the queue (and its window open) until then."""
    metrics = Metrics(CollectorRegistry())
    queue = GatedQueue(max_requests=3, max_bytes=1 << 20)
    held = HeldAnswers()
    workers, counted = worker_pool(queue, metrics, acknowledger=held)
    assert not workers.answers_at_once
    queue.close_gate()  # no worker can answer it: the handler's own count does
    accepting = asyncio.create_task(_intake(queue, metrics, workers).accept(SMALL, "grpc"))
    await _until(lambda: bool(held.waiting))
    assert len(counted.batches) == 1
    assert not accepting.done()
    assert queue.depth == 1 and queue.oldest_arrival() is not None
    held.answer_all()
    assert await accepting == Verdict(2)
    assert queue.depth == 0 and queue.oldest_arrival() is None
    assert queue.taken == []


def _queued() -> QueuedRequest:
    loop = asyncio.get_running_loop()
    return QueuedRequest(0.0, SMALL, "grpc", loop.create_future())


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until the condition holds (the worker's take is a few turns away)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached in 100 turns of the loop")
