"""Instructions per small OTLP/gRPC request (callgrind): a yardstick shared cores do not move.

CPU time per request (bench/small_requests.py) varies by 20-40% from round to round when other
work shares the two cores; user-space instructions do not. Each server runs under `valgrind
--tool=callgrind --instr-atstart=no` (about 50 times slower, so a few hundred requests), gets
5 s of warm-up from bench/small_client.py (32 callers), then is instrumented for `--duration`
seconds idle and as long under load (`callgrind_control -i on`, `-d` after each). A request's
instructions: (loaded - idle for as long) / requests. Kernel time (system calls) and cache
misses are not in the figure; compare servers, not against CPU time. Unpaced, the figure
also moves by about 5% between runs of one build (how many requests a wake-up batches);
`--rate 40` answers each request alone, so batching does not set it, yet runs of one build
still differed by up to 5% here (BENCHMARKS.md, "grpc core's per-call options"): compare
differences larger than that, over several runs.

    python -m bench.small_instructions --records 1 --only service --only bare
    python -m bench.small_instructions --also before=/tmp/old   # another build's PYTHONPATH
    python -m bench.small_instructions --records 1 --rate 40 --duration 10 --also before=/tmp/old

Servers start from a scratch directory, so PYTHONPATH picks the build (not the working directory).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE = [
    "-m", "otlp_stats", "--grpc-listen", "127.0.0.1:{port}", "--http-listen", "127.0.0.1:0",
    "--admin-listen", "127.0.0.1:0", "--log-format", "json", "--report-format", "json",
    "--window", "2", "--attribute-key", "service.name",
]  # fmt: skip
BASELINE = ["-m", "bench.baseline_server", "--listen", "127.0.0.1:{port}"]
BASELINE += ["--attribute-key", "service.name"]
SERVERS = {
    "service": SERVICE,
    "baseline": BASELINE,
    "bare": [*BASELINE, "--transport-only", "--records-per-request", "0"],
}
WARMUP_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:.0f} s")


def total_instructions(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def drive(port: int, pid: int, records: int, seconds: float, rate: float = 0.0) -> int:
    """Requests acknowledged by `seconds` of 32 callers (bench/small_client.py), paced at `rate`
    requests/s in all (0: as fast as the server answers)."""
    argv = [
        sys.executable, "-m", "bench.small_client", "--transport", "grpc",
        "--target", f"127.0.0.1:{port}", "--server-pid", str(pid), "--records", str(records),
        "--callers", "32", "--warmup", "0", "--duration", str(seconds), "--rate", str(rate),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True)
    requests: int = json.loads(done.stdout)["requests"]
    return requests


def callgrind_control(pid: int, *flags: str) -> None:
    subprocess.run(["callgrind_control", *flags, str(pid)], check=True, capture_output=True)


def measure(
    argv: Sequence[str], pythonpath: str, records: int, seconds: float, rate: float = 0.0
) -> float:
    """Instructions per request of one server, idle instructions subtracted."""
    with tempfile.TemporaryDirectory(prefix="otlp-bench-callgrind-") as scratch:
        port = free_port()
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={scratch}/cg.%p", sys.executable,
            *(arg.format(port=port) for arg in argv),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": pythonpath}
        server = subprocess.Popen(
            command, cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(port, 120)
            drive(port, server.pid, records, WARMUP_SECONDS)
            callgrind_control(server.pid, "-i", "on")
            started = time.monotonic()
            time.sleep(seconds)
            callgrind_control(server.pid, "-d")  # dump 1: idle
            idle_seconds = time.monotonic() - started
            started = time.monotonic()
            requests = drive(port, server.pid, records, seconds, rate)
            callgrind_control(server.pid, "-d")  # dump 2: loaded
            loaded_seconds = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(60)
        dumps = sorted(Path(scratch).glob("cg.*.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        idle, loaded = (total_instructions(dump) for dump in dumps[:2])
    return (loaded - idle * loaded_seconds / idle_seconds) / requests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.small_instructions", description=__doc__)
    parser.add_argument("--records", type=int, action="append", help="records per request")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds idle, then loaded")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests/s while measured (0: unpaced); a low rate answers each request alone, "
        "so how many a wake-up batches does not move the figure",
    )
    parser.add_argument("--only", choices=SERVERS, action="append", help="measure only these")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=PYTHONPATH",
        help="the service from another build, e.g. a checkout of main with its built extensions",
    )
    args = parser.parse_args(argv)
    servers = {name: (SERVERS[name], str(ROOT)) for name in args.only or SERVERS}
    for also in args.also:
        name, _, path = also.partition("=")
        if not re.fullmatch(r"[\w.=-]+", name) or not path:
            parser.error(f"--also wants NAME=PYTHONPATH, got {also!r}")
        servers[name] = (SERVICE, path)
    for records in args.records or [1, 10]:
        for name, (server_argv, pythonpath) in servers.items():
            per_request = measure(server_argv, pythonpath, records, args.duration, args.rate)
            print(f"{records} record(s), {name}: {per_request / 1000:.0f}k instructions/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
