"""`python -m tests.support.slowed_service SECONDS [flags]`: the real service with slowed workers.

Tests start it with `running_slowed_service`.

A worker waits SECONDS before it takes each request from the queue (the request keeps its place
in the queue meanwhile), so a tiny queue fills up on demand and throttling tests do not depend on
how fast this machine happens to be. The wait comes before the take, so a worker cancelled while
it waits (a shutdown) holds no request that would then go unanswered.

The handlers' own count of a small request when nothing is queued or in work is turned off:
it would answer every request before the slowed worker could hold one, and the point here is
a worker that falls behind.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager

from otlp_stats.cli.serve import main
from otlp_stats.counting.queue import QueuedRequest, RequestQueue
from otlp_stats.counting.workers import WorkerPool
from tests.support.servicetools import ONE_WINDOW, ServiceProcess, running_service

Get = Callable[[RequestQueue], Awaitable[QueuedRequest]]


def slowed_get(seconds: float, get: Get) -> Get:
    async def get_slowly(queue: RequestQueue) -> QueuedRequest:
        await asyncio.sleep(seconds)  # an await, so Export handlers keep answering meanwhile
        return await get(queue)

    return get_slowly


def running_slowed_service(
    hold_seconds: float, *flags: str, queue_size: int | None = None
) -> AbstractContextManager[ServiceProcess]:
    """`running_service` with one worker holding each request `hold_seconds`, in one window.

    A small `queue_size` makes the queue refuse on demand; `flags` come last and so win.
    """
    queue = () if queue_size is None else (f"--queue-size={queue_size}",)
    return running_service(
        f"--window={ONE_WINDOW}",
        "--workers=1",
        *queue,
        *flags,
        entry=("-m", "tests.support.slowed_service", str(hold_seconds)),
    )


if __name__ == "__main__":
    # setattr, because mypy (rightly) refuses a plain assignment that replaces a method.
    setattr(RequestQueue, "get", slowed_get(float(sys.argv[1]), RequestQueue.get))  # noqa: B010
    setattr(WorkerPool, "at_once_bytes", -1)  # noqa: B010
    sys.exit(main(sys.argv[2:]))
