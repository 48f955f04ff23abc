"""The queue and retry loop every sink shares, and the thread the sinks run on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from otlp_stats.counting.aggregator import WindowReport
from otlp_stats.reporting.sinks.outbox import KeptReport, Outbox, idempotency_key

DEFAULT_QUEUE_SIZE = 1000
_BACKOFF_FIRST = 0.5
_BACKOFF_MOST = 30.0


class SinkReport:
    """One report as sinks get it: the window, its JSON object, and that object's JSON line
    (the very line `--report-format json` prints, without its newline).

    Rendered when a sink first asks, on the sinks' thread (the only one that asks), so a
    report of thousands of values costs the counting loop nothing but the hand-over; a line
    stdout already printed in JSON is passed in and reused. A report read back from the outbox
    has no WindowReport, only its line (only sinks that keep reports get those).
    """

    def __init__(
        self,
        report: WindowReport | None,
        to_fields: Callable[[WindowReport], dict[str, Any]],
        to_line: Callable[[dict[str, Any]], str],
        line: str | None = None,
    ) -> None:
        self.report = report
        self._to_fields = to_fields
        self._to_line = to_line
        self._fields: dict[str, Any] | None = None
        self._line = line
        self._key: str | None = None
        # Its row in the outbox, once kept there; the replica is the idempotency key's.
        self.seq: int | None = None
        self.replica = ""

    @classmethod
    def kept(cls, kept: KeptReport) -> SinkReport:
        item = cls(None, _no_fields, json.dumps, kept.line)
        item._fields = json.loads(kept.line)
        item._key = kept.key
        item.seq = kept.seq
        return item

    @property
    def fields(self) -> dict[str, Any]:
        if self._fields is None:
            assert self.report is not None, "a kept report has its fields"
            self._fields = self._to_fields(self.report)
        return self._fields

    @property
    def idempotency_key(self) -> str:
        if self._key is None:
            self._key = idempotency_key(self.fields, self.replica)
        return self._key

    @property
    def line(self) -> str:
        if self._line is None:
            self._line = self._to_line(self.fields)
        return self._line


def _no_fields(report: WindowReport) -> dict[str, Any]:
    raise AssertionError("a kept report has its fields")


class RetryLater(Exception):
    """The peer may take it later (5xx, 429, UNAVAILABLE, no connection)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Refused(Exception):
    """The peer will never take it (a 4xx other than 429): retrying cannot help."""


class SinkTarget(Protocol):
    """One destination; runs on the sinks' thread. deliver raises RetryLater or Refused."""

    async def open(self) -> None: ...

    async def deliver(self, item: SinkReport) -> None: ...

    async def close(self) -> None: ...


