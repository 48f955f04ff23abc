"""`python -m bench.soak`: a bounded soak of the service, RSS and latency sampled over time.

Starts the service as a child process, sends at a fixed rate with a retrying load
generator in slices of `--interval` seconds, and after each slice prints one JSON line: the
server's RSS, the slice's latency percentiles and what was refused. At the end it prints a
verdict and exits 1 if RSS grew more than `--max-rss-growth` between the first and the last
third of the run, latency p99 grew more than `--max-p99-growth`, the service did not exit 0 on
SIGTERM, or its reports do not add up to the records acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.server_process import ServerProcess
from otlp_stats.loadgen.driver import LoadPlan, run_load
from otlp_stats.loadgen.workload import PreparedRequest, Workload, build_requests

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One slice of the soak."""

    elapsed_seconds: float
    rss_bytes: int
    requests_ok: int
    records_acknowledged: int
    refused: int
    failed: int
    p50_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, object]:
        return {
            "event": "soak_sample",
            "elapsed_seconds": round(self.elapsed_seconds, 1),
            "rss_mib": round(self.rss_bytes / MiB, 1),
            "requests_ok": self.requests_ok,
            "refused": self.refused,
            "failed": self.failed,
            "latency_p50_ms": round(self.p50_ms, 2),
            "latency_p99_ms": round(self.p99_ms, 2),
        }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per sample")
    parser.add_argument("--rate", type=float, default=300.0, help="Export requests per second")
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--records-per-request", type=int, default=100)
    parser.add_argument("--values", type=int, default=50, help="distinct attribute values")
    parser.add_argument("--max-rss-growth", type=float, default=0.25, help="share, e.g. 0.25")
    parser.add_argument("--max-p99-growth", type=float, default=3.0, help="share, e.g. 3.0")
    return parser


def server_command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "otlp_stats",
        "--grpc-listen=127.0.0.1:0",
        "--http-listen=127.0.0.1:0",
        "--admin-listen=127.0.0.1:0",
        "--log-format=json",
        "--report-format=json",
        "--window=10",
    ]


async def soak(
    args: argparse.Namespace, server: ServerProcess, requests: Sequence[PreparedRequest]
) -> list[Sample]:
    samples: list[Sample] = []
    started = time.monotonic()
    for _ in range(max(1, math.ceil(args.duration / args.interval))):
        plan = LoadPlan(
            target=f"127.0.0.1:{server.grpc_port}",
            callers=args.callers,
            duration=args.interval,
            rate=args.rate,
            retry=True,
        )
        summary = await run_load(plan, requests)
        sample = Sample(
            elapsed_seconds=time.monotonic() - started,
            rss_bytes=server.resident_bytes(),
            requests_ok=summary.requests_ok,
            records_acknowledged=summary.records_acknowledged,
            refused=sum(summary.requests_refused.values()),
            failed=sum(summary.requests_failed.values()),
            p50_ms=summary.latency_p50_ms,
            p99_ms=summary.latency_p99_ms,
        )
        samples.append(sample)
        print(json.dumps(sample.as_dict()), flush=True)
    return samples


def growth(samples: Sequence[Sample], measure: str) -> float:
    """Median of the last third over the median of the first third, minus one."""
    third = max(1, len(samples) // 3)
    first = statistics.median(getattr(s, measure) for s in samples[:third])
    last = statistics.median(getattr(s, measure) for s in samples[-third:])
    return float(last / first - 1) if first else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workload = Workload(records_per_request=args.records_per_request, distinct_values=args.values)
    requests = build_requests(workload)
    with ServerProcess("otlp-stats", server_command(), cwd=REPO, env=dict(os.environ)) as server:
        server.start()
        samples = asyncio.run(soak(args, server, requests))
        stopped = server.stop()
    acknowledged = sum(s.records_acknowledged for s in samples)
    rss_growth, p99_growth = growth(samples, "rss_bytes"), growth(samples, "p99_ms")
    passed = (
        rss_growth <= args.max_rss_growth
        and p99_growth <= args.max_p99_growth
        and acknowledged == stopped.reported_records
        and stopped.exit_code == 0
    )
    verdict = {
        "event": "soak_verdict",
        "samples": len(samples),
        "rss_growth": round(rss_growth, 3),
        "p99_growth": round(p99_growth, 3),
        "records_acknowledged": acknowledged,
        "records_reported": stopped.reported_records,
        "failed_requests": sum(s.failed for s in samples),
        "exit_code": stopped.exit_code,
        "passed": passed,
    }
    print(json.dumps(verdict), flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
