"""`python -m bench.store_patterns`: what keeping patterns costs a store, per window saved.

Saves the same closed windows (one key, `--values` values of `--records` distinct messages
each) into a fresh store with the default rollups (1d, 1mo), once with each value's pattern
table (`--patterns` patterns, ~50-byte patterns and ~70-byte examples) and once without, in
interleaved rounds, and prints the CPU per window of each. CPU is this process's (SQLite runs
in it); with `--redis URL`, Redis's own CPU is added, read from /proc by the server's pid.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import redis

from bench.proc_stats import sample_process_tree
from otlp_stats.counting.aggregator import Aggregator, LabelTally, WindowSnapshot
from otlp_stats.patterns.tally import PatternCount
from otlp_stats.store.base import StateStore
from otlp_stats.store.periods import parse_retention
from otlp_stats.store.redis import RedisStore
from otlp_stats.store.sqlite import SqliteStore

WINDOW = 60.0
ROLLUPS = ("1d", "1mo")
RETENTION = parse_retention("window=400d,1d=400d,1mo=24mo")
T0 = 1_795_000_000.0 // 86_400 * 86_400


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.store_patterns", description=__doc__)
    parser.add_argument("--windows", type=int, default=60, help="windows saved per round")
    parser.add_argument("--values", type=int, default=50, help="attribute values per window")
    parser.add_argument("--records", type=int, default=200, help="distinct messages per value")
    parser.add_argument("--patterns", type=int, default=20, help="patterns per value")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--redis", help="also a Redis store at this URL (its db is flushed)")
    return parser.parse_args(argv)


def windows(args: argparse.Namespace, with_patterns: bool) -> list[WindowSnapshot]:
    built = []
    for index in range(args.windows):
        start = T0 + index * WINDOW
        aggregator = Aggregator(WINDOW, start, keep_sketches=True, max_values=args.values)
        batch: dict[str | None, LabelTally] = {
            f"service-{value}": LabelTally.of_hashes(
                [hash((index, value, n)) for n in range(args.records)]
            )
            for value in range(args.values)
        }
        aggregator.add(start + 1, batch)
        [report] = aggregator.close_until(start + WINDOW)
        assert report.snapshot is not None
        tallies = report.snapshot.tallies
        if with_patterns:
            tallies = tuple(replace(t, patterns=table(args, index)) for t in tallies)
        built.append(replace(report.snapshot, tallies=tallies))
    return built


def table(args: argparse.Namespace, window: int) -> tuple[PatternCount, ...]:
    """Most patterns recur in every window, a tenth are new in each (a day's table grows)."""
    counts = []
    for n in range(args.patterns):
        kind = n if n % 10 else f"{n}-{window}"
        pattern = f"request {kind} handled by worker <*> in <*>ms status <*>"
        example = f"request {kind} handled by worker 17 in {window % 97}ms status 200 ok"
        counts.append(PatternCount(pattern, 1 + n, example))
    return tuple(counts)


def cpu_per_window(store: StateStore, saved: list[WindowSnapshot], server_pid: int | None) -> float:
    before, server_before = time.process_time(), _server_cpu(server_pid)
    for snapshot in saved:
        store.commit([snapshot], None, T0)
    spent = time.process_time() - before + _server_cpu(server_pid) - server_before
    store.close()
    return spent / len(saved)


def _server_cpu(pid: int | None) -> float:
    return 0.0 if pid is None else sample_process_tree(pid).cpu_seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    inputs = {"with": windows(args, True), "without": windows(args, False)}
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="otlp-bench-patterns-") as scratch:
        stores: dict[str, tuple[Callable[[str], StateStore], int | None]] = {
            "sqlite": (
                lambda name: SqliteStore(
                    Path(scratch) / f"{name}.db", ROLLUPS, RETENTION, WINDOW, first_key="k"
                ),
                None,
            )
        }
        if args.redis:
            client = redis.Redis.from_url(args.redis)
            pid = int(client.info("server")["process_id"])

            def fresh_redis(_: str) -> StateStore:
                client.flushdb()
                return RedisStore(args.redis, ROLLUPS, RETENTION, WINDOW, first_key="k")

            stores["redis"] = (fresh_redis, pid)
        for round_number in range(args.rounds):
            for name, (open_store, server_pid) in stores.items():
                for kind, saved in inputs.items():
                    store = open_store(f"{name}-{kind}-{round_number}")
                    cpu = cpu_per_window(store, saved, server_pid)
                    figures.setdefault((name, kind), []).append(cpu)
    print(
        f"\n{args.windows} windows x {args.values} values x {args.records} messages, "
        f"{args.patterns} patterns per value; rollups {', '.join(ROLLUPS)}\n"
    )
    print("| store | CPU per window without patterns (ms) | with (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for name in stores:
        without = statistics.median(figures[name, "without"]) * 1000
        with_ = statistics.median(figures[name, "with"]) * 1000
        print(f"| {name} | {without:.2f} | {with_:.2f} | {with_ / without:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
