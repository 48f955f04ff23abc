"""Turns `--store` into the store it names, and the component that feeds it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from otlp_stats.clock import Clock
from otlp_stats.config import Settings
from otlp_stats.counting.aggregator import Aggregator
from otlp_stats.reporting.reporter import Reporter
from otlp_stats.store.base import StateStore
from otlp_stats.store.keeper import StateKeeper
from otlp_stats.store.memory import MemoryStore
from otlp_stats.store.redis import RedisStore
from otlp_stats.store.replicas import ReplicaMerger
from otlp_stats.store.sqlite import SqliteStore

SQLITE_PREFIX = "sqlite://"


def open_store(settings: Settings, read_only: bool = False) -> StateStore:
    """The store of `settings.store`; opening an SQLite file creates it and its schema, unless
    `read_only` (to query it): then a missing file raises StoreMissing."""
    common = (settings.rollups, settings.retention, settings.window, settings.sketch_lg_k)
    if settings.store.startswith(SQLITE_PREFIX):
        path = Path(settings.store[len(SQLITE_PREFIX) :])
        return SqliteStore(path, *common, read_only=read_only)
    if settings.store.startswith("redis://"):
        return RedisStore(settings.store, *common)
    return MemoryStore(*common)


def open_keeper(
    settings: Settings,
    store: StateStore,
    aggregator: Aggregator,
    reporter: Reporter,
    clock: Clock,
    logger: Any,
) -> StateKeeper | ReplicaMerger:
    """The store's writer, told of every window the reporter closes.

    With Redis the merger prints the one global report of each window, so the reporter stops
    printing closed windows itself (it still prints the partial ones at shutdown).
    """
    keeper: StateKeeper | ReplicaMerger
    if isinstance(store, RedisStore):
        keeper = ReplicaMerger(
            store,
            settings.replica_id or socket.gethostname(),
            clock,
            reporter.print_report,
            # Replicas close a window at its end plus the aggregator's lateness (event time),
            # so the grace for their flushes counts from then.
            settings.merge_grace + aggregator.lateness,
            settings.claim_timeout,
            settings.sketch_lg_k,
            logger,
        )
        reporter.prints_closed = False
    else:
        keeper = StateKeeper(store, aggregator, clock, settings.checkpoint_interval, logger)
    reporter.add_listener(keeper.window_closed)
    return keeper
