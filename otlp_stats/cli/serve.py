"""Serving: build the settings, install signal handlers, run the service until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence

import structlog

from otlp_stats.cli.allocator import keep_freed_buffers
from otlp_stats.cli.event_loop import EventLoopError, loop_factory, run
from otlp_stats.cli.grpc_io import listener_in_use
from otlp_stats.config import ConfigError, Settings, describe, load_settings
from otlp_stats.processes.supervisor import Supervisor
from otlp_stats.receiving.auth import CredentialsError
from otlp_stats.service import Service
from otlp_stats.telemetry import configure_logging

# What can stop the service from starting, said in one log line rather than a traceback: a port
# in use or an address that cannot be bound (OSError, grpc's RuntimeError), an unreadable token
# file, a state store that cannot be opened.
_START_ERRORS = (OSError, RuntimeError, CredentialsError, sqlite3.Error)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2


def main(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> int:
    """Serve until told to stop; `parser` is the command line's (cli/main.py), if given."""
    try:
        settings = load_settings(argv, parser=parser)
    except ConfigError as error:
        print(f"otlp-stats: invalid configuration: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging(settings.log_format, settings.log_level)
    try:
        factory = loop_factory(settings.event_loop)
    except EventLoopError as error:
        print(f"otlp-stats: invalid configuration: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    malloc = keep_freed_buffers()  # before the first request-sized buffer is allocated
    return run(serve(settings, malloc), factory)


async def serve(settings: Settings, malloc: str) -> int:
    log = structlog.get_logger("otlp_stats")
    log.info("starting", **describe(settings), malloc=malloc, grpc_listener=listener_in_use())
    stop_requested = asyncio.Event()
    _install_signal_handlers(stop_requested)
    try:
        # --processes 1 is the one process of old, with no supervisor in between.
        service = Supervisor(settings) if settings.processes > 1 else Service(settings)
    except _START_ERRORS as error:
        log.error("start_failed", error=str(error), kind=type(error).__name__)
        return EXIT_FAILED
    _install_reload_handler(service)
    try:
        await service.start()
    except _START_ERRORS as error:
        log.error("start_failed", error=str(error), kind=type(error).__name__)
        await service.stop()
        return EXIT_FAILED
    await stop_requested.wait()
    log.info("shutdown_requested")
    drained = await service.stop()
    return EXIT_OK if drained else EXIT_FAILED


def _install_signal_handlers(stop_requested: asyncio.Event) -> None:
    """First SIGTERM/SIGINT asks for a graceful stop; a second one exits at once."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop_requested.is_set():
            structlog.get_logger("otlp_stats").warning("forced_exit", signal=signum)
            os._exit(128 + signum)
        stop_requested.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def _install_reload_handler(service: Service | Supervisor) -> None:
    """SIGHUP re-reads the token file, so a token is rotated without a restart."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, service.reload_credentials)
