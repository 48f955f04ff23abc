"""The front of the pipeline for front-door tests: the real queue and workers, with a gate.

A request is answered once a worker has counted it, so a front-door test needs workers. These
are the real ones (check, tally, sink) behind a gate on the queue: closed, the workers take
nothing and requests wait in the queue, so a test can fill it at will and watch what waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from otlp_stats.counting.aggregator import Added, ResolvedBatch
from otlp_stats.counting.queue import QueuedRequest, RequestQueue
from otlp_stats.counting.scan import default_scanner
from otlp_stats.counting.workers import Acknowledger, WorkerPool
from otlp_stats.telemetry import Metrics


class GatedQueue(RequestQueue):
    """The real queue; workers take requests on from it only while the gate is open."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        super().__init__(max_requests, max_bytes)
        self.taken: list[QueuedRequest] = []
        # Made on first use, inside the test's event loop.
        self._open: asyncio.Event | None = None
        self._admitted: asyncio.Event | None = None

    def _gate(self) -> asyncio.Event:
        if self._open is None:
            self._open = asyncio.Event()
            self._open.set()
        return self._open

    def _admissions(self) -> asyncio.Event:
        if self._admitted is None:
            self._admitted = asyncio.Event()
        return self._admitted

    def close_gate(self) -> None:
        self._gate().clear()

    def open_gate(self) -> None:
        self._gate().set()

    def put_nowait(self, item: QueuedRequest) -> None:
        super().put_nowait(item)
        self._admissions().set()

    async def wait_depth(self, depth: int) -> None:
        """Return once `depth` requests are admitted and not yet counted."""
        while self.depth < depth:
            admitted = self._admissions()
            admitted.clear()
            await admitted.wait()

    async def get(self) -> QueuedRequest:
        # The gate after the take: a worker already waiting for a request when the gate closes
        # holds the next one until it opens (in work, as far as the queue's bounds go).
        item = await super().get()
        await self._gate().wait()
        self.taken.append(item)
        return item


class CountedBatches:
    """The aggregator's place: every batch the workers handed over."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, ResolvedBatch]] = []

    def add(self, arrival: float, batch: ResolvedBatch) -> int:
        self.batches.append((arrival, batch))
        return 0

    def add_windows(self, arrival: float, windows: Mapping[int, ResolvedBatch]) -> Added:
        raise AssertionError("these workers count by arrival time")


def worker_pool(
    queue: RequestQueue,
    metrics: Metrics | None = None,
    max_records: int = 100_000,
    key: str = "foo",
    logger: Any = None,
    acknowledger: Acknowledger | None = None,
) -> tuple[WorkerPool, CountedBatches]:
    counted = CountedBatches()
    pool = WorkerPool(
        queue,
        counted,
        default_scanner(key),
        1,
        metrics or Metrics(CollectorRegistry()),
        logger or _NullLogger(),
        max_records,
        retry_delay=2.5,
        acknowledger=acknowledger,
    )
    return pool, counted


class _NullLogger:
    def error(self, event: str, **fields: Any) -> None:
        pass
