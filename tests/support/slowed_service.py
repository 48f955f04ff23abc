"""`python -m tests.support.slowed_service SECONDS [flags]`: the real service with slowed workers.

A worker waits SECONDS before it takes each request from the queue (the request keeps its place
in the queue meanwhile), so a tiny queue fills up on demand and throttling tests do not depend on
how fast this machine happens to be. The wait comes before the take, so a worker cancelled while
it waits (a shutdown) holds no request that would then go unanswered.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from otlp_stats.cli.serve import main
from otlp_stats.counting.queue import QueuedRequest, RequestQueue

Get = Callable[[RequestQueue], Awaitable[QueuedRequest]]


def slowed_get(seconds: float, get: Get) -> Get:
    async def get_slowly(queue: RequestQueue) -> QueuedRequest:
        await asyncio.sleep(seconds)  # an await, so Export handlers keep answering meanwhile
        return await get(queue)

    return get_slowly


if __name__ == "__main__":
    # setattr, because mypy (rightly) refuses a plain assignment that replaces a method.
    setattr(RequestQueue, "get", slowed_get(float(sys.argv[1]), RequestQueue.get))  # noqa: B010
    sys.exit(main(sys.argv[2:]))
