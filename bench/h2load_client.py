"""Small requests sent by h2load (nghttp2's load generator, in C), measuring the server.

bench/small_client.py is Python: at saturation it spends about as much CPU per request as the
server it measures, so on a 2-core machine it leaves one core to the server, and two serving
processes (--processes 2) share that core at half load each. h2load spends a few µs per
request, so the serving processes get the cores, as they would with their senders on other
machines. It sends one body over and over (the reference workload's first request of
`records` records; gRPC: in its 5-byte message frame) from `connections` connections with
`streams` requests in flight on each (HTTP/1.1: one); the server's CPU is read from /proc
around the measured run only, after an unmeasured warm-up run. Both runs send a number of
requests rather than run for a time (the measured one as many as the warm-up's rate fills
`seconds` with): h2load stopped by the clock does not count the requests still in flight,
which the server has counted.

h2load counts an answer with HTTP status 2xx as a success. An OTLP/HTTP refusal is a 429 or
503 and is not; an OTLP/gRPC refusal is an HTTP 200 with a grpc-status in its trailers, which
h2load does not read, so a refused gRPC request counts as acknowledged here, and the harness's
check (acknowledged records = reported records) fails: nothing refused goes unnoticed.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.proc_stats import sample_process_tree
from bench.small_client import small_requests
from otlp_stats.loadgen.driver import EXPORT_METHOD

_DONE = re.compile(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed")


def h2load_path() -> str | None:
    return shutil.which("h2load")


def grpc_frame(payload: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def h2load_argv(
    transport: str, target: str, body: Path, connections: int, streams: int, requests: int
) -> list[str]:
    if transport == "grpc":
        url = f"http://{target}{EXPORT_METHOD}"
        door = ["-H", "content-type: application/grpc", "-H", "te: trailers", "-m", str(streams)]
    else:
        url = f"http://{target}/v1/logs"
        door = ["--h1", "-H", "content-type: application/x-protobuf"]
    return [
        h2load_path() or "h2load", "-t", "1", "-c", str(connections), "-d", str(body),
        "-n", str(requests), *door, url,
    ]  # fmt: skip


def parse_succeeded(output: str) -> tuple[int, int]:
    """(succeeded, failed) requests from h2load's summary."""
    found = _DONE.search(output)
    if found is None:
        raise RuntimeError(f"h2load printed no request summary: {output[-500:]}")
    return int(found.group(1)), int(found.group(2))


def _run(argv: list[str], timeout: float) -> tuple[int, int]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"h2load exited {done.returncode}: {done.stderr[-1000:]}")
    return parse_succeeded(done.stdout)


def send_with_h2load(
    transport: str,
    target: str,
    server_pid: int,
    *,
    records: int,
    connections: int,
    streams: int,
    seconds: float,
    warmup_requests: int = 2_000,
    timeout: float = 120.0,
) -> dict[str, float]:
    """The same tally as bench/small_client.py prints, plus the client's own CPU seconds."""
    payload = small_requests(records)[0]
    with tempfile.TemporaryDirectory(prefix="otlp-bench-h2load-") as scratch:
        body = Path(scratch) / "body"
        body.write_bytes(grpc_frame(payload) if transport == "grpc" else payload)
        argv = h2load_argv(transport, target, body, connections, streams, warmup_requests)
        started = time.monotonic()
        warm, _ = _run(argv, timeout)
        rate = warm / max(time.monotonic() - started, 1e-3)
        client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = sample_process_tree(server_pid).cpu_seconds
        started = time.monotonic()
        count = max(connections * streams, round(rate * seconds))
        argv = h2load_argv(transport, target, body, connections, streams, count)
        succeeded, failed = _run(argv, timeout)
        elapsed = time.monotonic() - started
        cpu = sample_process_tree(server_pid).cpu_seconds - before
        client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    return {
        "requests": succeeded,
        "records": succeeded * records,
        "refused": failed,
        "records_all": (succeeded + warm) * records,
        "elapsed_seconds": elapsed,
        "server_cpu_seconds": cpu,
        "client_cpu_seconds": client,
    }
