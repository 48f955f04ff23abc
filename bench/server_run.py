"""One server's measurement: warm-up, saturation, half-saturation latency, then stop and check."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load_run import LoadFigures, run_load_process
from bench.server_process import ServerProcess
from otlp_stats.loadgen.workload import Workload

COUNTED_METRIC = "otlp_stats_records_counted_total"


@dataclass(frozen=True)
class RunSettings:
    warmup_seconds: float
    saturation_seconds: float
    latency_seconds: float
    saturation_callers: int
    # Enough callers that a slow answer does not hold back the paced sends.
    latency_callers: int


@dataclass(frozen=True)
class ServerRun:
    name: str
    saturation: LoadFigures
    half_rate: LoadFigures
    half_rate_target_rps: float
    cpu_us_per_record: float
    peak_rss_bytes: int
    processes: int
    records_acknowledged: int
    records_reported: int
    window_reports: int
    partial_reports: int
    metric_counted: float | None
    metric_error: str | None
    exit_code: int
    digests_seen: frozenset[str]

    @property
    def totals_match(self) -> bool:
        return self.records_reported == self.records_acknowledged

    @property
    def metric_matches(self) -> bool:
        if self.metric_error is not None:
            return False
        return self.metric_counted is None or self.metric_counted == self.records_acknowledged

    @property
    def passed(self) -> bool:
        return (
            self.totals_match
            and self.metric_matches
            and self.exit_code == 0
            and self.partial_reports >= 1
            and len(self.digests_seen) == 1
        )


def measure_server(
    name: str,
    argv: Sequence[str],
    workload: Workload,
    settings: RunSettings,
    *,
    cwd: Path,
    env: Mapping[str, str],
    loadgen_cwd: Path,
) -> ServerRun:
    with ServerProcess(name, argv, cwd=cwd, env=env) as server:
        server.start()
        target = f"127.0.0.1:{server.grpc_port}"

        def load(duration: float, callers: int, rate: float | None = None) -> LoadFigures:
            return run_load_process(
                target,
                workload,
                duration=duration,
                callers=callers,
                rate=rate,
                cwd=loadgen_cwd,
                env=env,
            )

        warmup = load(settings.warmup_seconds, settings.saturation_callers)
        before = server.sample()
        saturation = load(settings.saturation_seconds, settings.saturation_callers)
        after = server.sample()
        half_rps = saturation.requests_per_second / 2
        half_rate = load(settings.latency_seconds, settings.latency_callers, max(half_rps, 0.5))
        acknowledged = sum(run.records_acknowledged for run in (warmup, saturation, half_rate))
        metric, metric_error = _settled_counter(server, acknowledged)
        peak = server.sample()
        stopped = server.stop()
    return ServerRun(
        name=name,
        saturation=saturation,
        half_rate=half_rate,
        half_rate_target_rps=half_rps,
        cpu_us_per_record=_per_record_us(after.cpu_seconds - before.cpu_seconds, saturation),
        peak_rss_bytes=peak.peak_rss_bytes,
        processes=peak.processes,
        records_acknowledged=acknowledged,
        records_reported=stopped.reported_records,
        window_reports=len(stopped.reports),
        partial_reports=stopped.partial_reports,
        metric_counted=metric,
        metric_error=metric_error,
        exit_code=stopped.exit_code,
        digests_seen=frozenset(run.workload_digest for run in (warmup, saturation, half_rate)),
    )


def _settled_counter(
    server: ServerProcess, expected: int, patience: float = 5.0
) -> tuple[float | None, str | None]:
    """The counted-records metric (given a moment to catch up with queued requests), or why not."""
    deadline = time.monotonic() + patience
    while True:
        try:
            value = server.scrape_counter(COUNTED_METRIC)
        except OSError as error:
            return None, f"scraping /metrics failed: {error}"
        if value is None or value >= expected or time.monotonic() >= deadline:
            return value, None
        time.sleep(0.2)


def _per_record_us(cpu_seconds: float, run: LoadFigures) -> float:
    return cpu_seconds / run.records_acknowledged * 1e6 if run.records_acknowledged else 0.0
