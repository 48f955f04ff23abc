"""One serving process as the supervisor sees it: started, followed, stopped, replaced."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from otlp_stats.config import Settings
from otlp_stats.processes.child import run_serving_process
from otlp_stats.processes.link import (
    Exposition,
    Message,
    Progress,
    Ready,
    Share,
    Stopped,
    read_message,
)

# Spawned, not forked: the supervisor runs an event loop, threads and open sockets that a
# forked child must not inherit half-way.
_CONTEXT = multiprocessing.get_context("spawn")


@dataclass
class Handlers:
    """What the supervisor does with what its processes say."""

    share: Callable[[Share], None]
    exposition: Callable[[int, bytes], None]


class ServingProcess:
    """The process serving in one slot, and what it said last.

    `first_open_index` is its promise: every window before it is closed and its share sent.
    Until the process says otherwise it is the window open when it was started, since a new
    aggregator opens no older one.
    """

    def __init__(self, slot: int, settings: Settings, first_open_index: int) -> None:
        self.slot = slot
        self.first_open_index = first_open_index
        self.open_windows = 0
        self.drained = False
        self.stopped = False
        # When it last said anything (metrics come every second): a process that is only behind
        # keeps talking; one that is silent past the supervisor's grace is stuck.
        self.last_heard = time.monotonic()
        self.ready: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
        ours, theirs = socket.socketpair()
        self._process: BaseProcess = _CONTEXT.Process(
            target=run_serving_process,
            args=(settings, theirs, slot),
            name=f"otlp-stats-{slot}",
            daemon=False,
        )
        self._process.start()
        theirs.close()
        self._socket = ours
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stop_requested = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def follow(self, handlers: Handlers) -> int | None:
        """Read what it says until it ends; its exit code (None if it would not end)."""
        self._reader, self._writer = await asyncio.open_connection(sock=self._socket)
        if self._stop_requested:
            self._writer.write_eof()
        while (message := await read_message(self._reader)) is not None:
            self._handle(message, handlers)
        self._writer.close()
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"serving process {self.slot} ended at start"))
            # Marked as seen: only a start awaits it; a replacement's end is logged instead.
            self.ready.exception()
        return await asyncio.get_running_loop().run_in_executor(None, self._reap)

    def _reap(self) -> int | None:
        self._process.join(timeout=10.0)
        return self._process.exitcode

    def _handle(self, message: Message, handlers: Handlers) -> None:
        self.last_heard = time.monotonic()
        match message:
            case Share():
                handlers.share(message)
            case Progress(first_open_index, open_windows):
                self.first_open_index = first_open_index
                self.open_windows = open_windows
            case Exposition(text):
                handlers.exposition(self.slot, text)
            case Ready():
                self.ready.set_result(message)
            case Stopped(drained):
                self.stopped = True
                self.drained = drained

    def request_stop(self) -> None:
        """Ask it to drain and stop: end of file on its link.

        Not SIGTERM: a process still importing has no handler yet and would die of it, where
        the end of file waits in the socket until it reads it, once serving.
        """
        self._stop_requested = True
        if self._writer is not None:
            self._writer.write_eof()

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def reload_credentials(self) -> None:
        self._signal(signal.SIGHUP)

    def _signal(self, signum: int) -> None:
        pid = self._process.pid
        if pid is None or self._process.exitcode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
