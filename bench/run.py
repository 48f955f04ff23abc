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
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import google.protobuf
import grpc
from google.protobuf.internal import api_implementation

from bench.floor import measure_baseline_counting, measure_decode_floor, measure_scanners
from bench.json_cost import HttpCost, measure_http_bodies, measure_json_decoding
from bench.keys import describe as describe_keys
from bench.keys import measure_keys
from bench.load_run import LoadRunFailed
from bench.memory_report import MEMORY_BEGIN_MARKER, MEMORY_END_MARKER, render_memory
from bench.memory_run import MemoryRun, measure_memory, scaled_scenarios
from bench.replay_cost import ReplayCost, measure_replay
from bench.report import END_MARKER, BenchResults, Machine, render_results, splice_results
from bench.server_process import ServerFailed
from bench.server_run import RunSettings, ServerRun, measure_server
from bench.small_requests import SmallRequestCost, measure_small_requests, small_request_servers
from otlp_stats.cli.grpc_io import EXPERIMENTS_VARIABLE
from otlp_stats.loadgen import Workload, build_requests, digest_requests
from otlp_stats.patterns.masker import Masker

REPO = Path(__file__).resolve().parent.parent
# The service again, windowing by the records' own time. A lateness longer than a run keeps the
# window the records are stamped in open for all of it.
EVENT = "service, event time"
EVENT_FLAGS = "--window-time event --allowed-lateness 60"
# Issue 20: the same service with message patterns not counted, for what counting them costs.
NO_PATTERNS = "service, no patterns"
NO_PATTERNS_FLAGS = "--count-patterns false"

