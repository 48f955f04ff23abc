"""`python -m bench.durability_cost`: what `--durability ack` costs against `checkpoint`.

Both with the SQLite store (or `--redis URL`: one replica on that Redis), on the same requests,
in interleaved rounds (checkpoint, ack, checkpoint, ...) so a shared machine's drift falls on
both alike: the server's CPU per record at saturation (target: ack at most 1.15x checkpoint)
and the Export p99 at half the saturation rate (target: at most 50 ms). Prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bench.run import _clean_env, service_argv
from bench.server_run import RunSettings, ServerRun, measure_server
from otlp_stats.loadgen import Workload

MODES = ("checkpoint", "ack")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.durability_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per mode")
    parser.add_argument("--duration", type=float, default=12.0, help="saturation seconds")
    parser.add_argument("--callers", type=int, default=4, help="callers at saturation")
    parser.add_argument(
        "--records-per-request",
        type=int,
        default=Workload().records_per_request,
        help="records per Export (smaller: more commits per record)",
    )
    parser.add_argument("--synchronous", default="full", help="--sqlite-synchronous with ack")
    parser.add_argument(
        "--redis", default=None, help="a Redis URL: measure one replica on it instead of SQLite"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workload = replace(Workload(), records_per_request=args.records_per_request)
    settings = RunSettings(
        warmup_seconds=2.0,
        saturation_seconds=args.duration,
        latency_seconds=4.0,
        saturation_callers=args.callers,
        latency_callers=args.callers,
    )
    env = _clean_env()
    runs: dict[str, list[ServerRun]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="otlp-bench-durability-") as scratch:
        directory = Path(scratch)
        for round_number in range(args.rounds):
            for mode in MODES:
                extra = f"--http-listen 127.0.0.1:0 --durability {mode} " + store_flags(
                    args, directory, f"{mode}{round_number}"
                )
                run = measure_server(
                    mode, service_argv(workload, extra), workload, settings,
                    cwd=directory, env=env, loadgen_cwd=directory,
                )  # fmt: skip
                runs[mode].append(run)
                print(
                    f"round {round_number + 1} {mode}: {run.cpu_us_per_record:.2f} us/record, "
                    f"{run.saturation.records_per_second:,.0f} records/s, half-rate p99 "
                    f"{run.half_rate.latency_p99_ms:.1f} ms",
                    flush=True,
                )
    print(render(runs, workload))
    return 0


def store_flags(args: argparse.Namespace, directory: Path, name: str) -> str:
    if args.redis is not None:
        # Each run its own replica id: a run never replays the journal of the one before.
        return f"--store {args.redis} --replica-id bench-{name}"
    return f"--store sqlite://{directory}/{name}.db --sqlite-synchronous {args.synchronous}"


def render(runs: dict[str, list[ServerRun]], workload: Workload) -> str:
    base = statistics.median(run.cpu_us_per_record for run in runs["checkpoint"])
    lines = [
        f"\n{workload.records_per_request} records per request\n",
        "| durability | CPU per record (median, us) | rounds (us) | vs checkpoint "
        "| records/s (median) | p99 at half rate (median, ms) | rounds (ms) |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for mode in MODES:
        cpu = [run.cpu_us_per_record for run in runs[mode]]
        p99 = [run.half_rate.latency_p99_ms for run in runs[mode]]
        rate = statistics.median(run.saturation.records_per_second for run in runs[mode])
        lines.append(
            f"| `{mode}` | {statistics.median(cpu):.2f} | {', '.join(f'{v:.2f}' for v in cpu)} "
            f"| {statistics.median(cpu) / base:.2f}x | {rate:,.0f} "
            f"| {statistics.median(p99):.1f} | {', '.join(f'{v:.1f}' for v in p99)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
