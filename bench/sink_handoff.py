"""CPU a report costs the reporter's loop, stdout alone against stdout plus a sink.

    python -m bench.sink_handoff [--values 10000] [--rounds 5] [--reports 50]

The sink's own delivery runs on the sinks' thread and is not counted: only what the loop that
counts pays to hand the report on (rendering its JSON once, queueing it). Rounds interleave the
configurations so the machine's noise falls on each alike; the median per configuration is shown.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry

from otlp_stats.clock import SystemClock
from otlp_stats.counting.aggregator import Aggregator, ValueReport, WindowReport
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.counting.sketches import DistinctEstimate
from otlp_stats.reporting.reporter import Reporter
from otlp_stats.reporting.sinks.build import open_sinks
from otlp_stats.telemetry import Metrics

CONFIGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    *(("json", ("stdout",)), ("json", ("stdout", "file"))),
    *(("text", ("stdout",)), ("text", ("stdout", "file"))),
)


def _report(values: int) -> WindowReport:
    entries = tuple(
        ValueReport(f"service-{n:05d}", DistinctEstimate.exact(n % 97 + 1), n % 1000 + 1)
        for n in range(values)
    )
    return WindowReport(0.0, 10.0, False, sum(e.records for e in entries),
                        DistinctEstimate.exact(values), entries)  # fmt: skip


def _cpu_per_report(report_format: str, sinks: tuple[str, ...], report: WindowReport,
                    reports: int, directory: Path) -> float:  # fmt: skip
    uris = [
        f"file://{directory / 'r.jsonl'}?max_bytes=1000000" if s == "file" else s for s in sinks
    ]
    report_sinks = open_sinks(uris, structlog.get_logger("bench"), queue_size=reports)
    reporter = Reporter(
        Aggregator(10, 0.0), RequestQueue(1, 1), SystemClock(), io.StringIO(),
        Metrics(CollectorRegistry()), "service.name", "unknown", report_format, sinks=report_sinks,
    )  # fmt: skip
    report_sinks.start()
    started = time.thread_time()
    for _ in range(reports):
        reporter.print_report(report)
    spent = time.thread_time() - started
    report_sinks.close(30.0)
    return spent / reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reports", type=int, default=50)
    args = parser.parse_args()
    report = _report(args.values)
    spent: dict[tuple[str, tuple[str, ...]], list[float]] = {config: [] for config in CONFIGS}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.rounds):
            for config in CONFIGS:
                spent[config].append(
                    _cpu_per_report(*config, report, args.reports, Path(directory))
                )
    print(f"reporter-thread CPU per report of {args.values} values (median of {args.rounds})")
    for (report_format, sinks), seconds in spent.items():
        print(
            f"  {report_format:4}  {'+'.join(sinks):12}  {statistics.median(seconds) * 1e3:7.2f} ms"
        )


if __name__ == "__main__":
    main()