DOCUMENT_TEMPLATE = """# Benchmarks

Reproduce with `make bench`; `python -m bench.run --help` lists the knobs.

## What was tried that did not pay

"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=12.0, help="saturation seconds per server and round"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of baseline, transport and service, interleaved; each figure is the "
        "median round's",
    )
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
    parser.add_argument(
        "--small-duration",
        type=float,
        default=5.0,
        help="seconds per small-request scenario and server (0: skip them)",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument(
        "--memory-scale",
        type=float,
        default=1.0,
        help="records of the memory scenarios (10M, 1M values, 16k x 64 KiB) times this",
    )
    parser.add_argument("--skip-memory", action="store_true", help="no memory scenarios")
    parser.add_argument(
        "--skip-side",
        action="store_true",
        help="no side benches (durability cost, pattern accuracy and speed; about 3 min)",
    )
    parser.add_argument(
        "--skip-replay", action="store_true", help="no otlp-stats replay figures (about 5 min)"
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the memory scenarios; the throughput block of BENCHMARKS.md stays as it is",
    )
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    return parser.parse_args(argv)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_scale <= 0:
        raise SystemExit("--memory-scale must be positive")
    command = shlex.join(["python", "-m", "bench.run", *(argv or sys.argv[1:])])
    throughput_ok = True if args.memory_only else measure_throughput(args, command)
    memory_ok = True if args.skip_memory else measure_memory_scenarios(args, command)
    return 0 if throughput_ok and memory_ok else 1


def measure_throughput(args: argparse.Namespace, command: str) -> bool:
    """Floor, baseline and service on the reference workload; True when every check passed."""
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
    scanners = measure_scanners(requests, workload.attribute_key, args.floor_seconds)
    json_decoding = measure_json_decoding(requests, args.floor_seconds)
    # Issue 18: three keys from one walk against one key, interleaved (3 floor times of CPU).
    # Both ways: the service counts patterns by default, and without them is the lighter path.
    for masker in (Masker(), None):
        cost = measure_keys(requests, workload.attribute_key, 3 * args.floor_seconds, masker)
        notes.append(describe_keys(cost, masker is not None))
    replay: ReplayCost | None = None
    if not args.skip_replay:
        _say("measuring otlp-stats replay: protobuf, OTLP/JSON, JSON frames, two years' memory")
        try:
            replay = measure_replay(requests)
        except (OSError, subprocess.SubprocessError) as error:
            problems.append(f"otlp-stats replay: {error}")
    http_cost: HttpCost | None = None
    small: SmallRequestCost | None = None
    env = _clean_env()
    with tempfile.TemporaryDirectory(prefix="otlp-bench-") as scratch:

        def measure(name: str, argv: list[str]) -> ServerRun | None:
            _say(f"measuring {name}: {shlex.join(argv)}")
            # Event time counts a record in the window of its own stamp: stamped now, so that
            # every record lands in an open window, as live traffic does.
            sent = replace(workload, time_base_ns=time.time_ns()) if name == EVENT else workload
            run = _attempt(
                name,
                lambda: measure_server(
                    name, argv, sent, settings, cwd=Path(scratch), env=env,
                    loadgen_cwd=Path(scratch),
                ),
                problems,
            )  # fmt: skip
            floors.append(measure_decode_floor(requests, args.floor_seconds))
            return run

        servers: dict[str, list[str]] = {}
        if not args.skip_baseline:
            servers["baseline"] = baseline_argv(workload)
            servers["transport"] = transport_argv(workload)
        if args.skip_service:
            notes.append("the service was skipped (--skip-service)")
        elif importlib.util.find_spec("otlp_stats.__main__") is None:
            notes.append("the service is not available yet (no otlp_stats/__main__.py)")
        else:
            servers["service"] = service_argv(workload, args.service_args)
            servers[EVENT] = service_argv(workload, f"{args.service_args} {EVENT_FLAGS}")
            servers[NO_PATTERNS] = service_argv(
                workload, f"{args.service_args} {NO_PATTERNS_FLAGS}"
            )
        # Interleaved, so that the machine's drift over the minutes falls on every server alike.
        # A failed round stays in place as None, so that rounds pair up by their number.
        rounds: dict[str, list[ServerRun | None]] = {name: [] for name in servers}
        for _ in range(max(1, args.rounds)):
            for name, server_argv in servers.items():
                rounds[name].append(measure(name, server_argv))
        if "service" in servers:
            _say("measuring the service over OTLP/HTTP, protobuf and OTLP/JSON bodies")
            try:
                http_cost = measure_http_bodies(
                    servers["service"], seconds=args.duration, rounds=args.rounds,
                    callers=args.callers, cwd=Path(scratch), env=env,
                )  # fmt: skip
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                problems.append(f"service over OTLP/HTTP: {error}")
        if {"service", "baseline"} <= set(servers) and args.small_duration > 0:
            _say("measuring small requests: service, baseline, bare, --processes 2 (also paced)")
            small = measure_small_requests(
                small_request_servers(servers["service"], servers["baseline"]),
                seconds=args.small_duration, rounds=args.rounds, callers=32,
                cwd=Path(scratch), env=env,
            )  # fmt: skip
            problems += small.problems
    baseline = median_round(rounds.get("baseline", []))
    transport = median_round(rounds.get("transport", []))
    service = median_round(rounds.get("service", []))
    service_event = median_round(rounds.get(EVENT, []))
    service_no_patterns = median_round(rounds.get(NO_PATTERNS, []))
    results = BenchResults(
        started_at=started_at,
        command=command,
        machine=machine,
        workload=workload,
        payload_bytes_mean=sum(len(r.payload) for r in requests) // len(requests),
        workload_digest=digest_requests(requests),
        settings=settings,
        floors=floors,
        baseline_counting=counting,
        scanners=scanners,
        json_decoding=json_decoding,
        http_cost=http_cost,
        replay=replay,
        small_requests=small,
        baseline=baseline,
        service=service,
        service_event=service_event,
        service_no_patterns=service_no_patterns,
        transport=transport,
        problems=problems,
        notes=notes,
        rounds=rounds,
    )
    block = render_results(results)
    if not args.skip_side:
        sections, side_problems = measure_side_benches(env)
        # Inside the markers, so that the next run replaces them rather than adding its own.
        inside = block.rstrip("\n").removesuffix(END_MARKER).rstrip("\n")
        block = "\n\n".join([inside, *sections, END_MARKER]) + "\n"
        problems += side_problems
    splice_results(args.output, block, DOCUMENT_TEMPLATE)
    print(block)
    runs = [run for server_rounds in rounds.values() for run in server_rounds if run]
    failed = bool(problems) or not all(run.passed for run in runs)
    # The event-time runs send the same requests stamped at their start: another digest.
    digest_mismatch = any(
        results.workload_digest not in run.digests_seen for run in runs if run.name != EVENT
    )
    if digest_mismatch:
        _say("the load generator built different requests than the harness")
    return not (failed or digest_mismatch)


# Benches of one capability each, run as their own commands so that their figures land in the
# same run as the rest (the same machine, minutes apart): (title, what it measures, argv).
SIDE_BENCHES = (
    (
        "Durability: `--durability ack` against `checkpoint` (issue 19)",
        "Server CPU per record at saturation (target: ack at most 1.15x checkpoint) and Export "
        "p99 at half that rate (target: at most 50 ms), SQLite store, "
        "`--sqlite-synchronous normal` (the default), interleaved rounds, 16 callers.",
        ["-m", "bench.durability_cost", "--rounds", "2", "--duration", "8", "--callers", "16",
         "--synchronous", "normal"],
    ),
    (
        "Patterns: accuracy on Loghub-2k (issue 20)",
        "Grouping and parsing accuracy of `otlp-stats pattern` on the four shared Loghub-2k "
        "systems, drain3 beside it (Zhu et al., Loghub, ISSRE 2023; data under its licence).",
        ["-m", "bench.patterns_accuracy"],
    ),
    (
        "Patterns: CPU per message (issue 20)",
        "The masker in Python and C, the similarity merge, drain3 beside them; CPU time, "
        "interleaved rounds.",
        ["-m", "bench.patterns_speed"],
    ),
)  # fmt: skip


def measure_side_benches(env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Each side bench's output as a section of the results block, and what failed."""
    sections: list[str] = []
    problems: list[str] = []
    for title, what, argv in SIDE_BENCHES:
        command = shlex.join(["python", *argv])
        _say(f"side bench: {command}")
        try:
            done = subprocess.run(
                [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                timeout=900, check=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as error:
            problems.append(f"{command}: {error}")
            continue
        sections.append(_side_section(title, what, command, done.stdout))
    return sections, problems


def _side_section(title: str, what: str, command: str, output: str) -> str:
    # Progress lines (a round's figures) go in a block of their own; tables stay tables.
    lines = output.strip("\n").splitlines()
    progress = [line for line in lines if line.startswith("round ")]
    rest = [line for line in lines if not line.startswith("round ")]
    parts = [f"### {title}", what, f"`{command}`"]
    if progress:
        parts.append("```\n" + "\n".join(progress) + "\n```")
    spaced: list[str] = []
    for line in rest:
        if line.startswith("|") and spaced and spaced[-1] and not spaced[-1].startswith("|"):
            spaced.append("")  # Markdown needs a blank line before a table
        spaced.append(line)
    parts.append("\n".join(spaced).strip("\n"))
    return "\n\n".join(parts)


def median_round(runs: Sequence[ServerRun | None]) -> ServerRun | None:
    """The round with the median CPU per record, among those that counted records (the upper
    middle one of an even count: the less flattering)."""
    measured = sorted(
        (run for run in runs if run is not None and run.records_acknowledged),
        key=lambda run: run.cpu_us_per_record,
    )
    return measured[len(measured) // 2] if measured else None


def measure_memory_scenarios(args: argparse.Namespace, command: str) -> bool:
    """Peak RSS and accuracy of scenarios (a), (b), (c); True when every check passed."""
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    env = _clean_env()
    runs: list[MemoryRun] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="otlp-bench-memory-") as scratch:
        for scenario in scaled_scenarios(args.memory_scale):
            _say(
                f"memory scenario ({scenario.name}): {scenario.title}, {scenario.records:,} records"
            )
            try:
                run = measure_memory(
                    scenario, cwd=Path(scratch), env=env,
                    service_args=shlex.split(args.service_args),
                )  # fmt: skip
            except (ServerFailed, LoadRunFailed, subprocess.TimeoutExpired, OSError) as error:
                problems.append(f"({scenario.name}): {error}")
                _say(f"memory scenario ({scenario.name}) failed: {error}")
                continue
            _say(
                f"memory scenario ({scenario.name}): peak RSS {run.peak_rss_bytes / 1e6:.0f} MB, "
                f"{run.elapsed_seconds:.1f} s, {'pass' if run.passed else 'FAIL'}"
            )
            runs.append(run)
    block = render_memory(runs, started_at=started_at, command=command, problems=problems)
    splice_results(
        args.output, block, DOCUMENT_TEMPLATE, begin=MEMORY_BEGIN_MARKER, end=MEMORY_END_MARKER
    )
    print(block)
    return not problems and all(run.passed for run in runs)


def _clean_env() -> dict[str, str]:
    # Servers and load generators run in an empty directory with OTLP_STATS_* removed, so no
    # .env file or exported setting changes what is measured; nor does a GRPC_EXPERIMENTS of
    # the shell's (the service picks its gRPC listener itself: otlp_stats/cli/grpc_io.py).
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTLP_STATS_") and key != EXPERIMENTS_VARIABLE
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def baseline_argv(workload: Workload) -> list[str]:
    return [
        sys.executable, "-m", "bench.baseline_server",
        "--listen", "127.0.0.1:0", "--attribute-key", workload.attribute_key,
    ]  # fmt: skip


def transport_argv(workload: Workload) -> list[str]:
    return [*baseline_argv(workload), "--transport-only",
            "--records-per-request", str(workload.records_per_request)]  # fmt: skip


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
