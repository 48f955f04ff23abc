"""The bounded request queue: limits by count and bytes, and the oldest unfinished arrival."""

from __future__ import annotations

import asyncio

import pytest

from otlp_stats.counting.queue import QueuedRequest, QueueFull, RequestQueue

# The verdicts' loop: these tests never await one.
_LOOP = asyncio.new_event_loop()


def item(arrival: float = 1.0, size: int = 10) -> QueuedRequest:
    return QueuedRequest(arrival, b"x" * size, "grpc", _LOOP.create_future())


def test_refuses_past_the_request_limit() -> None:
    queue = RequestQueue(max_requests=2, max_bytes=1000)
    queue.put_nowait(item())
    queue.put_nowait(item())
    with pytest.raises(QueueFull) as refused:
        queue.put_nowait(item())
    assert refused.value.reason == "queue_requests"
    assert queue.depth == 2


def test_refuses_past_the_byte_limit() -> None:
    queue = RequestQueue(max_requests=10, max_bytes=100)
    queue.put_nowait(item(size=60))
    with pytest.raises(QueueFull) as refused:
        queue.put_nowait(item(size=41))
    assert refused.value.reason == "queue_bytes"
    queue.put_nowait(item(size=40))
    assert queue.depth_bytes == 100


def test_empty_queue_admits_a_request_larger_than_the_byte_limit() -> None:
    queue = RequestQueue(max_requests=10, max_bytes=100)
    queue.put_nowait(item(size=500))
    with pytest.raises(QueueFull):
        queue.put_nowait(item(size=1))


async def test_capacity_is_released_only_when_done_not_when_taken() -> None:
    queue = RequestQueue(max_requests=1, max_bytes=1000)
    first = item()
    queue.put_nowait(first)
    taken = await queue.get()
    with pytest.raises(QueueFull):
        queue.put_nowait(item())
    queue.done(taken)
    queue.put_nowait(item())


async def test_oldest_arrival_tracks_unfinished_requests() -> None:
    queue = RequestQueue(max_requests=10, max_bytes=1000)
    assert queue.oldest_arrival() is None
    early, late, same = item(5.0), item(9.0), item(5.0)
    for entry in (early, late, same):
        queue.put_nowait(entry)
    assert queue.oldest_arrival() == 5.0
    queue.done(await queue.get())
    assert queue.oldest_arrival() == 5.0
    queue.done(await queue.get())
    assert queue.oldest_arrival() == 5.0
    queue.done(await queue.get())
    assert queue.oldest_arrival() is None


async def test_wait_idle_returns_once_everything_is_done() -> None:
    queue = RequestQueue(max_requests=10, max_bytes=1000)
    queue.put_nowait(item())
    idle = asyncio.create_task(queue.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()
    queue.done(await queue.get())
    await asyncio.wait_for(idle, 1)
