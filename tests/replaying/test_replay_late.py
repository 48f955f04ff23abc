"""Late records in a replay: merged into their stored windows with a store, rejected without.

The history: one request an hour for forty days, 6 records each, two-hour windows; every
fifth request held back and written at the end of the file, days after the windows it belongs
to have closed (late by far more than --allowed-lateness), more late windows than replay
gathers before it merges them. The other hour of each such window comes in order, so every
window with late records was stored and reported without them.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.cli.main import main
from tests.support.history import history_requests, write_proto

DAY = 86_400
WINDOW = 7200
RETENTION = "window=60d,1d=800d,1mo=36mo"
# Every HELD_BACK-th request is moved to the end of the file (but those of the last hours,
# whose windows are still open when the held-back ones come).
HELD_BACK = 5

# (resolution, period start, service) -> distinct bodies, and records.
PeriodTruth = tuple[dict[tuple[str, float, str], set[str]], dict[tuple[str, float, str], int]]


def _forty_days() -> tuple[float, float]:
    today = math.floor(time.time() / DAY) * DAY
    return today - 40 * DAY, today - DAY


def _held_back(requests: list[ExportLogsServiceRequest], n: int) -> bool:
    return n % HELD_BACK == 0 and n < len(requests) - HELD_BACK


def _out_of_order(requests: list[ExportLogsServiceRequest]) -> list[ExportLogsServiceRequest]:
    in_order = [r for n, r in enumerate(requests) if not _held_back(requests, n)]
    held = [r for n, r in enumerate(requests) if _held_back(requests, n)]
    return in_order + held


def _truth(requests: list[ExportLogsServiceRequest]) -> PeriodTruth:
    """Per window and per UTC day, per service: distinct bodies and records."""
    bodies: dict[tuple[str, float, str], set[str]] = defaultdict(set)
    records: dict[tuple[str, float, str], int] = defaultdict(int)
    for request in requests:
        for resource in request.resource_logs:
            service = resource.resource.attributes[0].value.string_value
            for record in resource.scope_logs[0].log_records:
                seconds = record.time_unix_nano / 1e9
                for resolution, length in (("window", WINDOW), ("1d", DAY)):
                    key = (resolution, seconds // length * length, service)
                    bodies[key].add(record.body.string_value)
                    records[key] += 1
    return bodies, records


def _held_back_records(requests: list[ExportLogsServiceRequest]) -> int:
    return sum(
        len(r.resource_logs[0].scope_logs[0].log_records)
        for n, r in enumerate(requests)
        if _held_back(requests, n)
    )


def _query(
    capsys: pytest.CaptureFixture[str], store: str, resolution: str, first: float, last: float
) -> dict[str, object]:
    status = main(
        [
            *("query", "--store", store, "--retention", RETENTION, "--window", str(WINDOW)),
            *("--resolution", resolution, "--json"),
            *("--from", _stamp(first), "--to", _stamp(last)),
        ]
    )
    assert status == 0, capsys.readouterr().err
    answer: dict[str, object] = json.loads(capsys.readouterr().out)
    return answer


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _assert_stored_equal_truth(
    answer: dict[str, object], truth: PeriodTruth, resolution: str
) -> int:
    """Every value of every period is the truth's, exactly; returns the periods stored."""
    bodies, records = truth
    periods = {p["period_start"]: p for p in answer["periods"]}  # type: ignore[attr-defined]
    checked = 0
    for (res, start, service), distinct in bodies.items():
        if res != resolution:
            continue
        stamp = _stamp(start)
        assert stamp in periods, f"{resolution} {stamp} missing"
        values = {v["value"]: v for v in periods[stamp]["values"]}
        assert values[service]["records"] == records[res, start, service], (stamp, service)
        assert not values[service]["estimated"]
        assert values[service]["distinct_messages"] == len(distinct), (stamp, service)
        checked += 1
    # No period holds a value the truth does not.
    stored = sum(len(p["values"]) for p in periods.values())
    assert stored == checked
    return len(periods)


def _replay(capsys: pytest.CaptureFixture[str], path: Path, store: str) -> tuple[int, str, str]:
    status = main(
        [
            *("replay", str(path), "--store", store, "--window", str(WINDOW)),
            *("--retention", RETENTION, "--report-format", "json"),
        ]
    )
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_records_far_out_of_order_merge_into_their_stored_windows_and_day_rollups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    first, last = _forty_days()
    requests, _ = history_requests(first, last, per_hour=6, seed=16)
    path = tmp_path / "late.pb.zst"
    write_proto(path, _out_of_order(requests))
    truth = _truth(requests)
    late = _held_back_records(requests)
    store = store_url

    status, out, err = _replay(capsys, path, store)

    assert status == 0, err
    total = sum(n for (res, _, _), n in truth[1].items() if res == "1d")
    # On time: counted in their windows as they were read; the rest merged into them later.
    assert f"replayed 1 input: {total - late} records" in err
    assert f"{late} late ({late} merged, 0 rejected, " in err
    reports = [json.loads(line) for line in out.splitlines()]
    first_reports = [r for r in reports if r["revision"] == 1]
    revisions = [r for r in reports if r["revision"] > 1]
    # Each held-back request's window was reported without it, then revised with it, once.
    assert sum(r["records"] for r in first_reports) == total - late
    held = sum(_held_back(requests, n) for n in range(len(requests)))
    assert len(revisions) == held
    assert {r["revision"] for r in revisions} == {2}
    for revision in revisions:
        start = datetime.fromisoformat(revision["window_start"].replace("Z", "+00:00"))
        key = start.timestamp()
        assert revision["records"] == sum(
            n for (res, s, _), n in truth[1].items() if res == "window" and s == key
        )
    assert (
        _assert_stored_equal_truth(
            _query(capsys, store, "window", first, last + DAY), truth, "window"
        )
        == len(requests) // 2
    )
    days = _query(capsys, store, "1d", first, last)
    assert _assert_stored_equal_truth(days, truth, "1d") == round((last - first) / DAY)


def test_without_a_store_late_records_are_rejected_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = _forty_days()
    requests, _ = history_requests(first, first + 2 * DAY, per_hour=6, seed=16)
    path = tmp_path / "late.pb.zst"
    write_proto(path, _out_of_order(requests))
    late = _held_back_records(requests)

    status = main(["replay", str(path), "--window", str(WINDOW), "--report-format", "json"])

    err = capsys.readouterr().err
    assert status == 0, err
    assert f"{late} late ({late} rejected), 0 malformed skipped" in err
