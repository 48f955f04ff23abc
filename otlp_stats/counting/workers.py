"""The worker pool: take queued requests, check, resolve and hash them, feed the aggregator.

A worker gives each request its verdict (the records counted and those rejected as late, or
why it is refused), which the Export handler has been awaiting, once the request's counts are in
the aggregator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, cast

from otlp_stats.counting.aggregator import Added, ResolvedBatch
from otlp_stats.counting.late import LateRecords, RejectLate
from otlp_stats.counting.queue import QueuedRequest, RequestQueue, Verdict, all_counted
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import (
    CheckedRequest,
    EventTime,
    Scanner,
    Tally,
    WindowedTally,
    arrival_ns,
)
from otlp_stats.errors import CountingFailed, ExportRefused, RequestTooLarge, ShuttingDown
from otlp_stats.telemetry import Metrics


class CountSink(Protocol):
    """Where counted requests go: the aggregator, in the service."""

    def add(self, arrival: float, batch: ResolvedBatch) -> int:
        """Arrival time: the request's records, all in the window of its arrival (its index)."""
        ...

    def add_windows(self, arrival: float, windows: Mapping[int, ResolvedBatch]) -> Added:
        """Event time: the request's records per window; the late ones come back."""
        ...


class KeyedCountSink(CountSink, Protocol):
    """Where counted requests go with several attribute keys (counting.keyed.KeyedAggregator)."""

    def add_keys(self, arrival: float, batches: Sequence[ResolvedBatch]) -> int:
        """Arrival time: the request's records, once per key, in the keys' order; the index
        of the window they went to (the same for every key)."""
        ...

    def add_windows_keys(
        self, arrival: float, windows: Sequence[Mapping[int, ResolvedBatch]]
    ) -> Added:
        """Event time: the request's records per window, once per key."""
        ...


# What counting one request gives: per attribute value (and window, with event time), for the
# one key, or a list of those in the keys' order with several.
Counted = ResolvedBatch | WindowedTally | list[Tally] | list[WindowedTally]
# A resolved request: its record count, what counting it gives, and its records whose pattern
# the masker cut at the token bound, at the length bound, added to the metric on the loop.
Resolved = tuple[int, Counted, tuple[int, int]]

# A counted request's records per (attribute key, window index), as the aggregator took them:
# what --durability ack writes to the journal before answering.
Journaled = Mapping[tuple[str, int], ResolvedBatch]
# Releases the request's place in the queue, once it is answered.
Done = Callable[[], None]
# With --durability ack, for a request whose late records were merged: done once they are in
# their stored windows (counting/late.py).
Stored = asyncio.Future[None] | None


class Acknowledger(Protocol):
    """Answers a counted request: at once (counts in memory), or once its counts are durable."""

    def acknowledge(
        self,
        verdict: asyncio.Future[Verdict],
        answer: Verdict,
        counted: Journaled,
        done: Done,
        stored: Stored = None,
    ) -> None:
        """Give `answer` to `verdict` (or a retryable refusal), then call `done`; with
        `stored`, only once it is done too."""
        ...


class AnswerAtOnce:
    """The acknowledgement of --durability checkpoint: counted in memory is accepted (merged
    late records too: no one waits for their merge, so `stored` is always None here)."""

    def acknowledge(
        self,
        verdict: asyncio.Future[Verdict],
        answer: Verdict,
        counted: Journaled,
        done: Done,
        stored: Stored = None,
    ) -> None:
        if not verdict.done():
            verdict.set_result(answer)
        done()


# Requests up to this size are counted on the event loop; bigger ones in a thread. That is about
# 2,800 reference records, a millisecond with the C scanner, and a handoff to a thread and back
# costs more than that (13% of the service's CPU per record, measured), while a 64 MiB request
# would hold the loop, the other Exports and the health probes for a tenth of a second or more.
# The worst case inline is 1 MiB of 2-byte records (500,000): about 0.1 s.
INLINE_BYTES = 1 << 20


# Requests up to this size may be counted at once by their Export handler, when nothing is
# queued or in work (count_now): about 45 reference records, some 15 µs of counting against the
# 150-200 µs grpc.aio or aiohttp spend on any call, so counting in the handler can never be what
# overloads the loop; bigger requests always go through the queue, whose bound then refuses.
AT_ONCE_BYTES = 16 << 10


# How long a worker counts the requests that wait before it yields to the loop. A yield per
# request costs a loop iteration (an epoll_wait, the wake-ups) per request, a tenth of a small
# request's CPU; the Export handlers still get in every turn, so a flood fills the queue.
TURN_SECONDS = 0.002


