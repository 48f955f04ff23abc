"""Command line of the load generator: flags to a Workload and a LoadPlan, summary as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from otlp_stats.loadgen.driver import LoadPlan, run_load
from otlp_stats.loadgen.workload import Placement, Workload, build_requests, digest_requests

_DEFAULTS = Workload()


@dataclass(frozen=True)
class _WorkloadFlag:
    """One flag of the workload group: its name, the Workload field it sets, its help."""

    name: str
    field: str
    help: str | None = None


# The one list of workload flags: the parser, workload_from and workload_flags all read it.
# Each flag's type and default are its field's in Workload().
_WORKLOAD_FLAGS = (
    _WorkloadFlag("--records-per-request", "records_per_request"),
    _WorkloadFlag("--attributes", "attributes_per_record", "attributes per record"),
    _WorkloadFlag("--body-length", "body_length", "bytes"),
    _WorkloadFlag(
        "--repeated-share", "repeated_share", "share of records whose body recurs across records"
    ),
    _WorkloadFlag("--attribute-key", "attribute_key"),
    _WorkloadFlag("--values", "distinct_values", "distinct values of the counted attribute"),
    _WorkloadFlag("--placement", "placement", "where the counted attribute sits"),
    _WorkloadFlag("--resources", "resources_per_request", "ResourceLogs per request"),
    _WorkloadFlag(
        "--recurring-messages", "recurring_messages", "how many bodies the repeated records share"
    ),
    _WorkloadFlag(
        "--pool", "pool_size", "distinct requests pre-built; the run cycles through them"
    ),
    _WorkloadFlag("--seed", "seed"),
    _WorkloadFlag("--time-base-ns", "time_base_ns", "Unix time of the first record, ns"),
)


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
    for flag in _WORKLOAD_FLAGS:
        default = getattr(_DEFAULTS, flag.field)
        choices = list(Placement) if isinstance(default, Placement) else None
        shape.add_argument(
            flag.name,
            dest=flag.field,
            type=type(default),
            default=default,
            choices=choices,
            # What argparse would show without dest: the flag's name, not the field's.
            metavar=None if choices else flag.name[2:].replace("-", "_").upper(),
            help=flag.help,
        )
    return parser


def workload_from(args: argparse.Namespace) -> Workload:
    return Workload(**{flag.field: getattr(args, flag.field) for flag in _WORKLOAD_FLAGS})


def workload_flags(workload: Workload) -> list[str]:
    """The flags that make this command line build exactly `workload`."""
    # str() of a float is its shortest round-trip form, of a Placement its value.
    return [f"{flag.name}={getattr(workload, flag.field)!s}" for flag in _WORKLOAD_FLAGS]


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
