"""JSON frames piped through stdin: per-minute distinct uids are the truth.

Scale as the issue states it: 1,000,000 frames, uids drawn from 100,000, timestamps over about
17 minutes with up to 5 s of disorder, through the real command and a real pipe. Sketches of
k = 2^17 keep each minute's ~45,000 distinct uids exact, so the check is equality.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from otlp_stats.cli.main import main

FRAMES = 1_000_000
SPAN_SECONDS = 1_020
START = 1_468_244_384  # the example frame's time
SERVICES = ("web", "api", "worker")


def _frames() -> tuple[bytes, dict[tuple[int, str], set[str]]]:
    rng = random.Random(16)
    truth: dict[tuple[int, str], set[str]] = defaultdict(set)
    lines = []
    for index in range(FRAMES):
        ts = START + index * SPAN_SECONDS // FRAMES - rng.randint(0, 5)
        uid = f"{rng.randrange(100_000):05x}"
        service = SERVICES[rng.randrange(3)]
        truth[ts // 60 * 60, service].add(uid)
        # Not orjson.dumps: each of its results keeps about 4 KiB, 4 GB for a million lines,
        # which stays as this process's peak RSS (and its children's, on Linux).
        lines.append(b'{"ts":%d,"uid":"%s","service":"%s"}' % (ts, uid.encode(), service.encode()))
    return b"\n".join(lines) + b"\n", truth


def test_a_million_frames_through_stdin_give_the_true_distinct_uids_per_minute() -> None:
    payload, truth = _frames()
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "otlp_stats",
            "replay",
            "--input-format",
            "jsonl",
            "--time-field",
            "ts",
            "--value-field",
            "service",
            "--message-field",
            "uid",
            "--window",
            "60",
            "--sketch-lg-k",
            "17",
            "--report-format",
            "json",
        ],
        input=payload,
        capture_output=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode()
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert {r["attribute_key"] for r in reports} == {"service"}
    seen = {}
    for report in reports:
        start = int(
            time.mktime(time.strptime(report["window_start"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        )
        for value in report["values"]:
            assert not value["estimated"]
            seen[start, value["value"]] = (value["distinct_messages"], value["records"])
    assert {key: n for key, (n, _) in seen.items()} == {k: len(v) for k, v in truth.items()}
    assert sum(records for _, records in seen.values()) == FRAMES
    summary = done.stderr.decode().strip().splitlines()[-1]
    assert summary.startswith(f"replayed 1 input: {FRAMES} records in {len(reports)} windows")
    assert "0 late (0 rejected), 0 malformed skipped" in summary
    assert elapsed < 30


def _replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["replay", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


JSONL = ("--input-format", "jsonl", "--value-field", "svc", "--message-field", "msg.text")


def test_a_malformed_line_is_named_by_file_and_line_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "frames.jsonl"
    path.write_text(
        '{"ts": 1700000000, "svc": "a", "msg": {"text": "x"}}\n'
        "{not json\n"
        '{"ts": 1700000001, "svc": "a", "msg": {"text": "y"}}\n'
        '{"svc": "a", "msg": {"text": "z"}}\n'
        "[1, 2]\n"
        "\n"
        '{"ts": 1700000002, "svc": "b", "msg": {"text": "x"}}\n'
    )
    status, out, err = _replay(capsys, *JSONL, "--report-format", "json", str(path))
    assert status == 0
    assert f"{path}:2: not JSON" in err
    assert f"{path}:4: ts: missing" in err
    assert f"{path}:5: not a JSON object" in err
    assert "Traceback" not in err
    assert "3 records in 1 windows, 0 late (0 rejected), 3 malformed skipped" in err
    (report,) = [json.loads(line) for line in out.splitlines()]
    assert report["attribute_key"] == "svc"
    assert {v["value"]: v["distinct_messages"] for v in report["values"]} == {"a": 2, "b": 1}
    assert report["distinct_messages"] == 2


def test_strict_stops_at_the_first_malformed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "frames.jsonl"
    path.write_text('{"ts": 1700000000, "svc": "a", "msg": {"text": "x"}}\n{oops\n')
    status, _, err = _replay(capsys, *JSONL, "--strict", str(path))
    assert status == 1
    assert f"{path}:2: not JSON" in err and "--strict" in err


@pytest.mark.parametrize(
    ("times", "unit"),
    [
        ((1_700_000_000, 1_700_000_030), "auto"),
        ((1_700_000_000_000, 1_700_000_030_000), "auto"),
        ((1_700_000_000_000_000_000, 1_700_000_030_000_000_000), "auto"),
        ((1_700_000_000.25, 1_700_000_030.5), "auto"),
        (("2023-11-14T22:13:20Z", "2023-11-14T22:13:50+00:00"), "auto"),
        ((1_700_000_000_000_000, 1_700_000_030_000_000), "us"),
    ],
)
def test_times_in_any_unit_land_in_the_same_window(
    times: tuple[object, object], unit: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "frames.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps({"ts": ts, "svc": "a", "msg": {"text": str(ts)}}) + b"\n" for ts in times
        )
    )
    status, out, err = _replay(
        capsys, *JSONL, "--time-unit", unit, "--window", "60", "--report-format", "json", str(path)
    )
    assert status == 0, err
    (report,) = [json.loads(line) for line in out.splitlines()]
    assert report["window_start"] == "2023-11-14T22:13:00Z"
    assert report["records"] == 2


def test_records_later_than_the_lateness_are_counted_as_late(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "frames.jsonl"
    rows = [(1_700_000_000, "x"), (1_700_000_200, "y"), (1_700_000_001, "late")]
    path.write_bytes(
        b"".join(
            orjson.dumps({"ts": ts, "svc": "a", "msg": {"text": text}}) + b"\n" for ts, text in rows
        )
    )
    # The third line's window ended more than the lateness before the second line's time.
    status, _, err = _replay(capsys, *JSONL, "--window", "60", "--allowed-lateness", "5", str(path))
    assert status == 0
    assert "2 records in 2 windows, 1 late (1 rejected)" in err
