"""The worker pool: take queued requests, resolve and hash them, feed the aggregator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.aggregator import ResolvedBatch, ValueTally
from otlp_stats.messages import message_hash
from otlp_stats.queue import QueuedRequest, RequestQueue
from otlp_stats.resolve import find_attribute, render_value
from otlp_stats.telemetry import Metrics

BatchSink = Callable[[float, ResolvedBatch], None]


def tally_request(request: ExportLogsServiceRequest, key: str) -> dict[str | None, ValueTally]:
    """Per attribute value, the records and distinct message hashes of one request.

    The resource's and scope's values are resolved once per group, not once per record.
    """
    tallies: dict[str | None, ValueTally] = {}
    for resource_logs in request.resource_logs:
        resource_value = find_attribute(resource_logs.resource.attributes, key)
        resource_label = None if resource_value is None else render_value(resource_value)
        for scope_logs in resource_logs.scope_logs:
            scope_value = find_attribute(scope_logs.scope.attributes, key)
            scope_label = resource_label if scope_value is None else render_value(scope_value)
            for record in scope_logs.log_records:
                own = find_attribute(record.attributes, key)
                label = scope_label if own is None else render_value(own)
                tally = tallies.get(label)
                if tally is None:
                    tally = tallies[label] = ValueTally()
                tally.records += 1
                tally.messages.add(message_hash(record.body))
    return tallies


class WorkerPool:
    """`workers` tasks, each resolving one request at a time in a thread.

    The resolving runs off the event loop so a huge request does not stall the Export handlers
    and health probes; the batch is handed to the aggregator back on the loop, so the aggregator
    is only ever touched from one thread.
    """

    def __init__(
        self,
        queue: RequestQueue,
        sink: BatchSink,
        attribute_key: str,
        workers: int,
        metrics: Metrics,
        logger: Any,
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._attribute_key = attribute_key
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
        """Cancel the workers; call after the queue is drained to lose nothing."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            started = time.perf_counter()
            try:
                batch = await loop.run_in_executor(
                    self._executor, tally_request, item.request, self._attribute_key
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
