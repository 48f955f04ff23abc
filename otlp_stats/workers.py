"""The worker pool: take queued requests, resolve and hash them, feed the aggregator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from otlp_stats.aggregator import ResolvedBatch
from otlp_stats.queue import QueuedRequest, RequestQueue
from otlp_stats.resolve import LabelRenderer
from otlp_stats.scan import Scanner
from otlp_stats.telemetry import Metrics

BatchSink = Callable[[float, ResolvedBatch], None]


class WorkerPool:
    """`workers` tasks, each resolving one request at a time in a thread.

    The resolving runs off the event loop so a huge request does not stall the Export handlers
    and health probes, and so that work that cannot keep up shows as a full queue, which the
    front doors answer with a retryable status. (Tallying small requests on the loop cost 20%
    less CPU per record, but the loop then never let the queue fill: an overload waited
    unseen in gRPC's buffers instead of being refused. See BENCHMARKS.md.) The batch is
    handed to the aggregator back on the loop, so the aggregator is only ever touched from
    one thread.
    """

    def __init__(
        self,
        queue: RequestQueue,
        sink: BatchSink,
        scanner: Scanner,
        workers: int,
        metrics: Metrics,
        logger: Any,
        labels: LabelRenderer | None = None,
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._scanner = scanner
        self.labels = labels or LabelRenderer()
        self._workers = workers
        self._metrics = metrics
        self._logger = logger
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="otlp-stats-worker")
        self._tasks = [
            asyncio.create_task(self._run(), name=f"worker-{n}") for n in range(self._workers)
        ]

    async def stop(self) -> None:
        """Cancel the workers; call after the queue is drained to lose nothing.

        After a drain that ran out of time, the requests still waiting were acknowledged and
        will not be counted: each is reported as failed (metric and log), not dropped silently.
        """
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while (item := self._queue.get_nowait()) is not None:
            self._report_failure(item, "still queued when the shutdown grace ran out")
            self._queue.done(item)
        if self._executor is not None:
            # A tally already running in a thread finishes there; wait for it off the loop.
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            started = time.perf_counter()
            try:
                batch = await loop.run_in_executor(
                    self._executor, self._scanner.tally, item.request, self.labels
                )
                self._sink(item.arrival, batch)
                self._metrics.records_counted.inc(item.records)
            except asyncio.CancelledError:
                self._report_failure(item, "cancelled during shutdown")
                raise
            except Exception:
                self._logger.exception("worker_failed", records=item.records)
                self._report_failure(item, "worker error")
            finally:
                self._queue.done(item)
                self._metrics.worker_duration.observe(time.perf_counter() - started)

    def _report_failure(self, item: QueuedRequest, why: str) -> None:
        self._metrics.records_failed.inc(item.records)
        self._logger.error("records_not_counted", records=item.records, why=why)
