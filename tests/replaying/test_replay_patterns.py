"""Replay counts patterns as the live service does: from OTLP files through the scanners, and
from JSON lines through their frames, each value's distinct and top patterns in its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otlp_stats.cli.main import main
from tests.support.fakes import export_request, log_record
from tests.support.history import write_proto

START = 1_767_225_600  # 2026-01-01
MESSAGES = [
    *(f"payment {n} accepted in {n % 97}ms" for n in range(30)),
    *(f"user {name} logged in from 10.0.0.{n}" for n, name in enumerate(["ann", "bob"] * 5)),
    "disk full",
]
EXPECTED_TOP = [
    {
        "pattern": "payment <*> accepted in <*>ms",
        "records": 30,
        "example": "payment 0 accepted in 0ms",
    },
    {
        "pattern": "user <*> logged in from <*>",
        "records": 10,
        "example": "user ann logged in from 10.0.0.0",
    },
    {"pattern": "disk full", "records": 1, "example": "disk full"},
]


def only_value(out: str) -> dict[str, object]:
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    values = [value for report in reports for value in report["values"] if value["records"]]
    assert len(values) == 1, values
    value: dict[str, object] = values[0]
    return value


def test_an_otlp_file_replayed_reports_each_values_patterns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [log_record(text) for text in MESSAGES]
    for record in records:
        record.time_unix_nano = (START + 1) * 10**9
    path = tmp_path / "logs.pb.zst"
    write_proto(path, [export_request(records, resource={"service.name": "checkout"})])
    assert main(["replay", "--window", "60", "--report-format", "json", str(path)]) == 0
    value = only_value(capsys.readouterr().out)
    assert (value["value"], value["records"]) == ("checkout", len(MESSAGES))
    assert value["distinct_patterns"] == 3
    assert value["top_patterns"] == EXPECTED_TOP


def test_json_lines_replayed_report_their_messages_patterns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "frames.jsonl"
    lines = [json.dumps({"ts": START + 1, "svc": "checkout", "msg": text}) for text in MESSAGES]
    path.write_text("\n".join(lines) + "\n")
    argv = [
        "replay", "--input-format", "jsonl", "--time-field", "ts", "--value-field", "svc",
        "--message-field", "msg", "--window", "60", "--report-format", "json", str(path),
    ]  # fmt: skip
    assert main(argv) == 0
    value = only_value(capsys.readouterr().out)
    assert value["distinct_patterns"] == 3
    assert value["top_patterns"] == EXPECTED_TOP
    assert main([*argv[:-1], "--count-patterns", "false", str(path)]) == 0
    assert "top_patterns" not in only_value(capsys.readouterr().out)


# Cut at --max-pattern-tokens 4, at --max-pattern-length 24, at both, at neither.
CUT_MESSAGES = ["a b c d e f", "x" * 30 + " y", "alpha beta gamma delta epsilon", "disk full"]
CUT_SUMMARY = "patterns cut: 4 records at --max-pattern-tokens, 4 at --max-pattern-length"


def test_a_replay_says_how_many_records_patterns_were_cut_at_each_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bounds = ["--max-pattern-tokens", "4", "--max-pattern-length", "24"]
    records = [log_record(text) for text in CUT_MESSAGES * 2]
    for record in records:
        record.time_unix_nano = (START + 1) * 10**9
    otlp = tmp_path / "logs.pb.zst"
    write_proto(otlp, [export_request(records, resource={"service.name": "checkout"})])
    assert main(["replay", "--window", "60", *bounds, str(otlp)]) == 0
    assert CUT_SUMMARY in capsys.readouterr().err
    frames = tmp_path / "frames.jsonl"
    lines = [json.dumps({"ts": START + 1, "svc": "a", "msg": text}) for text in CUT_MESSAGES * 2]
    frames.write_text("\n".join(lines) + "\n")
    argv = [
        "replay", "--input-format", "jsonl", "--time-field", "ts", "--value-field", "svc",
        "--message-field", "msg", "--window", "60", *bounds, str(frames),
    ]  # fmt: skip
    assert main(argv) == 0
    assert CUT_SUMMARY in capsys.readouterr().err
    # Nothing cut, nothing said.
    assert main([*argv[:-5], str(frames)]) == 0
    assert "patterns cut" not in capsys.readouterr().err
