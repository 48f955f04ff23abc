"""One serving process: the service's receivers, queue, workers and aggregator, its closed
windows and progress sent to the supervisor instead of printed.

`run_serving_process` is the process's entry point (multiprocessing spawn), so it alone of
this stage installs signal handlers: SIGTERM drains, SIGHUP re-reads the token file, SIGINT is
left to the supervisor (a terminal's ^C reaches the whole process group; the supervisor then
stops every process in order). The supervisor itself asks for a stop by closing its side of
the link, which also stops the process when the supervisor dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from typing import Any, TextIO

import structlog
from prometheus_client import generate_latest

from otlp_stats.cli.allocator import keep_freed_buffers
from otlp_stats.cli.event_loop import loop_factory, run
from otlp_stats.config import Settings
from otlp_stats.counting.aggregator import WindowReport
from otlp_stats.processes.link import Exposition, Message, Progress, Ready, Share, Stopped, encode
from otlp_stats.service import Service
from otlp_stats.telemetry import configure_logging

# How often the supervisor hears which windows are closed: it prints a window once every
# process has closed it, so this bounds how much later than one process it prints.
PROGRESS_EVERY = 0.1
# Metrics change continuously; a scrape sees them at most this old.
METRICS_EVERY = 1.0

EXIT_OK = 0
EXIT_FAILED = 1


def run_serving_process(settings: Settings, link: socket.socket, index: int) -> None:
    """Serve until SIGTERM or until the supervisor is gone; exit with the drain's outcome."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_format, settings.log_level)
    keep_freed_buffers()
    structlog.contextvars.bind_contextvars(process=index)
    # Its reports go to the supervisor; only a partial one at shutdown would reach stdout.
    with open(os.devnull, "w") as discard:
        # The supervisor checked at start that the loop can be made (cli/serve.py).
        factory = loop_factory(settings.event_loop)
        sys.exit(run(serve_process(settings, link, discard), factory))


async def serve_process(settings: Settings, link: socket.socket, discard: TextIO) -> int:
    log: Any = structlog.get_logger("otlp_stats")
    reader, writer = await asyncio.open_connection(sock=link)
    service = Service(settings, out=discard, serving_process=True)
    service.reporter.add_listener(lambda report: _send_share(writer, report))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, service.reload_credentials)
    try:
        await service.start()
    except (OSError, RuntimeError) as error:
        log.error("start_failed", error=str(error), kind=type(error).__name__)
        await service.stop()
        return EXIT_FAILED
    _send(writer, Ready(os.getpid(), service.grpc_port, service.otlp_http.port))
    running = [
        asyncio.create_task(_progress_loop(writer, service), name="progress"),
        asyncio.create_task(_metrics_loop(writer, service), name="metrics"),
        asyncio.create_task(_watch_supervisor(reader), name="supervisor-watch"),
    ]
    for task in running:
        # Whichever ends (the supervisor gone, the link broken) ends the serving.
        task.add_done_callback(lambda _: stop.set())
    await stop.wait()
    # No more progress from here: the supervisor must not take the windows this process
    # closes while stopping (the partial one) for complete ones.
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    drained = await service.stop()
    _send(writer, Exposition(generate_latest(service.registry)))
    _send(writer, Stopped(drained))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()
    return EXIT_OK if drained else EXIT_FAILED


def _send(writer: asyncio.StreamWriter, message: Message) -> None:
    # Buffered by the transport, never awaited here: the reporter's listeners are synchronous.
    writer.write(encode(message))


def _send_share(writer: asyncio.StreamWriter, report: WindowReport) -> None:
    # An empty window needs no share: the supervisor reports empty windows by itself.
    if report.snapshot is not None and report.snapshot.tallies:
        _send(writer, Share(report.snapshot))


async def _progress_loop(writer: asyncio.StreamWriter, service: Service) -> None:
    aggregator = service.aggregator
    said: Progress | None = None
    while True:
        # Read between the reporter's steps (one event loop): every window before this
        # index has been closed and its share written above. Said only when it changes (once
        # a window, or so): an idle process costs the supervisor nothing.
        progress = Progress(aggregator.first_open_index, aggregator.open_windows)
        if progress != said:
            _send(writer, progress)
            await writer.drain()
            said = progress
        await asyncio.sleep(PROGRESS_EVERY)


async def _metrics_loop(writer: asyncio.StreamWriter, service: Service) -> None:
    while True:
        _send(writer, Exposition(generate_latest(service.registry)))
        # Bounded: a supervisor that stops reading holds this loop, not a growing buffer.
        await writer.drain()
        await asyncio.sleep(METRICS_EVERY)


async def _watch_supervisor(reader: asyncio.StreamReader) -> None:
    """The supervisor never writes: end of file means it is gone, and this process stops."""
    await reader.read()
