"""Reliability under load: nothing acknowledged is lost or counted twice, overload or shutdown.

The load generator (otlp_stats.loadgen) keeps the ground truth of what was acknowledged; the
reports the service prints must add up to exactly that. Workers are slowed
(tests.support.slowed_service) so the service's capacity is known and small whatever this
machine's speed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from typing import Any

import pytest

from tests.support.servicetools import REPO, ServiceProcess, totals_by_value
from tests.support.slowed_service import running_slowed_service

KEY = "service.name"
# One worker holding each request 10 ms: about 100 requests per second.
HOLD_SECONDS = 0.01
CAPACITY_RPS = 100
QUEUE_SIZE = 8


def loadgen(service: ServiceProcess, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otlp_stats.loadgen",
            f"--target={service.grpc_target}",
            "--truth",
            "--records-per-request=20",
            "--values=6",
            "--pool=16",
            "--timeout=5",
            *flags,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def summary_of_run(process: subprocess.Popen[str], timeout: float = 90) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    summary: dict[str, Any] = json.loads(out)
    return summary


def truth_by_value(summary: dict[str, Any]) -> dict[tuple[str, bool], int]:
    return {
        (entry["value"] or "unknown", entry["missing"]): entry["records"]
        for entry in summary["truth"]
        if entry["records"]
    }


def distinct_by_value(reports: list[dict[str, Any]]) -> dict[tuple[str, bool], int]:
    assert len(reports) == 1, "one window expected"
    return {(e["value"], e["missing"]): e["distinct_messages"] for e in reports[0]["values"]}


def slowed_service(*flags: str) -> AbstractContextManager[ServiceProcess]:
    return running_slowed_service(HOLD_SECONDS, "--retry-delay=0.05", *flags, queue_size=QUEUE_SIZE)


def test_twice_the_capacity_with_retrying_senders_loses_nothing_and_counts_nothing_twice() -> None:
    with slowed_service() as service:
        run = loadgen(
            service,
            "--retry",
            "--max-attempts=500",
            "--callers=16",
            f"--rate={2 * CAPACITY_RPS}",
            "--requests=400",
        )
        deepest = 0.0
        while run.poll() is None:  # how the queue behaves while overloaded
            deepest = max(deepest, service.metric("otlp_stats_queue_requests") or 0.0)
            time.sleep(0.05)
        summary = summary_of_run(run)
        assert summary["requests_ok"] == 400, summary
        assert deepest <= QUEUE_SIZE, "the queue outgrew its bound"
        refused = service.metric(
            "otlp_stats_export_refused_total", {"transport": "grpc", "reason": "queue_requests"}
        )
        assert refused is not None and refused > 0, "never overloaded: the test proves nothing"
        assert service.stop() == 0
        reports = service.all_reports()
    assert totals_by_value(reports) == truth_by_value(summary)
    truth_distinct = {
        (e["value"] or "unknown", e["missing"]): e["distinct_messages"] for e in summary["truth"]
    }
    assert distinct_by_value(reports) == truth_distinct
    print(json.dumps({"refused": refused, "retries": summary["retries"], "deepest": deepest}))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_under_load_reports_every_acknowledged_record_and_exits_0(sig: int) -> None:
    with slowed_service("--shutdown-grace=10") as service:
        # No retry: what the service refuses while draining is final, and not in the truth.
        run = loadgen(service, "--callers=8", "--duration=4")
        deadline = time.monotonic() + 20
        while (
            service.metric("otlp_stats_records_accepted_total", {"transport": "grpc"}) or 0
        ) < 200:
            assert time.monotonic() < deadline, "load never arrived"
            time.sleep(0.05)
        queued = service.metric("otlp_stats_queue_requests")
        signalled = time.monotonic()
        assert service.stop(sig) == 0
        assert time.monotonic() - signalled < 10, "not within the shutdown grace"
        reports = service.all_reports()
        summary = summary_of_run(run)
    assert reports[-1]["partial"] is True
    assert totals_by_value(reports) == truth_by_value(summary)
    late = {**summary["requests_refused"], **summary["requests_failed"]}
    assert "UNAVAILABLE" in late, summary  # refused while draining, or the port was gone
    print(json.dumps({"queued_at_signal": queued, "late": late}))
