"""A start that fails leaves what is stored as it was, and says why in one line."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

from otlp_stats.cli.serve import EXIT_FAILED, serve
from otlp_stats.config import ListenAddress, Settings
from otlp_stats.counting.aggregator import Aggregator, LabelTally
from otlp_stats.store.location import open_store

LOOPBACK_ANY_PORT = ListenAddress("127.0.0.1", 0)


async def test_failed_start_keeps_the_stored_open_window(tmp_path: Path) -> None:
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'state.db'}",
        window=3600,
        grpc_listen=LOOPBACK_ANY_PORT,
        http_listen=LOOPBACK_ANY_PORT,
        admin_listen=LOOPBACK_ANY_PORT,
    )
    store = open_store(settings)
    aggregator = Aggregator(3600, time.time(), keep_sketches=True)
    aggregator.add(time.time(), {"checkout": LabelTally.of_hashes([1, 2, 3])})
    store.commit([], aggregator.snapshot(), time.time())
    store.close()

    with socket.socket() as taken:  # the admin port is in use: the start fails
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = ListenAddress("127.0.0.1", taken.getsockname()[1])
        assert await serve(dataclasses.replace(settings, admin_listen=busy), "tuned") == EXIT_FAILED

    store = open_store(settings)
    try:
        assert [window.records for window in store.load_open()] == [3]
    finally:
        store.close()
