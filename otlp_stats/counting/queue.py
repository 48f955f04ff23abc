"""The bounded request queue between the Export handlers and the workers.

Bounded by request count and by bytes, counted from admission until a worker has handed the
request's counts to the aggregator, so in-work requests count against the limits too. It also
knows the arrival time of the oldest unfinished request: a window may close only once nothing
that arrived before its end is still in the queue or in a worker's hands.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

FullReason = Literal["queue_requests", "queue_bytes"]


class QueueFull(Exception):
    def __init__(self, reason: FullReason) -> None:
        super().__init__(f"request queue is full ({reason.removeprefix('queue_')})")
        self.reason: FullReason = reason


@dataclass(frozen=True)
class Verdict:
    """What became of an admitted request's records: `counted` are in their windows (and are
    what the sender is told was accepted); `rejected` were not, for the reason `message` gives
    (OTLP partial success)."""

    counted: int
    rejected: int = 0
    message: str = ""


# The verdicts of small requests counted whole, made once: a frozen dataclass costs a few calls
# to build, and small requests are the ones whose every µs shows.
_ALL_COUNTED = tuple(Verdict(counted) for counted in range(256))


def all_counted(records: int) -> Verdict:
    """The verdict of a request whose `records` were all counted."""
    return _ALL_COUNTED[records] if records < len(_ALL_COUNTED) else Verdict(records)


@dataclass(frozen=True, eq=False)
class QueuedRequest:
    """An admitted Export: its protobuf bytes, not yet checked, and the verdict its handler
    awaits (a Verdict, or the refusal), which a worker gives once it is counted."""

    arrival: float
    wire: bytes = field(repr=False)
    transport: str
    verdict: asyncio.Future[Verdict] = field(repr=False)

    @property
    def size(self) -> int:
        """What the queue's byte bound counts: the bytes it holds until a worker is done."""
        return len(self.wire)


class RequestQueue:
    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._items: asyncio.Queue[QueuedRequest] = asyncio.Queue()
        self._unfinished_requests = 0
        self._unfinished_bytes = 0
        self._arrivals: Counter[float] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def depth(self) -> int:
        """Requests admitted and not yet counted (waiting or in a worker)."""
        return self._unfinished_requests

    @property
    def depth_bytes(self) -> int:
        return self._unfinished_bytes

    @property
    def waiting(self) -> int:
        """Requests admitted and not yet taken by a worker."""
        return self._items.qsize()

    def put_nowait(self, item: QueuedRequest) -> None:
        """Admit the request or raise QueueFull; never waits.

        An empty queue admits any request, so a request larger than max_bytes (but within the
        receive limit) is slow rather than refused forever.
        """
        self.reserve(item)
        self._items.put_nowait(item)

    def reserve(self, item: QueuedRequest) -> None:
        """Admit the request against the bounds as put_nowait does, without queueing it: for a
        request its caller counts at once, and then releases with done() as a worker does."""
        self.hold(item.arrival, item.size)

    def hold(self, arrival: float, size: int) -> None:
        """reserve() by arrival and size; released with release(arrival, size)."""
        if self._unfinished_requests >= self.max_requests:
            raise QueueFull("queue_requests")
        if self._unfinished_requests and self._unfinished_bytes + size > self.max_bytes:
            raise QueueFull("queue_bytes")
        self._unfinished_requests += 1
        self._unfinished_bytes += size
        self._arrivals[arrival] += 1
        self._idle.clear()

    async def get(self) -> QueuedRequest:
        return await self._items.get()

    def get_nowait(self) -> QueuedRequest | None:
        """A waiting request, or None if none waits."""
        try:
            return self._items.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def done(self, item: QueuedRequest) -> None:
        """The item's counts are in the aggregator (or it failed); release its capacity."""
        self.release(item.arrival, item.size)

    def release(self, arrival: float, size: int) -> None:
        """done() for what hold() admitted."""
        self._unfinished_requests -= 1
        self._unfinished_bytes -= size
        self._arrivals[arrival] -= 1
        if not self._arrivals[arrival]:
            del self._arrivals[arrival]
        if not self._unfinished_requests:
            self._idle.set()

    def oldest_arrival(self) -> float | None:
        return min(self._arrivals) if self._arrivals else None

    async def wait_idle(self) -> None:
        """Return once every admitted request is done."""
        await self._idle.wait()
