"""Where the CPU of `--processes N` goes: the supervisor against its serving processes.

Starts the service with --processes 1, then with each N given, drives it with
bench/small_client.py (10-record requests, gRPC over 8 connections or OTLP/HTTP, 32 callers) and
reads each process's CPU time from /proc around the run: the supervisor's share is what the
design costs per request; the rest is what the serving processes spend.

With --rate R every server is offered R requests per second, and one process is also measured
at R / N, the share each of N serving processes gets: if a serving process costs what one
process costs at the same load, N processes at R cost what one process costs at R / N, and what
N processes add at equal load is only that each one batches fewer requests per wake-up.

Run alone: python -m bench.processes_breakdown --processes 2 --duration 5
           python -m bench.processes_breakdown --rate 3000 --transport http --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.proc_stats import _descendants, _stat_fields
from bench.server_process import ServerProcess

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    stat = _stat_fields(pid)
    return (int(stat[11]) + int(stat[12])) / _TICKS if stat else 0.0


def measure(
    processes: int, seconds: float, cwd: Path, rate: float = 0.0, transport: str = "grpc"
) -> list[str]:
    from bench.run import _clean_env, service_argv
    from otlp_stats.loadgen import Workload

    argv = [*service_argv(Workload(), ""), "--http-listen", "127.0.0.1:0"]
    argv += ["--processes", str(processes)]
    with ServerProcess(f"processes={processes}", argv, cwd=cwd, env=_clean_env()) as server:
        server.start()
        pids = [server.pid, *_descendants(server.pid)]
        roles = {pid: _role(pid) for pid in pids}
        before = {pid: _cpu_seconds(pid) for pid in pids}
        port = server.grpc_port if transport == "grpc" else server.http_port
        client = [
            sys.executable, "-m", "bench.small_client", f"--transport={transport}",
            f"--target=127.0.0.1:{port}", f"--server-pid={server.pid}",
            "--records=10", "--callers=32", "--connections=8", f"--duration={seconds}",
            f"--rate={rate}",
        ]  # fmt: skip
        done = subprocess.run(client, capture_output=True, text=True, check=True)
        tally = json.loads(done.stdout.strip().splitlines()[-1])
        spent = {pid: _cpu_seconds(pid) - before[pid] for pid in pids}
        server.stop()
    # CPU was read around the warm-up too: per request of both.
    requests = int(tally["records_all"]) // 10
    paced = f" at {rate:,.0f} requests/s" if rate else ""
    lines = [
        f"- --processes {processes}{paced}: {requests:,} requests, "
        f"{sum(spent.values()) / requests * 1e6:.0f} µs of CPU per request in all"
    ]
    for pid in pids:
        role = "supervisor" if pid == server.pid and processes > 1 else roles[pid]
        lines.append(
            f"  - {role} {pid}: {spent[pid]:.2f} s, {spent[pid] / requests * 1e6:.1f} µs/request"
        )
    return lines


def _role(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "process"
    # multiprocessing's resource tracker, started with the first spawned process: idle.
    return "resource tracker" if b"resource_tracker" in command else "serving process"


def plan_runs(processes: Sequence[int], rate: float) -> list[tuple[int, float]]:
    """(processes, requests/s) of each measurement in a round: one process, then each N; when
    paced, one process again at each N's share of the rate."""
    runs = [(count, rate) for count in [1, *processes]]
    if rate:
        runs += [(1, rate / count) for count in dict.fromkeys(processes) if count > 1]
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.processes_breakdown", description=__doc__
    )
    parser.add_argument("--processes", type=int, action="append", default=[])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s (0: saturation)")
    parser.add_argument("--transport", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    runs = plan_runs(args.processes or [2], args.rate)
    with tempfile.TemporaryDirectory(prefix="otlp-bench-processes-") as scratch:
        for _ in range(max(1, args.rounds)):
            for processes, rate in runs:
                lines = measure(processes, args.duration, Path(scratch), rate, args.transport)
                print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
