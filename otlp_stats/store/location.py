"""Turns `--store` into the store it names, and the component that feeds it."""

from __future__ import annotations

import math
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otlp_stats.clock import Clock
from otlp_stats.config import Settings
from otlp_stats.counting.aggregator import Aggregator
from otlp_stats.reporting.reporter import Reporter
from otlp_stats.store.base import StateStore
from otlp_stats.store.journal import Committer, Journal, JournalEntry, SqliteJournal
from otlp_stats.store.keeper import StateKeeper
from otlp_stats.store.memory import MemoryStore
from otlp_stats.store.outbox import SqliteOutbox
from otlp_stats.store.redis import RedisStore
from otlp_stats.store.redisjournal import RedisJournal
from otlp_stats.store.replicas import TICK, ReplicaMerger
from otlp_stats.store.revisions import LateMerge, Reviser
from otlp_stats.store.sqlite import SqliteStore

SQLITE_PREFIX = "sqlite://"


def open_store(settings: Settings, read_only: bool = False) -> StateStore:
    """The store of `settings.store`; opening an SQLite file creates it and its schema, unless
    `read_only` (to query it): then a missing file raises StoreMissing.

    What a store holds from before several keys were counted is the first configured key's.
    """
    common = (settings.rollups, settings.retention, settings.window, settings.sketch_lg_k)
    first_key = settings.attribute_key
    max_patterns = settings.max_patterns
    if settings.store.startswith(SQLITE_PREFIX):
        path = Path(settings.store[len(SQLITE_PREFIX) :])
        return SqliteStore(
            path, *common, read_only=read_only, first_key=first_key, max_patterns=max_patterns
        )
    if settings.store.startswith(("redis://", "rediss://")):
        return RedisStore(settings.store, *common, first_key=first_key, max_patterns=max_patterns)
    return MemoryStore(*common, first_key=first_key, max_patterns=max_patterns)


def open_outbox(settings: Settings) -> SqliteOutbox | None:
    """The sinks' outbox: in the SQLite store's file, the only store kept on this host's disk."""
    if settings.store.startswith(SQLITE_PREFIX):
        return SqliteOutbox(Path(settings.store[len(SQLITE_PREFIX) :]))
    return None


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
    replica = settings.replica_id or socket.gethostname()
    # One process run of this replica: its shares and its late records are told apart by it.
    incarnation = secrets.token_hex(8)
    reviser = open_reviser(settings, store, reporter, f"{incarnation}:{replica}")
    if isinstance(store, RedisStore):
        keeper = ReplicaMerger(
            store,
            replica,
            clock,
            reporter.print_report,
            # Replicas close a window at its end plus the aggregator's lateness (event time),
            # so the grace for their flushes counts from then.
            settings.merge_grace + aggregator.lateness,
            settings.claim_timeout,
            settings.sketch_lg_k,
            logger,
            incarnation=incarnation,
            reviser=reviser,
            first_open_index=lambda: aggregator.first_open_index,
            committer=open_committer(settings, logger, replica),
            replay=replayer(aggregator),
            max_patterns=settings.max_patterns,
            top_patterns=settings.top_patterns,
        )
        reporter.prints_closed = False
    else:
        keeper = StateKeeper(
            store,
            aggregator,
            clock,
            settings.checkpoint_interval,
            logger,
            reviser,
            open_committer(settings, logger),
        )
    reporter.add_listener(keeper.window_closed)
    return keeper


def replayer(aggregator: Aggregator) -> Callable[[JournalEntry], int]:
    """A replica's journal entry back into its key's window; the records it adds (the first
    key's only: several keys journal the same records once per key)."""
    first = aggregator.attribute_key

    def replay(entry: JournalEntry) -> int:
        index = aggregator.index_of(entry.start)
        replayed = aggregator.replay_key(entry.attribute_key, index, entry.batch)
        if replayed and entry.attribute_key in ("", first):
            return sum(tally.records for tally in entry.batch.values())
        return 0

    return replay


def open_committer(settings: Settings, logger: Any, replica: str = "") -> Committer | None:
    """With --durability ack: the journal (in the SQLite store's file, or the `replica`'s in
    Redis), and its group commit."""
    if not settings.acks_durably:
        return None
    journal: Journal
    if settings.store.startswith(SQLITE_PREFIX):
        path = Path(settings.store[len(SQLITE_PREFIX) :])
        journal = SqliteJournal(path, settings.sqlite_synchronous)
    elif settings.store.startswith(("redis://", "rediss://")):
        journal = RedisJournal(
            settings.store, replica, settings.attribute_key, settings.sketch_lg_k
        )
    else:
        return None
    return Committer(
        journal,
        settings.window,
        settings.commit_interval,
        settings.commit_max_requests,
        settings.retry_delay,
        logger,
    )


def open_reviser(
    settings: Settings,
    store: StateStore,
    reporter: Reporter,
    incarnation: str | None = None,
    spacing: float | None = None,
    acknowledges: bool = True,
) -> Reviser | None:
    """With event time and a store that keeps closed windows: late records merged into them.

    The memory store keeps nothing across a restart and nothing another replica shares, so
    with it late records stay rejected (counting/late.py). A window's revisions are printed at
    most once per `spacing` seconds of the clock (default: a window length). `acknowledges`:
    whether senders wait for an answer (the service); replay answers no one.
    """
    if settings.window_time != "event" or not isinstance(store, SqliteStore | RedisStore):
        return None
    late = LateMerge(
        settings.window,
        settings.rollups,
        settings.retention,
        settings.max_values,
        settings.sketch_lg_k,
        incarnation,
        settings.attribute_key,
        max_patterns=settings.max_patterns,
        # --durability ack: an Export of merged late records is answered once they are stored.
        wait_stored=acknowledges and settings.acks_durably,
    )
    shared = isinstance(store, RedisStore)
    return Reviser(
        late,
        store,
        reporter.print_revision,
        spacing=settings.window if spacing is None else spacing,
        lg_k=settings.sketch_lg_k,
        top_patterns=settings.top_patterns,
        # Replicas schedule revisions for one another: look for them at every merger step.
        poll_every=TICK if shared else math.inf,
        scope="global" if shared else None,
    )
