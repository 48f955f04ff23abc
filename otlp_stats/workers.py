"""The worker pool: take queued requests, resolve and hash them, feed the aggregator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xxhash import xxh3_64_intdigest

from otlp_stats.aggregator import ResolvedBatch
from otlp_stats.messages import SIGNED_OFFSET, STRING_TAG, body_hash
from otlp_stats.queue import QueuedRequest, RequestQueue
from otlp_stats.resolve import LabelRenderer
from otlp_stats.telemetry import Metrics
from otlp_stats.view import ExportLogsRequestView

BatchSink = Callable[[float, ResolvedBatch], None]


def tally_view(
    request: ExportLogsRequestView,
    key: str,
    labels: LabelRenderer,
    key_on_records: bool = True,
) -> dict[str | None, list[int]]:
    """Per attribute value label, the message hash of each record of one request.

    This is the hot loop, run once per record, so it is written for CPython: the per-record
    steps are list comprehensions (attribute lookups are map lookups done in C), a string
    body is hashed from its raw bytes in place (messages.body_hash, inlined), and a value is
    rendered once per distinct raw value rather than once per record. When no record can carry
    the key (`key_on_records` False), the per-record lookup, the costliest step, is skipped.
    """
    raws: list[bytes | None] = []
    bodies: list[bytes] = []
    for resource_logs in request.resource_logs:
        resource_raw = resource_logs.resource.attributes.get(key)
        for scope_logs in resource_logs.scope_logs:
            scope_raw = scope_logs.scope.attributes.get(key, resource_raw)
            # One list of wrappers, walked twice: iterating the repeated field twice would
            # build every record's wrapper twice.
            records = list(scope_logs.log_records)
            if key_on_records:
                raws += [record.attributes.get(key, scope_raw) for record in records]
            else:
                raws += [scope_raw] * len(records)
            bodies += [record.body for record in records]
    hashes = [
        xxh3_64_intdigest(body) - SIGNED_OFFSET if body[:1] == STRING_TAG else body_hash(body)
        for body in bodies
    ]
    return _by_label(_group(raws, hashes), labels)


def _group(raws: list[bytes | None], hashes: list[int]) -> dict[bytes | None, list[int]]:
    distinct = set(raws)
    if len(distinct) == 1:  # one value for the whole request: the usual case
        return {distinct.pop(): hashes}
    groups: dict[bytes | None, list[int]] = {}
    for raw, digest in zip(raws, hashes, strict=True):
        group = groups.get(raw)
        if group is None:
            group = groups[raw] = []
        group.append(digest)
    return groups


def _by_label(
    by_raw: dict[bytes | None, list[int]], labels: LabelRenderer
) -> dict[str | None, list[int]]:
    """Merge raw values that render alike (an int 7 and a string "7" are one label)."""
    by_label: dict[str | None, list[int]] = {}
    for raw, hashes in by_raw.items():
        label = None if raw is None else labels.label(raw)
        if label in by_label:
            by_label[label].extend(hashes)
        else:
            by_label[label] = hashes
    return by_label


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
        labels: LabelRenderer | None = None,
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._attribute_key = attribute_key
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
                    self._executor,
                    tally_view,
                    item.request,
                    self._attribute_key,
                    self.labels,
                    item.key_on_records,
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