class QueuedSink:
    """A bounded queue in front of a target: a full queue drops its oldest report, counted."""

    def __init__(
        self,
        label: str,
        target: SinkTarget,
        queue_size: int,
        retries: int,
        log: Any,
        backoff_first: float = _BACKOFF_FIRST,
        wall_clock: Callable[[], float] = time.time,
        sink_id: str | None = None,
    ) -> None:
        self.label = label
        # Set for a sink whose undelivered reports the outbox keeps (docs/sinks.md).
        self.sink_id = sink_id
        self.outbox: Outbox | None = None
        self.target = target
        self._retries = retries
        self._log = log.bind(sink=label) if hasattr(log, "bind") else log
        self._backoff_first = backoff_first
        self._items: deque[SinkReport] = deque()
        self._size = queue_size
        self._lock = threading.Lock()
        self._ready: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.retried = 0
        # Unix time of the last report the peer accepted; 0 until one is. Wall time, not the
        # service's clock: it is compared with Prometheus's time() to tell a sink that is down.
        self.last_success = 0.0
        self._wall_clock = wall_clock

    @property
    def depth(self) -> int:
        return len(self._items) + (1 if self._busy else 0)

    def offer(self, item: SinkReport) -> None:
        """From any thread; never waits."""
        with self._lock:
            oldest = None
            if len(self._items) >= self._size:
                oldest = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
        if oldest is not None:
            # The outbox holds what the queue holds: bounded by the same size.
            self._forget(oldest)
        loop, ready = self._loop, self._ready
        if loop is not None and ready is not None:
            # After stop the loop is closed: the report stays queued (and bounded), unsent.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ready.set)

    @property
    def keeps(self) -> bool:
        return self.outbox is not None and self.sink_id is not None

    def count_dropped(self, reports: int) -> None:
        with self._lock:
            self.dropped += reports

    def drop_all(self) -> int:
        """At stop: forget the queue; counted as dropped unless the outbox keeps it."""
        with self._lock:
            left = len(self._items)
            self._items.clear()
            if not self.keeps:
                self.dropped += left
        return left

    def _forget(self, item: SinkReport) -> None:
        if self.outbox is None or self.sink_id is None or item.seq is None:
            return
        try:
            self.outbox.forget(self.sink_id, item.seq)
        except Exception:  # a store error must not end the sink's loop; the row comes back
            self._log.exception("sink_outbox_failed")

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        await self._open()
        try:
            while True:
                item = self._take()
                if item is None:
                    self._idle.set()
                    await self._ready.wait()
                    self._ready.clear()
                    continue
                self._busy = True
                try:
                    await self._deliver(item)
                except asyncio.CancelledError:
                    # Stopped mid-delivery (the grace spent): that report is dropped too, or
                    # kept in the outbox for the next start.
                    with self._lock:
                        self.dropped += 0 if self.keeps else 1
                    raise
                finally:
                    self._busy = False
        finally:
            self._loop = None
            await self.target.close()

    async def _open(self) -> None:
        """Open the target, again and again after a pause while it fails (a CA file gone):
        its reports wait in the bounded queue meanwhile."""
        attempt = 0
        while True:
            try:
                await self.target.open()
            except Exception:
                attempt += 1
                self._log.exception("sink_open_failed", attempt=attempt)
                await asyncio.sleep(self._pause(attempt, None))
            else:
                return

    async def wait_idle(self) -> None:
        """Until nothing is queued or in delivery (on the sinks' loop, once run started)."""
        while self.depth and self._idle is not None:
            self._idle.clear()
            await self._idle.wait()

    def _take(self) -> SinkReport | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    async def _deliver(self, item: SinkReport) -> None:
        attempt = 0
        while True:
            try:
                await self.target.deliver(item)
            except RetryLater as error:
                attempt += 1
                if attempt > self._retries:
                    self._give_up(item, f"still failing after {self._retries} retries: {error}")
                    self._forget(item)
                    return
                self.retried += 1
                await asyncio.sleep(self._pause(attempt, error.retry_after))
            except Refused as error:
                self._give_up(item, str(error))
                self._forget(item)
                return
            except Exception as error:  # a bug of ours must not end the sink's loop
                self._log.exception("sink_delivery_bug")
                self._give_up(item, repr(error))
                self._forget(item)
                return
            else:
                self.delivered += 1
                self.last_success = self._wall_clock()
                self._forget(item)
                return

    def _pause(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _BACKOFF_MOST)
        # Exponential with jitter, so sinks of many replicas do not retry in step.
        ceiling = min(self._backoff_first * 2 ** (attempt - 1), _BACKOFF_MOST)
        return random.uniform(ceiling / 2, ceiling)

    def _give_up(self, item: SinkReport, reason: str) -> None:
        self.failed += 1
        self._log.error(
            "sink_delivery_failed",
            window_start=item.fields.get("window_start"),
            revision=item.fields.get("revision"),
            reason=reason,
        )