class WorkerPool:
    """`workers` tasks, each counting one request at a time.

    Counting is the scanner's check (validate, and note per record its attribute value and
    message hash, and its time with event time) and tally (group by value, and window with
    event time, and sketch), on the event loop for requests up to
    INLINE_BYTES and in a thread above; then the hand-over to the aggregator, always on the
    loop, so the aggregator is only ever touched from one thread. A worker yields to the loop
    between two requests while more wait, so the Export handlers keep admitting, and work that
    cannot keep up shows as a full queue, refused with a retryable status.
    """

    def __init__(
        self,
        queue: RequestQueue,
        sink: CountSink,
        scanner: Scanner,
        workers: int,
        metrics: Metrics,
        logger: Any,
        max_records: int,
        retry_delay: float,
        labels: LabelRenderer | None = None,
        event_time: EventTime | None = None,
        late: LateRecords | None = None,
        acknowledger: Acknowledger | None = None,
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._scanner = scanner
        # Several keys: one check (one walk over the bytes) and a tally per key from it.
        self._keys = tuple(scanner.keys)
        self._several = len(self._keys) > 1
        self.labels = labels or LabelRenderer()
        self._workers = workers
        self._metrics = metrics
        # Bound once: labels() costs a lock, a tuple and a dict lookup per call.
        self._adjusted_future = metrics.timestamps_adjusted.labels("future")
        self._adjusted_missing = metrics.timestamps_adjusted.labels("missing")
        self._hot = metrics.hot
        self._logger = logger
        self._max_records = max_records
        self._retry_delay = retry_delay
        # None: arrival time (the scanner notes no record times).
        self._event_time = event_time
        self._late = late or RejectLate(0.0, 0.0)
        self._acknowledger = acknowledger or AnswerAtOnce()
        # What count_at_once may do without a future: answer a request counted in memory.
        self.answers_at_once = isinstance(self._acknowledger, AnswerAtOnce)
        # One key, arrival time: the request's records go to one window in one call.
        self._one_window = not self._several and event_time is None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def at_once_bytes(self) -> int:
        """The largest request count_now takes."""
        return AT_ONCE_BYTES

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="otlp-stats-worker")
        self._tasks = [
            asyncio.create_task(self._run(), name=f"worker-{n}") for n in range(self._workers)
        ]

    async def stop(self) -> None:
        """Cancel the workers; call after the queue is drained.

        After a drain that ran out of time, the requests still waiting are refused as the
        service shuts down (retryable): they were never acknowledged, so nothing is lost.
        """
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while (item := self._queue.get_nowait()) is not None:
            _refuse(item, ShuttingDown(self._retry_delay))
            self._queue.done(item)
        if self._executor is not None:
            # A count already running in a thread finishes there; wait for it off the loop.
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None

    def resolve(self, wire: bytes, arrival: float = 0.0) -> tuple[int, Counted]:
        """The request's record count and its records per attribute value (and window, with
        event time), or a refusal. On the loop: counted as scanned once checked."""
        checked = self._scanner.check(wire)
        self._hot.requests_scanned += 1
        records, batch, (tokens, length) = self._resolve_checked(checked, arrival)
        if tokens or length:
            self._count_cuts(tokens, length)
        return records, batch

    def _resolve_off_loop(self, wire: bytes, arrival: float) -> Resolved:
        """resolve() in a worker thread: the loop counts it as scanned and its cuts (see
        _count), so the metrics' plain numbers are only ever changed by one thread."""
        return self._resolve_checked(self._scanner.check(wire), arrival)

    def _count_cuts(self, tokens: int, length: int) -> None:
        hot = self._hot
        hot.pattern_cut_tokens += tokens
        hot.pattern_cut_length += length

    def _resolve_checked(self, checked: CheckedRequest, arrival: float) -> Resolved:
        if checked.records > self._max_records:
            # Counting holds up to about 60 bytes per record however small the record is on the
            # wire (a record can be 2 bytes), so the record count is bounded as the size is.
            raise RequestTooLarge(
                f"request of {checked.records} log records exceeds the limit of {self._max_records}"
            )
        if checked.records == 0:
            return 0, {}, (0, 0)
        try:
            batch: Counted
            if self._several:
                batch = self._tally_keys(checked, arrival)
            elif self._event_time is not None:
                batch = self._scanner.tally_windows(checked, self.labels, arrival_ns(arrival))
            else:
                batch = self._scanner.tally(checked, self.labels)
        except Exception as error:
            raise _NotCounted(checked.records) from error
        # The cuts are complete once tallied: Python masks some bodies in the tally.
        return checked.records, batch, checked.cut_records()

    def _tally_keys(
        self, checked: CheckedRequest, arrival: float
    ) -> list[Tally] | list[WindowedTally]:
        if self._event_time is not None:
            return self._scanner.tally_windows_keys(checked, self.labels, arrival_ns(arrival))
        return self._scanner.tally_keys(checked, self.labels)

    async def _run(self) -> None:
        turn_started = 0.0
        while True:
            if not self._queue.waiting:
                turn_started = 0.0  # get() will wait, and the next request starts a turn
            item = await self._queue.get()
            started = time.perf_counter()
            turn_started = turn_started or started
            handed_on = False
            try:
                handed_on = await self._count(item)
            except Exception:
                self._fault(item)
            finally:
                self._finish(item, handed_on, started)
            if self._queue.waiting and time.perf_counter() - turn_started >= TURN_SECONDS:
                # get() would not yield while requests wait: let the handlers in, once a turn.
                await asyncio.sleep(0)
                turn_started = 0.0

    def count_at_once(self, arrival: float, wire: bytes) -> Verdict:
        """count_now without a queued item or a future, when the acknowledgement is at once
        (answers_at_once): the verdict, or raises the refusal. The straight path of a small
        request: nothing is reserved on the queue, as nothing can look at it before this
        returns (no await), and an empty queue admits any request."""
        started = time.perf_counter()
        try:
            return self._count_answered(arrival, wire)
        except ExportRefused:
            raise
        except Exception:
            # A fault in handling a fault (_failed): the sender still gets an answer.
            with contextlib.suppress(Exception):
                self._logger.error("worker_failed", bytes=len(wire), exc_info=True)
            raise CountingFailed("the request could not be counted") from None
        finally:
            self._hot.worker_duration.observe(time.perf_counter() - started)

    def _count_answered(self, arrival: float, wire: bytes) -> Verdict:
        try:
            records, batch = self.resolve(wire, arrival)
        except ExportRefused:
            raise
        except Exception as error:
            counted = error.records if isinstance(error, _NotCounted) else 0
            raise self._failed(len(wire), error, counted) from None
        if not records:
            return all_counted(0)
        try:
            if self._one_window:
                self._sink.add(arrival, cast(ResolvedBatch, batch))
                verdict = all_counted(records)
            else:
                verdict = self._hand_over(arrival, records, batch)[0]
        except Exception as error:
            raise self._failed(len(wire), error, records) from None
        self._hot.records_counted += verdict.counted
        return verdict

    def count_now(self, item: QueuedRequest) -> None:
        """Count a request of at most at_once_bytes in the caller's turn of the loop, as a worker
        would. For the Export handler when nothing is queued or in work: it saves the hand-over
        to a worker task and back (a future, two task switches), a tenth of a small request's
        CPU. The caller has reserved the item on the queue; no await, so the sender cannot leave
        half-way. Its verdict is set on return, or with --durability ack once its group is
        committed (the acknowledger then releases its place)."""
        started = time.perf_counter()
        handed_on = False
        try:
            handed_on = self._count_here(item)
        except Exception:
            self._fault(item)
        finally:
            self._finish(item, handed_on, started)

    def _fault(self, item: QueuedRequest) -> None:
        # Counting refuses what it cannot count; this is for a fault in that itself, so the
        # worker lives on and the sender still gets an answer.
        _refuse(item, CountingFailed("the request could not be counted"))
        with contextlib.suppress(Exception):
            self._logger.error("worker_failed", bytes=item.size, exc_info=True)

    def _finish(self, item: QueuedRequest, handed_on: bool, started: float) -> None:
        """A request's place is released here unless the acknowledger has it to release."""
        if not handed_on:
            self._queue.done(item)
        self._hot.worker_duration.observe(time.perf_counter() - started)

    async def _count(self, item: QueuedRequest) -> bool:
        """Count the request; True once it is handed to the acknowledger, which then answers
        it and releases its place in the queue (a window closes only after its requests are
        answered, so with --durability ack only after their counts are durable)."""
        if item.verdict.done():
            return False  # the sender gave up while it waited; it will send the request again
        if item.size <= INLINE_BYTES:
            return self._count_here(item)
        try:
            loop = asyncio.get_running_loop()
            records, batch, (tokens, length) = await loop.run_in_executor(
                self._executor, self._resolve_off_loop, item.wire, item.arrival
            )
        except ExportRefused as refusal:
            self._hot.requests_scanned += isinstance(refusal, RequestTooLarge)
            _refuse(item, refusal)
            return False
        except asyncio.CancelledError:
            _refuse(item, ShuttingDown(self._retry_delay))
            raise
        except Exception as error:
            # Checked, then its tally failed (_NotCounted): it was scanned.
            self._hot.requests_scanned += isinstance(error, _NotCounted)
            self._fail(item, error, error.records if isinstance(error, _NotCounted) else 0)
            return False
        self._hot.requests_scanned += 1
        if tokens or length:
            self._count_cuts(tokens, length)
        if item.verdict.done():
            return False  # the sender gave up while a thread counted it: it will retry
        return self._settle(item, records, batch)

    def _count_here(self, item: QueuedRequest) -> bool:
        """Resolve on the loop and settle; True once handed to the acknowledger."""
        try:
            records, batch = self.resolve(item.wire, item.arrival)
        except ExportRefused as refusal:
            _refuse(item, refusal)
            return False
        except Exception as error:
            self._fail(item, error, error.records if isinstance(error, _NotCounted) else 0)
            return False
        return self._settle(item, records, batch)

    def _settle(self, item: QueuedRequest, records: int, batch: Counted) -> bool:
        """Hand a resolved request over to the aggregator, and its answer to the acknowledger."""
        try:
            verdict, counted, stored = (
                self._hand_over(item.arrival, records, batch)
                if records
                else (all_counted(0), {}, None)
            )
        except Exception as error:
            self._fail(item, error, records)
            return False
        self._hot.records_counted += verdict.counted
        # Once counted, nothing may turn the answer into a refusal but the acknowledger's
        # failing to make it durable.
        self._acknowledger.acknowledge(
            item.verdict, verdict, counted, lambda: self._queue.done(item), stored
        )
        return True

    def _hand_over(
        self, arrival: float, records: int, batch: Counted
    ) -> tuple[Verdict, Journaled, Stored]:
        """Into the aggregator; with event time, the late records to their fate (merged into
        their stored window, or rejected). The verdict, what the aggregator counted, and what
        says when the merged late records are stored."""
        if isinstance(batch, list):
            return self._hand_over_keys(arrival, records, batch)
        key = self._keys[0]
        if not isinstance(batch, WindowedTally):
            index = self._sink.add(arrival, batch)
            return all_counted(records), {(key, index): batch}, None
        added = self._sink.add_windows(arrival, batch.windows)
        counted = {
            (key, index): tally for index, tally in batch.windows.items() if index not in added.late
        }
        verdict, stored = self._judge_late(arrival, batch, added)
        return verdict, counted, stored

    def _hand_over_keys(
        self, arrival: float, records: int, batches: list[Tally] | list[WindowedTally]
    ) -> tuple[Verdict, Journaled, Stored]:
        # The service hands a KeyedAggregator to a pool whose scanner has several keys.
        sink = cast(KeyedCountSink, self._sink)
        first = batches[0]
        if not isinstance(first, WindowedTally):
            tallies = cast(list[Tally], batches)
            index = sink.add_keys(arrival, tallies)
            return (
                Verdict(records),
                {(key, index): tally for key, tally in zip(self._keys, tallies, strict=True)},
                None,
            )
        windowed = cast(list[WindowedTally], batches)
        added = sink.add_windows_keys(arrival, [tally.windows for tally in windowed])
        counted = {
            (key, index): tally
            for key, per_key in zip(self._keys, windowed, strict=True)
            for index, tally in per_key.windows.items()
            if index not in added.late
        }
        # The records are the same under every key: their times were adjusted once.
        verdict, stored = self._judge_late(arrival, first, added)
        return verdict, counted, stored

    def _judge_late(
        self, arrival: float, batch: WindowedTally, added: Added
    ) -> tuple[Verdict, Stored]:
        if batch.future:
            self._adjusted_future.inc(batch.future)
        if batch.missing:
            self._adjusted_missing.inc(batch.missing)
        if not added.late:
            return Verdict(added.counted), None
        # Merged late records are counted as on-time ones are: handed over, in memory, to what
        # writes them to their stored window, before the sender hears they were accepted (with
        # --durability ack, only once they are written: outcome.stored).
        outcome = self._late.take(arrival, added.late, added.late_by_key)
        verdict = Verdict(added.counted + outcome.merged, outcome.rejected, outcome.message)
        return verdict, outcome.stored

    def _fail(self, item: QueuedRequest, error: Exception, records: int) -> None:
        """A fault of ours: log it, and refuse the request so its sender knows."""
        _refuse(item, self._failed(item.size, error, records))

    def _failed(self, size: int, error: Exception, records: int) -> CountingFailed:
        """Log and count a fault of ours; the refusal its sender gets."""
        self._logger.error("worker_failed", bytes=size, records=records, exc_info=error)
        self._metrics.records_failed.inc(records)
        return CountingFailed("the request could not be counted")


class _NotCounted(Exception):
    """Tallying a checked request failed; how many records it held."""

    def __init__(self, records: int) -> None:
        super().__init__(f"{records} records not counted")
        self.records = records


def _refuse(item: QueuedRequest, refusal: ExportRefused) -> None:
    if not item.verdict.done():
        item.verdict.set_exception(refusal)
