"""`python -m bench.memory_load`: send every request of a memory scenario once, print a summary.

It runs in its own process so the server's memory and CPU are the server's alone. Every
request must be accepted whole: the accuracy check compares the report with counts known by
construction, so a request that is refused for good fails the run instead of being skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from bench.memory_workload import MemoryScenario, RequestTemplate
from otlp_stats.loadgen.driver import EXPORT_METHOD
from otlp_stats.loadgen.retry import RETRYABLE_CODES, retry_delay

_Export = Callable[..., Awaitable[bytes]]


@dataclass
class _Tally:
    """What the callers of one run did; one event loop, so no locks."""

    next_index: int = 0
    requests_ok: int = 0
    records_acknowledged: int = 0
    records_rejected: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        self.failed: Counter[str] = Counter()


async def send_scenario(
    target: str, scenario: MemoryScenario, *, deadline_seconds: float, max_attempts: int = 50
) -> dict[str, object]:
    template = RequestTemplate(scenario)
    tally = _Tally()
    deadline = time.monotonic() + deadline_seconds
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        export: _Export = channel.unary_unary(EXPORT_METHOD)  # raw bytes both ways

        async def call_until_done() -> None:
            while tally.next_index < scenario.requests and time.monotonic() < deadline:
                index = tally.next_index
                tally.next_index += 1
                await _send(export, template, index, tally, deadline, max_attempts)

        async with asyncio.TaskGroup() as callers:
            for _ in range(scenario.callers):
                callers.create_task(call_until_done())
    elapsed = time.perf_counter() - started
    return {
        "requests": scenario.requests,
        "requests_ok": tally.requests_ok,
        "requests_failed": dict(tally.failed),
        "records_acknowledged": tally.records_acknowledged,
        "records_rejected": tally.records_rejected,
        "retries": tally.retries,
        "elapsed_seconds": round(elapsed, 3),
    }


async def _send(
    export: _Export,
    template: RequestTemplate,
    index: int,
    tally: _Tally,
    deadline: float,
    max_attempts: int,
) -> None:
    payload = template.payload(index)
    for attempt in range(max_attempts):
        try:
            response = await export(payload, timeout=30.0)
        except grpc.aio.AioRpcError as error:
            code: grpc.StatusCode = error.code()
            delay = retry_delay(error.trailing_metadata() or (), attempt)
            if code not in RETRYABLE_CODES or time.monotonic() + delay >= deadline:
                tally.failed[code.name] += 1
                return
            tally.retries += 1
            await asyncio.sleep(delay)
            continue
        records = template.records_in(index)
        rejected = ExportLogsServiceResponse.FromString(response).partial_success
        tally.requests_ok += 1
        tally.records_rejected += rejected.rejected_log_records
        tally.records_acknowledged += records - rejected.rejected_log_records
        return
    tally.failed["ATTEMPTS_EXHAUSTED"] += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_load", description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the gRPC server")
    parser.add_argument("--scenario", required=True, help="the MemoryScenario as JSON")
    parser.add_argument("--deadline", type=float, default=600.0, help="give up after seconds")
    args = parser.parse_args(argv)
    scenario = MemoryScenario.from_json(args.scenario)
    summary = asyncio.run(send_scenario(args.target, scenario, deadline_seconds=args.deadline))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
