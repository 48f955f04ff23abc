"""One memory scenario against the real service: peak RSS while it counts, then the exact check.

The service runs with one window longer than the run, so all of a scenario lands in the
single partial report printed at SIGTERM, where every figure can be compared with the truth.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load_run import LoadRunFailed
from bench.memory_accuracy import AccuracyCheck, check_report
from bench.memory_workload import MemoryScenario
from bench.server_process import ServerProcess

TARGET_PEAK_RSS_BYTES = 300 * 10**6
_SAMPLE_SECONDS = 0.25
QUEUE_BYTES_METRIC = "otlp_stats_queue_bytes"
QUEUE_CAPACITY_METRIC = "otlp_stats_queue_capacity_bytes"
# Everything in one window: 1e9 s is about 31 years.
_ONE_WINDOW = "1000000000"

# The three workloads at scale 1: (a) 10 million distinct messages under 100 values,
# (b) a million distinct values, one record each, against the default cap of 10,000, and
# (c) 64 KiB bodies, each sent twice, in 1 MiB requests from enough callers that requests
# would pile up in the queue if its byte bound did not hold them back.
MEMORY_SCENARIOS = (
    MemoryScenario(
        name="a", title="10M distinct messages, 100 values", records=10_000_000,
        records_per_request=1000, distinct_values=100, body_length=100, callers=4,
    ),
    MemoryScenario(
        name="b", title="1M distinct values, cap 10,000", records=1_000_000,
        records_per_request=1000, distinct_values=1_000_000, body_length=100, callers=4,
    ),
    MemoryScenario(
        name="c", title="64 KiB bodies", records=16_384, records_per_request=16,
        distinct_values=100, body_length=64 * 1024, callers=16, body_repeat=2,
    ),
)  # fmt: skip


@dataclass(frozen=True)
class MemoryRun:
    scenario: MemoryScenario
    # VmHWM of the server: the most it was resident at any moment of the run.
    peak_rss_bytes: int
    # VmHWM as it stood at the end of each quarter of the sending time: flat memory shows as
    # four nearly equal figures, growth with the records sent as a rising line.
    peak_rss_by_quarter: tuple[int, int, int, int]
    # Resident memory before the first request: what the counting adds is the difference.
    idle_rss_bytes: int
    # The most request bytes the service's queue held at a sample, and its byte bound.
    max_queue_bytes: int | None
    queue_capacity_bytes: int | None
    elapsed_seconds: float
    records_acknowledged: int
    retries: int
    requests_failed: Mapping[str, int]
    exit_code: int
    accuracy: AccuracyCheck

    @property
    def records_per_second(self) -> float:
        return self.records_acknowledged / self.elapsed_seconds if self.elapsed_seconds else 0.0

    @property
    def within_target(self) -> bool:
        return self.peak_rss_bytes <= TARGET_PEAK_RSS_BYTES

    @property
    def passed(self) -> bool:
        return self.accuracy.passed and self.exit_code == 0 and not self.requests_failed


def scaled_scenarios(scale: float) -> list[MemoryScenario]:
    return [scenario.scaled(scale) for scenario in MEMORY_SCENARIOS]


def memory_service_argv(scenario: MemoryScenario, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable, "-m", "otlp_stats",
        "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0", "--log-format", "json", "--report-format", "json",
        "--window", _ONE_WINDOW, "--attribute-key", scenario.attribute_key,
        "--max-values", str(scenario.max_values), "--sketch-lg-k", str(scenario.sketch_lg_k),
        *extra,
    ]  # fmt: skip


def measure_memory(
    scenario: MemoryScenario,
    *,
    cwd: Path,
    env: Mapping[str, str],
    service_args: Sequence[str] = (),
    deadline_seconds: float = 600.0,
) -> MemoryRun:
    argv = memory_service_argv(scenario, service_args)
    with ServerProcess(f"memory {scenario.name}", argv, cwd=cwd, env=env) as server:
        server.start()
        idle = server.resident_bytes()
        capacity = _scrape(server, QUEUE_CAPACITY_METRIC)
        summary, elapsed, samples = _load_while_sampling(
            server, scenario, cwd=cwd, env=env, deadline_seconds=deadline_seconds
        )
        final = _Sample(
            max((sample.moment for sample in samples), default=0.0),
            server.sample().peak_rss_bytes,
            None,
        )
        stopped = server.stop()
    queued = [sample.queue_bytes for sample in samples if sample.queue_bytes is not None]
    acknowledged = _integer(summary, "records_acknowledged")
    failed = summary.get("requests_failed")
    return MemoryRun(
        scenario=scenario,
        peak_rss_bytes=max(sample.peak_rss_bytes for sample in [*samples, final]),
        peak_rss_by_quarter=_peaks_by_quarter([*samples, final]),
        idle_rss_bytes=idle,
        max_queue_bytes=max(queued, default=None),
        queue_capacity_bytes=capacity,
        elapsed_seconds=elapsed,
        records_acknowledged=acknowledged,
        retries=_integer(summary, "retries"),
        requests_failed=dict(failed) if isinstance(failed, dict) else {"unreadable": 1},
        exit_code=stopped.exit_code,
        accuracy=check_report(scenario, stopped.reports, acknowledged),
    )


@dataclass(frozen=True)
class _Sample:
    moment: float
    peak_rss_bytes: int
    queue_bytes: int | None


def _load_while_sampling(
    server: ServerProcess,
    scenario: MemoryScenario,
    *,
    cwd: Path,
    env: Mapping[str, str],
    deadline_seconds: float,
) -> tuple[dict[str, object], float, list[_Sample]]:
    """Run the sender to its end, reading the server's VmHWM and queue bytes meanwhile."""
    argv = [
        sys.executable, "-m", "bench.memory_load", f"--target=127.0.0.1:{server.grpc_port}",
        f"--scenario={scenario.to_json()}", f"--deadline={deadline_seconds}",
    ]  # fmt: skip
    started = time.monotonic()
    samples: list[_Sample] = []
    with subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as sender:
        try:
            while sender.poll() is None:
                if time.monotonic() - started > deadline_seconds + 60:
                    raise LoadRunFailed(f"the sender of scenario {scenario.name} did not stop")
                samples.append(
                    _Sample(
                        time.monotonic() - started,
                        server.sample().peak_rss_bytes,
                        _scrape(server, QUEUE_BYTES_METRIC),
                    )
                )
                time.sleep(_SAMPLE_SECONDS)
        finally:
            if sender.poll() is None:
                sender.kill()
        stdout, stderr = sender.communicate()
    if sender.returncode != 0:
        raise LoadRunFailed(f"memory sender exited {sender.returncode}: {stderr[-2000:]}")
    try:
        summary = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as error:
        raise LoadRunFailed(f"unreadable memory sender summary: {stdout!r}") from error
    if not isinstance(summary, dict):
        raise LoadRunFailed(f"unreadable memory sender summary: {stdout!r}")
    # The sender's own clock starts at its first request, after its interpreter has loaded.
    elapsed = summary.get("elapsed_seconds")
    wall = time.monotonic() - started
    return summary, float(elapsed) if isinstance(elapsed, int | float) else wall, samples


def _peaks_by_quarter(samples: Sequence[_Sample]) -> tuple[int, int, int, int]:
    end = max(sample.moment for sample in samples)

    def peak_until(share: float) -> int:
        return max((s.peak_rss_bytes for s in samples if s.moment <= end * share), default=0)

    return peak_until(0.25), peak_until(0.5), peak_until(0.75), peak_until(1.0)


def _scrape(server: ServerProcess, metric: str) -> int | None:
    """A gauge from /metrics, or None when it cannot be read (it only informs)."""
    try:
        value = server.scrape_counter(metric)
    except OSError:
        return None
    return None if value is None else int(value)


def _integer(summary: Mapping[str, object], key: str) -> int:
    value = summary.get(key)
    return value if isinstance(value, int) else -1
