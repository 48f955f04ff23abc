"""Which asyncio event loop serves: uvloop where it is installed, asyncio's own otherwise.

A small request costs the service little beyond the event loop's own work per wake-up (the
selector call and the transport writes were most of a profile of a busy serving process);
uvloop does that work in C on libuv (BENCHMARKS.md has the figures).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopError(RuntimeError):
    """--event-loop uvloop, and uvloop cannot be imported."""


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the loop `choice` names (auto, uvloop, asyncio); auto falls back to asyncio."""
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as error:
        if choice == "uvloop":
            message = f"event_loop=uvloop, but uvloop cannot be imported: {error}"
            raise EventLoopError(message) from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop]) -> T:
    """asyncio.run on the loop `factory` makes (asyncio.Runner's loop_factory, Python 3.11+)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
