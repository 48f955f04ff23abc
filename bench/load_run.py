"""One load generator run against a server, in its own process, read back as figures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from otlp_stats.loadgen.cli import workload_flags
from otlp_stats.loadgen.workload import Workload


class LoadRunFailed(RuntimeError):
    """The load generator exited badly or printed no summary."""


@dataclass(frozen=True)
class LoadFigures:
    records_acknowledged: int
    records_per_second: float
    requests_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    requests_refused: int
    requests_failed: int
    retries: int
    workload_digest: str


def run_load_process(
    target: str,
    workload: Workload,
    *,
    duration: float,
    callers: int,
    rate: float | None = None,
    cwd: Path,
    env: Mapping[str, str],
) -> LoadFigures:
    """Run `python -m otlp_stats.loadgen` with retries on, so a throttling server is not a loss."""
    argv = [
        sys.executable,
        "-m",
        "otlp_stats.loadgen",
        f"--target={target}",
        f"--duration={duration}",
        f"--callers={callers}",
        "--retry",
        *workload_flags(workload),
    ]
    if rate is not None:
        argv.append(f"--rate={rate}")
    completed = subprocess.run(
        argv, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=duration + 300
    )
    if completed.returncode != 0:
        raise LoadRunFailed(f"load generator exited {completed.returncode}: {completed.stderr}")
    try:
        summary = json.loads(completed.stdout.strip().splitlines()[-1])
        latency = summary["latency_ms"]
        return LoadFigures(
            records_acknowledged=int(summary["records_acknowledged"]),
            records_per_second=float(summary["records_per_second"]),
            requests_per_second=float(summary["requests_per_second"]),
            latency_p50_ms=float(latency["p50"]),
            latency_p99_ms=float(latency["p99"]),
            requests_refused=sum(int(n) for n in summary["requests_refused"].values()),
            requests_failed=sum(int(n) for n in summary["requests_failed"].values()),
            retries=int(summary["retries"]),
            workload_digest=str(summary["workload_digest"]),
        )
    except (IndexError, KeyError, TypeError, ValueError) as error:
        raise LoadRunFailed(f"unreadable summary: {completed.stdout!r}") from error
