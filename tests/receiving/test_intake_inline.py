"""The Intake's shortcut for small requests: counted at once when none waits, within the bounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import structlog
from prometheus_client import CollectorRegistry

from otlp_stats.clock import SystemClock
from otlp_stats.counting.queue import QueuedRequest, Verdict
from otlp_stats.errors import MalformedRequest, Overloaded
from otlp_stats.health import Health, HealthState
from otlp_stats.receiving.intake import Intake
from otlp_stats.telemetry import Metrics, RateLimitedLog
from tests.support.fakes import export_request, log_record
from tests.support.pipeline_front import CountedBatches, GatedQueue, worker_pool

SMALL = export_request([log_record("hello", foo="a"), log_record("bye", foo="b")])


@dataclass
class Front:
    intake: Intake
    queue: GatedQueue
    counted: CountedBatches
    metrics: Metrics


@pytest.fixture
async def front() -> AsyncIterator[Front]:
    metrics = Metrics(CollectorRegistry())
    health = Health()
    health.move_to(HealthState.SERVING)
    queue = GatedQueue(max_requests=1, max_bytes=1 << 20)
    workers, counted = worker_pool(queue, metrics)
    await workers.start()
    intake = Intake(
        queue,
        health,
        SystemClock(),
        metrics,
        1 << 20,
        2.5,
        RateLimitedLog(structlog.get_logger("test")),
        counter=workers,
    )
    yield Front(intake, queue, counted, metrics)
    queue.open_gate()
    await workers.stop()


async def test_a_small_request_is_counted_at_once_when_none_waits(front: Front) -> None:
    front.queue.close_gate()  # a worker would hold it: only the shortcut can answer
    verdict = await front.intake.accept(SMALL.SerializeToString(), "grpc")
    assert verdict == Verdict(2)
    assert len(front.counted.batches) == 1
    assert front.queue.taken == [] and front.queue.depth == 0
    assert front.metrics.registry.get_sample_value("otlp_stats_records_counted_total") == 2


async def test_once_a_request_waits_new_ones_queue_behind_it(front: Front) -> None:
    front.queue.max_requests = 3
    front.queue.close_gate()
    held, waiting = _queued(), _queued()
    front.queue.put_nowait(held)
    for _ in range(3):  # the worker takes it and holds it at the closed gate
        await asyncio.sleep(0)
    assert front.queue.waiting == 0
    front.queue.put_nowait(waiting)
    late = asyncio.create_task(front.intake.accept(SMALL.SerializeToString(), "grpc"))
    await front.queue.wait_depth(3)
    assert not late.done()
    front.queue.open_gate()
    assert await late == Verdict(2)
    assert [item.wire for item in front.queue.taken[:2]] == [held.wire, waiting.wire]
    assert len(front.queue.taken) == 3


async def test_a_full_queue_refuses_even_a_request_that_would_be_counted_at_once(
    front: Front,
) -> None:
    front.queue.close_gate()
    front.queue.max_requests = 1
    # The one place in the queue is held by a request that waits for the worker.
    front.queue.put_nowait(_queued())
    with pytest.raises(Overloaded):
        await front.intake.accept(SMALL.SerializeToString(), "grpc")
    assert front.counted.batches == []


async def test_a_malformed_small_request_is_refused_and_releases_its_place(front: Front) -> None:
    with pytest.raises(MalformedRequest):
        await front.intake.accept(b"\xff\xff\xff", "http")
    assert front.queue.depth == 0
    refused = front.metrics.registry.get_sample_value(
        "otlp_stats_export_refused_total", {"transport": "http", "reason": "malformed"}
    )
    assert refused == 1


def _queued() -> QueuedRequest:
    loop = asyncio.get_running_loop()
    return QueuedRequest(0.0, SMALL.SerializeToString(), "grpc", loop.create_future())
