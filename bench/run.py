"""`make bench`: the decode floor, the baseline server and the service, on the same requests.

Everything is measured in one run so each figure can be stated as a ratio to figures taken
minutes apart on the same machine, which is what survives a noisy shared host.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import google.protobuf
import grpc
from google.protobuf.internal import api_implementation

from bench.floor import measure_baseline_counting, measure_decode_floor
from bench.load_run import LoadRunFailed
from bench.report import BenchResults, Machine, render_results, splice_results
from bench.server_process import ServerFailed
from bench.server_run import RunSettings, ServerRun, measure_server
from otlp_stats.loadgen import Workload, build_requests, digest_requests

REPO = Path(__file__).resolve().parent.parent

DOCUMENT_TEMPLATE = """# Benchmarks

Reproduce with `make bench`; `python -m bench.run --help` lists the knobs.

## What was tried that did not pay

"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0, help="saturation seconds")
    parser.add_argument(
        "--latency-duration",
        type=float,
        default=10.0,
        help="seconds of the half-saturation latency run",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per server")
    parser.add_argument("--callers", type=int, default=4, help="callers at saturation")
    parser.add_argument(
        "--latency-callers",
        type=int,
        default=16,
        help="callers sharing the paced half-saturation rate",
    )
    parser.add_argument(
        "--floor-seconds", type=float, default=2.0, help="CPU seconds per in-process measurement"
    )
    parser.add_argument(
        "--service-args", default="", help="extra flags for the service, e.g. '--workers 4'"
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    return parser.parse_args(argv)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = describe_machine()
    workload = Workload()
    requests = build_requests(workload)
    settings = RunSettings(
        warmup_seconds=args.warmup,
        saturation_seconds=args.duration,
        latency_seconds=args.latency_duration,
        saturation_callers=args.callers,
        latency_callers=args.latency_callers,
    )
    problems: list[str] = []
    notes: list[str] = []
    floors = [measure_decode_floor(requests, args.floor_seconds)]
    counting = measure_baseline_counting(requests, workload.attribute_key, args.floor_seconds)
    # Servers and load generators run in an empty directory with OTLP_STATS_* removed, so no
    # .env file or exported setting changes what is measured.
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTLP_STATS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="otlp-bench-") as scratch:

        def measure(name: str, argv: list[str]) -> ServerRun | None:
            _say(f"measuring {name}: {shlex.join(argv)}")
            run = _attempt(
                name,
                lambda: measure_server(
                    name, argv, workload, settings, cwd=Path(scratch), env=env,
                    loadgen_cwd=Path(scratch),
                ),
                problems,
            )  # fmt: skip
            floors.append(measure_decode_floor(requests, args.floor_seconds))
            return run

        baseline = None
        if not args.skip_baseline:
            baseline = measure("baseline", baseline_argv(workload))
        service = None
        if args.skip_service:
            notes.append("the service was skipped (--skip-service)")
        elif importlib.util.find_spec("otlp_stats.__main__") is None:
            notes.append("the service is not available yet (no otlp_stats/__main__.py)")
        else:
            service = measure("service", service_argv(workload, args.service_args))
    results = BenchResults(
        started_at=started_at,
        command=shlex.join(["python", "-m", "bench.run", *(argv or sys.argv[1:])]),
        machine=machine,
        workload=workload,
        payload_bytes_mean=sum(len(r.payload) for r in requests) // len(requests),
        workload_digest=digest_requests(requests),
        settings=settings,
        floors=floors,
        baseline_counting=counting,
        baseline=baseline,
        service=service,
        problems=problems,
        notes=notes,
    )
    block = render_results(results)
    splice_results(args.output, block, DOCUMENT_TEMPLATE)
    print(block)
    runs = [run for run in (baseline, service) if run is not None]
    failed = bool(problems) or not all(run.passed for run in runs)
    digest_mismatch = any(results.workload_digest not in run.digests_seen for run in runs)
    if digest_mismatch:
        _say("the load generator built different requests than the harness")
    return 1 if failed or digest_mismatch else 0


def baseline_argv(workload: Workload) -> list[str]:
    return [
        sys.executable, "-m", "bench.baseline_server",
        "--listen", "127.0.0.1:0", "--attribute-key", workload.attribute_key,
    ]  # fmt: skip


def service_argv(workload: Workload, extra: str) -> list[str]:
    return [
        sys.executable, "-m", "otlp_stats",
        "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--log-format", "json", "--report-format", "json", "--window", "2",
        "--attribute-key", workload.attribute_key,
        *shlex.split(extra),
    ]  # fmt: skip


def describe_machine() -> Machine:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return Machine(
        cpu_model=model,
        cores=len(os.sched_getaffinity(0)),
        load_average=(load[0], load[1], load[2]),
        python=platform.python_version(),
        grpcio=str(grpc.__version__),
        protobuf=f"{google.protobuf.__version__} ({api_implementation.Type()})",
    )


def _attempt(name: str, measure: Callable[[], ServerRun], problems: list[str]) -> ServerRun | None:
    try:
        return measure()
    except (ServerFailed, LoadRunFailed, subprocess.TimeoutExpired, OSError) as error:
        problems.append(f"{name}: {error}")
        _say(f"{name} failed: {error}")
        return None


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
