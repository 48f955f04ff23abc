"""Two years of history replayed into SQLite: the day and month rollups equal the truth.

Scale: one request an hour for 730 days, 6 records each (105,120 records, 4 services, half the
bodies repeated, half fresh), one-hour windows; each format replays in a few seconds here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from otlp_stats.cli.main import main
from tests.support.history import (
    Truth,
    history_requests,
    write_json_lines,
    write_proto,
)

DAY = 86_400
# Long enough to keep two years of days and months: replayed history is kept by the same
# retention as live counts, counted back from now.
RETENTION = "1d=800d,1mo=36mo"


def _two_years() -> tuple[float, float]:
    today = math.floor(time.time() / DAY) * DAY
    return today - 730 * DAY, today - DAY


@pytest.fixture(scope="module")
def history() -> tuple[list[object], Truth]:
    first, last = _two_years()
    return history_requests(first, last, per_hour=6)  # type: ignore[return-value]


def _replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["replay", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _query(
    capsys: pytest.CaptureFixture[str],
    store: str,
    resolution: str,
    first: float,
    last: float,
    lg_k: str,
) -> dict[str, object]:
    status = main(
        [
            "query",
            "--store",
            store,
            "--retention",
            RETENTION,
            "--resolution",
            resolution,
            "--from",
            _day(first),
            "--to",
            _day(last),
            "--sketch-lg-k",
            lg_k,
            "--json",
        ]
    )
    assert status == 0
    answer: dict[str, object] = json.loads(capsys.readouterr().out)
    return answer


def _day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d")


def _assert_periods_match(answer: dict[str, object], truth: Truth, resolution: str) -> int:
    """Every period and service of the truth is in the answer, exact or within its bounds."""
    periods = {p["period_start"]: p for p in answer["periods"]}  # type: ignore[attr-defined]
    estimated = outside = 0
    checked = 0
    for (res, start, service), bodies in truth.bodies.items():
        if res != resolution:
            continue
        stamp = datetime.fromtimestamp(start, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert stamp in periods, f"{resolution} {stamp} missing"
        values = {v["value"]: v for v in periods[stamp]["values"]}
        entry = values[service]
        assert entry["records"] == truth.records[res, start, service], (stamp, service)
        if entry["estimated"]:
            # The bounds are two standard deviations (95%): of a hundred figures, some fall
            # outside. Each must be within three (the bounds widened by half), and at most a
            # tenth outside the printed ones.
            estimated += 1
            error = abs(len(bodies) - entry["distinct_messages"])
            spread = max(
                entry["upper_bound"] - entry["distinct_messages"],
                entry["distinct_messages"] - entry["lower_bound"],
            )
            assert error <= 1.5 * spread, (stamp, service, len(bodies), entry)
            outside += not entry["lower_bound"] <= len(bodies) <= entry["upper_bound"]
        else:
            assert entry["distinct_messages"] == len(bodies), (stamp, service)
        checked += 1
    assert checked > 0
    assert outside <= estimated / 10, f"{outside} of {estimated} estimates outside their bounds"
    return estimated


# The proto replay counts in smaller sketches (k = 256), so that its months (about 600
# distinct bodies per service) are estimates while its days stay exact: both regimes checked.
WRITERS: dict[str, tuple[str, Callable[[Path, Sequence[object]], None], str]] = {
    "json-gzip": ("history.json.gz", write_json_lines, "12"),  # type: ignore[dict-item]
    "proto-zstd": ("history.pb.zst", write_proto, "8"),  # type: ignore[dict-item]
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_two_years_replayed_give_the_true_day_and_month_rollups(
    kind: str,
    history: tuple[list[object], Truth],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests, truth = history
    name, write, lg_k = WRITERS[kind]
    path = tmp_path / name
    write(path, requests)
    store = f"sqlite:///{tmp_path / 'state.db'}"
    started = time.monotonic()
    status, out, err = _replay(
        capsys,
        str(path),
        "--store",
        store,
        "--window",
        "3600",
        "--retention",
        RETENTION,
        "--report-format",
        "json",
        "--sketch-lg-k",
        lg_k,
    )
    elapsed = time.monotonic() - started
    assert status == 0, err
    total = sum(n for (res, _, _), n in truth.records.items() if res == "1mo")
    assert f"replayed 1 input: {total} records" in err
    assert "0 late" in err and "0 malformed" in err
    reports = [json.loads(line) for line in out.splitlines()]
    assert sum(r["records"] for r in reports) == total
    assert all(r["window_time"] == "event" and not r["partial"] for r in reports)
    assert [r["window_start"] for r in reports] == sorted(r["window_start"] for r in reports)

    first, last = _two_years()
    days = _query(capsys, store, "1d", first, last, lg_k)
    assert _assert_periods_match(days, truth, "1d") == 0
    months = _query(capsys, store, "1mo", first - 31 * DAY, last, lg_k)
    estimated = _assert_periods_match(months, truth, "1mo")
    # Every full month of every service is an estimate at k = 256; none at the default.
    assert estimated == 0 if lg_k == "12" else estimated >= 4 * 23
    assert elapsed < 30, f"replay took {elapsed:.1f} s"
