"""Command line of the load generator: flags to a Workload and a LoadPlan, summary as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from otlp_stats.loadgen.driver import LoadPlan, run_load
from otlp_stats.loadgen.workload import Placement, Workload, build_requests, digest_requests

_DEFAULTS = Workload()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m otlp_stats.loadgen",
        description="Send pre-built OTLP log Export requests over gRPC and print a JSON summary.",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--target", default="127.0.0.1:4317", help="host:port of the gRPC server")
    run.add_argument("--callers", type=int, default=4, help="concurrent Export callers")
    run.add_argument(
        "--duration", type=float, help="seconds to run (default 10 without --requests)"
    )
    run.add_argument("--requests", type=int, help="requests to send in all, then stop")
    run.add_argument("--rate", type=float, help="cap on requests per second over all callers")
    run.add_argument(
        "--retry",
        action="store_true",
        help="retry UNAVAILABLE/RESOURCE_EXHAUSTED, waiting as google.rpc.RetryInfo says",
    )
    run.add_argument(
        "--max-attempts", type=int, default=20, help="attempts per request with --retry"
    )
    run.add_argument("--timeout", type=float, default=10.0, help="seconds per Export call")
    run.add_argument(
        "--truth", action="store_true", help="add per-value ground truth to the summary"
    )

    shape = parser.add_argument_group("workload")
    shape.add_argument("--records-per-request", type=int, default=_DEFAULTS.records_per_request)
    shape.add_argument(
        "--attributes",
        type=int,
        default=_DEFAULTS.attributes_per_record,
        help="attributes per record",
    )
    shape.add_argument("--body-length", type=int, default=_DEFAULTS.body_length, help="bytes")
    shape.add_argument(
        "--repeated-share",
        type=float,
        default=_DEFAULTS.repeated_share,
        help="share of records whose body recurs across records",
    )
    shape.add_argument("--attribute-key", default=_DEFAULTS.attribute_key)
    shape.add_argument(
        "--values",
        type=int,
        default=_DEFAULTS.distinct_values,
        help="distinct values of the counted attribute",
    )
    shape.add_argument(
        "--placement",
        type=Placement,
        choices=list(Placement),
        default=_DEFAULTS.placement,
        help="where the counted attribute sits",
    )
    shape.add_argument(
        "--resources",
        type=int,
        default=_DEFAULTS.resources_per_request,
        help="ResourceLogs per request",
    )
    shape.add_argument(
        "--recurring-messages",
        type=int,
        default=_DEFAULTS.recurring_messages,
        help="how many bodies the repeated records share",
    )
    shape.add_argument(
        "--pool",
        type=int,
        default=_DEFAULTS.pool_size,
        help="distinct requests pre-built; the run cycles through them",
    )
    shape.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    return parser


def workload_from(args: argparse.Namespace) -> Workload:
    return Workload(
        records_per_request=args.records_per_request,
        attributes_per_record=args.attributes,
        body_length=args.body_length,
        repeated_share=args.repeated_share,
        attribute_key=args.attribute_key,
        distinct_values=args.values,
        placement=args.placement,
        resources_per_request=args.resources,
        recurring_messages=args.recurring_messages,
        pool_size=args.pool,
        seed=args.seed,
    )


def workload_flags(workload: Workload) -> list[str]:
    """The flags that make this command line build exactly `workload`."""
    return [
        f"--records-per-request={workload.records_per_request}",
        f"--attributes={workload.attributes_per_record}",
        f"--body-length={workload.body_length}",
        f"--repeated-share={workload.repeated_share!r}",
        f"--attribute-key={workload.attribute_key}",
        f"--values={workload.distinct_values}",
        f"--placement={workload.placement.value}",
        f"--resources={workload.resources_per_request}",
        f"--recurring-messages={workload.recurring_messages}",
        f"--pool={workload.pool_size}",
        f"--seed={workload.seed}",
    ]


def plan_from(args: argparse.Namespace) -> LoadPlan:
    duration = args.duration
    if duration is None and args.requests is None:
        duration = 10.0
    return LoadPlan(
        target=args.target,
        callers=args.callers,
        duration=duration,
        requests=args.requests,
        rate=args.rate,
        retry=args.retry,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        workload = workload_from(args)
        plan = plan_from(args)
    except ValueError as error:
        parser.error(str(error))
    # Built before the clock starts: the run measures the server, not protobuf encoding.
    build_started = time.perf_counter()
    requests = build_requests(workload)
    build_seconds = time.perf_counter() - build_started
    summary = asyncio.run(run_load(plan, requests))
    report = summary.as_dict(include_truth=args.truth)
    report["workload"] = {**asdict(workload), "placement": workload.placement.value}
    report["workload_digest"] = digest_requests(requests)
    report["payload_bytes_mean"] = round(sum(len(r.payload) for r in requests) / len(requests))
    report["build_seconds"] = round(build_seconds, 3)
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0
