"""A load generator of small requests over OTLP/gRPC or OTLP/HTTP protobuf, measuring the server.

Pre-builds 32 requests of `--records` records (the reference workload's records, one resource)
before any clock starts, then sends them round-robin from `--callers` concurrent callers, as
fast as the server answers or, with `--rate`, paced at that many requests per second in all
(the same offered load to servers that could take more, so their CPU per request compares at
equal work):
`--warmup` seconds unmeasured, then `--duration` seconds during which it reads the server's CPU
time from /proc (bench/proc_stats.py) at the first and the last moment. Doing that here rather
than in the harness keeps the client's start and stop out of the server's figure. Prints one
JSON line: requests and records acknowledged, refused and failed calls, server CPU seconds.
Run by bench/small_requests.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import grpc
import grpc.aio

from bench.proc_stats import sample_process_tree
from otlp_stats.loadgen import Workload, build_requests
from otlp_stats.loadgen.driver import EXPORT_METHOD

Send = Callable[[bytes], Awaitable[bool]]


def small_requests(records: int) -> list[bytes]:
    """The reference workload's records, `records` to a request, under one resource."""
    workload = Workload(records_per_request=records, resources_per_request=1)
    return [request.payload for request in build_requests(workload)]


class Pace:
    """Send slots `1 / rate` apart, shared by every caller; rate 0: no pacing.

    A caller that finds its slot already past sends at once, so a server slower than the rate
    sees the callers' closed loop; a slot more than `_BEHIND` late moves the schedule on
    rather than sending a burst to catch up.
    """

    _BEHIND = 0.05

    def __init__(self, rate: float, now: float | None = None) -> None:
        self._gap = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic() if now is None else now

    def delay(self, now: float) -> float:
        """Take the next slot: how long from `now` until it (0: send at once)."""
        if not self._gap:
            return 0.0
        slot = max(self._next, now - self._BEHIND)
        self._next = slot + self._gap
        return max(0.0, slot - now)

    async def wait(self) -> None:
        if delay := self.delay(time.monotonic()):
            await asyncio.sleep(delay)


async def drive(
    send: Send, pool: Sequence[bytes], callers: int, seconds: float, rate: float = 0.0
) -> dict[str, int]:
    tally = {"requests": 0, "refused": 0}
    deadline = time.monotonic() + seconds
    pace = Pace(rate)

    async def caller(first: int) -> None:
        turn = first
        while time.monotonic() < deadline:
            await pace.wait()
            if time.monotonic() >= deadline:
                break
            accepted = await send(pool[turn % len(pool)])
            turn += callers
            tally["requests" if accepted else "refused"] += 1

    async with asyncio.TaskGroup() as group:
        for first in range(callers):
            group.create_task(caller(first))
    return tally


async def measure(send: Send, args: argparse.Namespace) -> dict[str, float]:
    pool = small_requests(args.records)
    warm = await drive(send, pool, args.callers, args.warmup, args.rate)
    before = sample_process_tree(args.server_pid).cpu_seconds
    started = time.monotonic()
    tally = await drive(send, pool, args.callers, args.duration, args.rate)
    elapsed = time.monotonic() - started
    cpu = sample_process_tree(args.server_pid).cpu_seconds - before
    return {
        "requests": tally["requests"],
        "records": tally["requests"] * args.records,
        "refused": tally["refused"],
        # Warm-up included: what the server's reports must add up to.
        "records_all": (tally["requests"] + warm["requests"]) * args.records,
        "elapsed_seconds": elapsed,
        "server_cpu_seconds": cpu,
    }


async def over_grpc(args: argparse.Namespace) -> dict[str, float]:
    # One connection by default, as one SDK or Collector exporter keeps; more (each channel on
    # a subchannel pool of its own) for a server whose processes share the port.
    channels = [
        grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.connections)
    ]
    # Bytes in, bytes out: no serializer on either side.
    exports: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = [
        channel.unary_unary(EXPORT_METHOD) for channel in channels
    ]
    turn = 0

    async def send(payload: bytes) -> bool:
        nonlocal turn
        turn += 1
        try:
            await exports[turn % len(exports)](payload, timeout=10)
        except grpc.aio.AioRpcError:
            return False
        return True

    try:
        return await measure(send, args)
    finally:
        for channel in channels:
            await channel.close()


async def over_http(args: argparse.Namespace) -> dict[str, float]:
    url = f"http://{args.target}/v1/logs"
    headers = {"Content-Type": "application/x-protobuf"}
    async with aiohttp.ClientSession() as session:

        async def send(payload: bytes) -> bool:
            async with session.post(url, data=payload, headers=headers) as response:
                await response.read()
                return response.status == 200

        return await measure(send, args)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transport", choices=("grpc", "http"), required=True)
    parser.add_argument("--target", required=True, help="host:port of the server's door")
    parser.add_argument("--server-pid", type=int, required=True, help="whose CPU to measure")
    parser.add_argument("--records", type=int, default=10, help="records per request")
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--connections", type=int, default=1, help="gRPC connections")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests per second in all (0: unpaced)"
    )
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    run = over_grpc if args.transport == "grpc" else over_http
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
