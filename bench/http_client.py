"""A load generator for OTLP/HTTP: the reference workload's requests, as protobuf or OTLP/JSON.

Posts the same pre-built requests as the gRPC load generator (same seed, same digest) to
/v1/logs from `--callers` concurrent callers for `--duration` seconds, and prints one JSON
line: records and requests acknowledged, requests refused. Run by bench/json_cost.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence

import aiohttp
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.loadgen.workload import Workload, build_requests
from otlp_stats.receiving.otlp_json import encode_json_request

MEDIA_TYPES = {"protobuf": "application/x-protobuf", "json": "application/json"}


def bodies(encoding: str) -> list[tuple[bytes, int]]:
    """(body, records) per request of the reference workload, in `encoding`."""
    prepared = build_requests(Workload())
    if encoding == "protobuf":
        return [(request.payload, request.records) for request in prepared]
    return [
        (encode_json_request(ExportLogsServiceRequest.FromString(r.payload)), r.records)
        for r in prepared
    ]


async def post_for(url: str, encoding: str, duration: float, callers: int) -> dict[str, int]:
    pool = bodies(encoding)
    tally = {"records": 0, "requests": 0, "refused": 0}
    deadline = time.monotonic() + duration
    headers = {"Content-Type": MEDIA_TYPES[encoding]}

    async def caller(session: aiohttp.ClientSession, first: int) -> None:
        turn = first
        while time.monotonic() < deadline:
            body, records = pool[turn % len(pool)]
            turn += callers
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    tally["records"] += records
                    tally["requests"] += 1
                else:
                    tally["refused"] += 1

    async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as group:
        for first in range(callers):
            group.create_task(caller(session, first))
    return tally


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the service's /v1/logs URL")
    parser.add_argument("--encoding", choices=sorted(MEDIA_TYPES), default="protobuf")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=4)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(post_for(args.url, args.encoding, args.duration, args.callers))))


if __name__ == "__main__":
    main()
