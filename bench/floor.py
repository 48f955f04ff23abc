"""In-process CPU cost per record: the bare decode floor and the baseline's counting loop."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench.baseline_server import BaselineCounter
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import NATIVE_AVAILABLE, NativeScanner, Scanner, ViewScanner
from otlp_stats.loadgen import PreparedRequest

_ROUNDS = 5


@dataclass(frozen=True)
class CpuPerRecord:
    """Median over rounds, with the spread, in CPU microseconds per record."""

    median_us: float
    low_us: float
    high_us: float


def measure_decode_floor(requests: Sequence[PreparedRequest], cpu_seconds: float) -> CpuPerRecord:
    """`ExportLogsServiceRequest.FromString` alone, nothing read from the result."""
    decode = ExportLogsServiceRequest.FromString

    def one_pass() -> None:
        for request in requests:
            decode(request.payload)

    return _measure(one_pass, sum(request.records for request in requests), cpu_seconds)


def measure_baseline_counting(
    requests: Sequence[PreparedRequest], attribute_key: str, cpu_seconds: float
) -> CpuPerRecord:
    """The baseline server's decode-and-count work without gRPC around it."""
    decode = ExportLogsServiceRequest.FromString
    counter = BaselineCounter(attribute_key)

    def one_pass() -> None:
        for request in requests:
            counter.count(decode(request.payload))

    return _measure(one_pass, sum(request.records for request in requests), cpu_seconds)


def measure_scanners(
    requests: Sequence[PreparedRequest], attribute_key: str, cpu_seconds: float
) -> dict[str, CpuPerRecord]:
    """The service's per-record work without gRPC around it: check, then tally, per scanner."""
    scanners: list[Scanner] = [ViewScanner(attribute_key)]
    if NATIVE_AVAILABLE:
        scanners.insert(0, NativeScanner(attribute_key))
    records = sum(request.records for request in requests)
    figures = {}
    for scanner in scanners:
        labels = LabelRenderer()

        def one_pass(scanner: Scanner = scanner, labels: LabelRenderer = labels) -> None:
            for request in requests:
                scanner.tally(scanner.check(request.payload), labels)

        figures[scanner.name] = _measure(one_pass, records, cpu_seconds)
    return figures


def _measure(
    one_pass: Callable[[], None], records_per_pass: int, cpu_seconds: float
) -> CpuPerRecord:
    # process_time, not wall time: on a shared machine a stolen time slice is not our cost.
    one_pass()  # warm caches and lazily built protobuf descriptors outside the clock
    samples = []
    for _ in range(_ROUNDS):
        passes = 0
        started = time.process_time()
        while (spent := time.process_time() - started) < cpu_seconds / _ROUNDS:
            one_pass()
            passes += 1
        samples.append(spent / (passes * records_per_pass) * 1e6)
    return CpuPerRecord(statistics.median(samples), min(samples), max(samples))
