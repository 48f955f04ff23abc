"""`python -m bench.store_cost`: the service's CPU per record with each state store.

Flushes happen per window, not per record, so the cost per record with `sqlite` or `redis`
should stay within 10% of `memory`. Stores are measured in interleaved rounds (memory, sqlite,
redis, memory, ...) on the same requests, and each store's median is compared with memory's,
so the drift of a shared machine falls on every store alike. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from bench.run import _clean_env, service_argv
from bench.server_run import RunSettings, measure_server
from otlp_stats.loadgen import Workload

STORES = ("memory", "sqlite", "redis")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.store_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per store")
    parser.add_argument("--duration", type=float, default=15.0, help="saturation seconds")
    parser.add_argument("--callers", type=int, default=4, help="callers at saturation")
    parser.add_argument("--window", default="2", help="window seconds (shorter: more flushes)")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is missing: make system-deps installs it")
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return process, url


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workload = Workload()
    settings = RunSettings(
        warmup_seconds=2.0,
        saturation_seconds=args.duration,
        latency_seconds=2.0,
        saturation_callers=args.callers,
        latency_callers=args.callers,
    )
    env = _clean_env()
    figures: dict[str, list[float]] = {store: [] for store in STORES}
    with tempfile.TemporaryDirectory(prefix="otlp-bench-store-") as scratch:
        directory = Path(scratch)
        redis_process, redis_url = _start_redis(directory)
        try:
            for round_number in range(args.rounds):
                for store in STORES:
                    url = {
                        "memory": "memory",
                        "sqlite": f"sqlite://{directory}/round{round_number}.db",
                        "redis": redis_url,
                    }[store]
                    extra = f"--window {args.window} --store {url} --replica-id bench"
                    run = measure_server(
                        store, service_argv(workload, extra), workload, settings,
                        cwd=directory, env=env, loadgen_cwd=directory,
                    )  # fmt: skip
                    figures[store].append(run.cpu_us_per_record)
                    print(
                        f"round {round_number + 1} {store}: {run.cpu_us_per_record:.2f} us/record,"
                        f" {run.saturation.records_per_second:,.0f} records/s",
                        flush=True,
                    )
        finally:
            redis_process.terminate()
            redis_process.wait(10)
    memory = statistics.median(figures["memory"])
    print("\n| store | CPU per record (median, us) | rounds (us) | vs memory |")
    print("|---|---:|---|---:|")
    for store in STORES:
        median = statistics.median(figures[store])
        rounds = ", ".join(f"{value:.2f}" for value in figures[store])
        print(f"| {store} | {median:.2f} | {rounds} | {median / memory - 1:+.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
