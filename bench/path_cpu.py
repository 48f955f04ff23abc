"""The thread CPU of a server's own per-request path, in the server under load and warm in a loop.

The service's path is `Intake.accept` (admission, scan, tally, aggregator, acknowledgement,
metrics); the plain baseline's is its protobuf decode and its count. In the server, each call is
timed with `time.thread_time_ns()` (CPU of the calling thread, so neither preemption nor the
other threads are in it), under bench/small_client.py's 32 callers over OTLP/gRPC (unpaced, or
`--rate`); warm, the same code is called on the same requests in a tight loop in this process.
Their ratio is how much colder the path runs between requests in a busy server than in a loop:
instructions per request (bench/small_instructions.py) cannot show it.

    python -m bench.path_cpu --rounds 3
    python -m bench.path_cpu --rate 1000 --records 10

The servers run under this module's `wrap` entry point (`python -m bench.path_cpu wrap
service|baseline OUT -- ARGS...`), which installs the timers and writes OUT at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import io
import json
import runpy
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.server_process import ServerProcess

WARM_CALLS = 20_000


class PathTimer:
    """Calls and thread-CPU nanoseconds per named part of the path."""

    def __init__(self) -> None:
        self.parts: dict[str, list[int]] = {}

    def add(self, part: str, nanoseconds: int) -> None:
        tally = self.parts.setdefault(part, [0, 0])
        tally[0] += 1
        tally[1] += nanoseconds

    def per_call_us(self) -> dict[str, tuple[int, float]]:
        return {part: (n, ns / n / 1000 if n else 0.0) for part, (n, ns) in self.parts.items()}


def _timed_sync(timer: PathTimer, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return function(*args)
        finally:
            timer.add(part, time.thread_time_ns() - started)

    return timed


def _wrap_service(timer: PathTimer) -> None:
    from otlp_stats.receiving import intake

    accept = intake.Intake.accept

    async def timed(self: Any, payload: bytes, transport: str, decoder: Any = None) -> Any:
        # A request that waits for a worker would count the worker's CPU too: the at-once
        # count (every small request that finds the queue empty) does not wait.
        started = time.thread_time_ns()
        try:
            return await accept(self, payload, transport, decoder)
        finally:
            timer.add("Intake.accept", time.thread_time_ns() - started)

    intake.Intake.accept = timed  # type: ignore[method-assign]


def _wrap_baseline(timer: PathTimer) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from bench import baseline_server

    real = ExportLogsServiceRequest

    class TimedRequest:
        FromString = staticmethod(_timed_sync(timer, "decode", real.FromString))

    # serve() reads the deserializer from the module when it builds its handler.
    setattr(baseline_server, "ExportLogsServiceRequest", TimedRequest)  # noqa: B010
    counter = baseline_server.BaselineCounter
    counter.count = _timed_sync(timer, "count", counter.count)  # type: ignore[method-assign]


def wrap(server: str, out: Path, argv: Sequence[str]) -> None:
    """Run `server` (its module's main) with its path timed; write the timings to `out`."""
    timer = PathTimer()
    (_wrap_service if server == "service" else _wrap_baseline)(timer)
    atexit.register(lambda: out.write_text(json.dumps(timer.per_call_us())))
    if server == "baseline":
        # Its main, not the module run again as __main__: that copy would not be timed.
        from bench import baseline_server

        sys.exit(baseline_server.main(argv))
    sys.argv = ["otlp_stats", *argv]
    runpy.run_module("otlp_stats", run_name="__main__", alter_sys=True)


def warm_service_us(payloads: Sequence[bytes]) -> float:
    """Intake.accept on a started in-process service, the path alone, in a loop."""
    from otlp_stats.config import ListenAddress, Settings
    from otlp_stats.service import Service

    async def run() -> float:
        any_port = ListenAddress("127.0.0.1", 0)
        settings = Settings(
            grpc_listen=any_port,
            http_listen=any_port,
            admin_listen=any_port,
            window=2,
            attribute_keys=("service.name",),
        )
        service = Service(settings, out=io.StringIO())
        await service.start()
        try:
            for n in range(WARM_CALLS // 10):
                await service.intake.accept(payloads[n % len(payloads)], "grpc")
            started = time.process_time()
            for n in range(WARM_CALLS):
                await service.intake.accept(payloads[n % len(payloads)], "grpc")
            return (time.process_time() - started) / WARM_CALLS * 1e6
        finally:
            await service.stop()

    return asyncio.run(run())


def warm_baseline_us(payloads: Sequence[bytes]) -> float:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from bench.baseline_server import BaselineCounter

    counter = BaselineCounter("service.name")
    started = time.process_time()
    for n in range(WARM_CALLS):
        counter.count(ExportLogsServiceRequest.FromString(payloads[n % len(payloads)]))
    return (time.process_time() - started) / WARM_CALLS * 1e6


def measure(server: str, args: argparse.Namespace, scratch: Path) -> str:
    from bench.run import _clean_env, baseline_argv, service_argv
    from otlp_stats.loadgen import Workload

    workload = Workload()
    argv = service_argv(workload, "") if server == "service" else baseline_argv(workload)
    out = scratch / f"{server}.json"
    # argv: python -m MODULE ARGS...; run ARGS under the wrapper instead.
    wrapped = [sys.executable, "-m", "bench.path_cpu", "wrap", server, str(out), "--", *argv[3:]]
    env = _clean_env()
    server_argv = [*wrapped, "--http-listen", "127.0.0.1:0"]
    with ServerProcess(server, server_argv, cwd=scratch, env=env) as running:
        running.start()
        client_argv = [
            sys.executable, "-m", "bench.small_client", "--transport=grpc",
            f"--target=127.0.0.1:{running.grpc_port}", f"--server-pid={running.pid}",
            f"--records={args.records}", "--callers=32", f"--rate={args.rate}",
            f"--duration={args.duration}",
        ]  # fmt: skip
        client = subprocess.run(
            client_argv, cwd=scratch, env=env, capture_output=True, text=True, check=True
        )
        running.stop()
    tally = json.loads(client.stdout.strip().splitlines()[-1])
    parts: dict[str, list[float]] = json.loads(out.read_text())
    path = sum(us for _, us in parts.values())
    detail = ", ".join(f"{part} {us:.1f}" for part, (_, us) in parts.items())
    rate = tally["requests"] / tally["elapsed_seconds"]
    total = tally["server_cpu_seconds"] / tally["requests"] * 1e6
    return (
        f"{server}: {rate:,.0f} requests/s, server CPU {total:.0f} µs per request, "
        f"its path {path:.1f} µs ({detail})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["wrap"]:
        server, out, separator, *rest = arguments[1:]
        assert separator == "--" and server in ("service", "baseline")
        wrap(server, Path(out), rest)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.path_cpu", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per server")
    parser.add_argument("--records", type=int, default=1, help="records per request")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s (0: unpaced)")
    args = parser.parse_args(arguments)

    from bench.small_client import small_requests

    payloads = small_requests(args.records)
    print(
        f"warm, in a loop: service {warm_service_us(payloads):.1f} µs, "
        f"baseline {warm_baseline_us(payloads):.1f} µs per request",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="otlp-bench-path-") as scratch:
        for _ in range(max(1, args.rounds)):
            for server in ("service", "baseline"):
                print(measure(server, args, Path(scratch)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