class ReportSinks:
    """Every sink of the service, run on a thread of their own with its own event loop: a slow
    sink, or a CPU-heavy encoding, never holds up the loop that counts. stdout stays the
    reporter's (it prints in order, at once, as before).

    With an outbox (an SQLite store), each report is written there for the sinks that keep
    reports before they queue it, on the sinks' thread; each sink forgets its row once the
    report is delivered, given up or dropped; at start what is left is queued first, in order.
    """

    def __init__(
        self,
        sinks: Sequence[QueuedSink],
        stdout: bool,
        log: Any,
        outbox: Outbox | None = None,
        replica: str = "",
    ) -> None:
        self.sinks = tuple(sinks)
        self.stdout = stdout
        self._log = log
        self._replica = replica
        self._outbox = outbox if any(sink.sink_id for sink in self.sinks) else None
        if outbox is not None and self._outbox is None:
            outbox.close()  # OTLP sinks alone: nothing to keep
        for sink in self.sinks:
            sink.outbox = self._outbox
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = threading.Event()
        # Held while a report is handed over and while close() begins: a report offered during
        # a close is either handed over before the drain starts, or counted as dropped.
        self._handing = threading.Lock()
        self._closing = False

    def offer(self, item: SinkReport) -> None:
        item.replica = self._replica
        with self._handing:
            if self._closing:
                self._drop_late(item)
                return
            loop = self._loop
            if self._outbox is None:
                self._queue(item)
            elif loop is not None and not loop.is_closed():
                # Rendered and written on the sinks' thread: the counting loop only hands it
                # over; the drain is scheduled after it, so it finds the report queued.
                loop.call_soon_threadsafe(self._keep, item)
            else:
                self._keep(item)

    def _drop_late(self, item: SinkReport) -> None:
        for sink in self.sinks:
            sink.count_dropped(1)
        if self.sinks:
            self._log.warning("sink_report_after_stop", sinks=len(self.sinks))

    def _queue(self, item: SinkReport) -> None:
        for sink in self.sinks:
            sink.offer(item)

    def _keep(self, item: SinkReport) -> None:
        keeping = [sink.sink_id for sink in self.sinks if sink.sink_id is not None]
        if self._outbox is not None:
            try:
                item.seq = self._outbox.keep(keeping, item.idempotency_key, item.line)
            except Exception:  # the store failing must not lose the report for the live sinks
                self._log.exception("sink_outbox_failed")
        self._queue(item)

    def _restore(self) -> None:
        """Queue what the outbox kept, oldest first, before any new report; forget the rows of
        sinks no longer configured."""
        if self._outbox is None:
            return
        by_id = {sink.sink_id: sink for sink in self.sinks if sink.sink_id is not None}
        left = self._outbox.left()
        for kept in left:
            item = SinkReport.kept(kept)
            for sink_id in kept.sinks:
                sink = by_id.get(sink_id)
                if sink is None:
                    self._outbox.forget(sink_id, kept.seq)
                else:
                    sink.offer(item)
        if left:
            self._log.info("sink_outbox_restored", reports=len(left))

    def start(self) -> None:
        if not self.sinks or self._thread is not None:
            return
        self._restore()
        self._thread = threading.Thread(target=self._serve, name="report-sinks", daemon=True)
        self._thread.start()
        self._started.wait()

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._tasks = [
            self._loop.create_task(sink.run(), name=f"sink-{sink.label}") for sink in self.sinks
        ]
        self._loop.call_soon(self._started.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def close(self, grace: float) -> None:
        """Deliver what is queued within `grace` seconds, then give up on the rest (counted as
        dropped) and stop the thread. Idempotent; blocks its caller."""
        with self._handing:
            self._closing = True
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._drain(grace), self._loop)
        future.result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None
            for sink in self.sinks:
                sink.outbox = None

    async def stop(self, grace: float) -> None:
        await asyncio.to_thread(self.close, grace)

    async def _drain(self, grace: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.wait_idle() for s in self.sinks)), grace)
        dropped_before = [sink.dropped for sink in self.sinks]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sink, before in zip(self.sinks, dropped_before, strict=True):
            left = sink.drop_all()
            if sink.keeps and left:
                self._log.warning("sink_undelivered_kept", sink=sink.label, reports=left)
            if sink.dropped > before:
                self._log.warning(
                    "sink_undelivered_at_stop", sink=sink.label, reports=sink.dropped - before
                )

    def collector(self) -> SinkCollector:
        return SinkCollector(self)


class SinkCollector:
    """otlp_stats_sink_* at scrape time, by scheme: the URI may hold a password."""

    def __init__(self, sinks: ReportSinks) -> None:
        self._sinks = sinks

    def collect(self) -> Iterator[Metric]:
        families = {
            "delivered": CounterMetricFamily(
                "otlp_stats_sink_delivered", "Reports a sink's peer accepted.", labels=["sink"]
            ),
            "retried": CounterMetricFamily(
                "otlp_stats_sink_retried", "Delivery attempts retried.", labels=["sink"]
            ),
            "failed": CounterMetricFamily(
                "otlp_stats_sink_failed",
                "Reports given up: refused (4xx) or still failing after the retries.",
                labels=["sink"],
            ),
            "dropped": CounterMetricFamily(
                "otlp_stats_sink_dropped",
                "Reports dropped unsent: the oldest of a full queue, or left at stop.",
                labels=["sink"],
            ),
        }
        depth = GaugeMetricFamily(
            "otlp_stats_sink_queue_depth", "Reports waiting for a sink.", labels=["sink"]
        )
        last_success = GaugeMetricFamily(
            "otlp_stats_sink_last_success_timestamp_seconds",
            "Unix time a sink's peer last accepted a report; 0 before the first.",
            labels=["sink"],
        )
        by_label: dict[str, list[QueuedSink]] = {}
        for sink in self._sinks.sinks:
            by_label.setdefault(sink.label, []).append(sink)
        for label, sinks in by_label.items():
            for name, family in families.items():
                family.add_metric([label], sum(getattr(sink, name) for sink in sinks))
            depth.add_metric([label], sum(sink.depth for sink in sinks))
            # Several sinks of one scheme: the oldest of their last successes, so one of them
            # down shows even while another delivers.
            last_success.add_metric([label], min(sink.last_success for sink in sinks))
        yield from families.values()
        yield depth
        yield last_success
