"""The supervisor's promise: which serving processes hold a window back (no process spawned)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from types import SimpleNamespace

from otlp_stats.config import load_settings
from otlp_stats.processes.supervisor import STRAGGLER_GRACE, Supervisor
from tests.support.fakes import FakeClock

WINDOW = 10.0


def supervisor(tmp_path: Path, now: float) -> Supervisor:
    settings = load_settings(
        ["--processes", "2", "--window", str(WINDOW)], environ={}, cwd=tmp_path
    )
    return Supervisor(settings, clock=FakeClock(now), out=io.StringIO())


def serving(first_open_index: int, silent_for: float) -> SimpleNamespace:
    return SimpleNamespace(
        first_open_index=first_open_index, last_heard=time.monotonic() - silent_for
    )


async def test_a_process_that_is_behind_but_talking_holds_the_window_back(tmp_path: Path) -> None:
    now = 1_000_000.0
    boss = supervisor(tmp_path, now)
    behind = boss.aggregator.index_of(now - 60)  # a minute of backlog
    boss.processes = {0: serving(boss.aggregator.index_of(now), 0.0), 1: serving(behind, 1.0)}  # type: ignore[dict-item]
    # Its records were acknowledged once counted: the window waits for its share.
    assert boss._promised() == boss.aggregator.window_bounds(behind)[0]


async def test_a_silent_process_is_passed_over_after_the_grace(tmp_path: Path) -> None:
    now = 1_000_000.0
    boss = supervisor(tmp_path, now)
    current = boss.aggregator.index_of(now)
    stuck = serving(boss.aggregator.index_of(now - 60), STRAGGLER_GRACE + 1)
    boss.processes = {0: serving(current, 0.0), 1: stuck}  # type: ignore[dict-item]
    assert boss._promised() == boss.aggregator.window_bounds(current)[0]
