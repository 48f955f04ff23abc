"""`otlp-stats pattern`: lines or OTLP files from stdin or files, each line's final pattern or
the summary, and its exit statuses."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from otlp_stats.cli import pattern
from tests.support.history import write_json_lines, write_proto

LINES = (
    "user alice logged in from 10.0.0.1\n"
    "payment 8812 accepted in 31ms\n"
    "user bob logged in from 10.0.0.2\n"
    "payment 8813 accepted in 29ms\n"
    "user carol logged in from 10.0.0.3\n"
)


def run(argv: list[str], stdin: bytes = b"") -> tuple[int, str]:
    out = io.StringIO()
    status = pattern.main(argv, stdin=io.BytesIO(stdin), out=out)
    return status, out.getvalue()


def test_stdin_lines_get_their_final_pattern_each() -> None:
    status, out = run([], LINES.encode())
    assert status == 0
    assert out.splitlines() == [
        "user <*> logged in from <*>",
        "payment <*> accepted in <*>ms",
        "user <*> logged in from <*>",
        "payment <*> accepted in <*>ms",
        "user <*> logged in from <*>",
    ]


def test_summary_counts_the_patterns_most_frequent_first() -> None:
    status, out = run(["--summary", "-"], LINES.encode())
    assert status == 0
    assert out == "3\tuser <*> logged in from <*>\n2\tpayment <*> accepted in <*>ms\n"


def test_files_and_globs_compressed_or_not_are_read_in_order(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("disk sda is 91% full\n")
    with gzip.open(tmp_path / "b.log.gz", "wt") as f:
        f.write("cache miss for key 7\n")
    status, out = run([str(tmp_path / "*.log*")])
    assert status == 0
    assert out == "disk sda is <*>% full\ncache miss for key <*>\n"


def test_the_order_of_the_input_does_not_change_the_summary() -> None:
    lines = LINES.splitlines(keepends=True)
    assert run(["--summary"], "".join(lines).encode()) == run(
        ["--summary"], "".join(reversed(lines)).encode()
    )


def _request(*bodies: AnyValue) -> ExportLogsServiceRequest:
    records = [LogRecord(body=body) for body in bodies]
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    )


@pytest.mark.parametrize("write", [write_json_lines, write_proto])
def test_otlp_files_give_one_pattern_per_record(tmp_path: Path, write: object) -> None:
    structured = AnyValue(
        kvlist_value=KeyValueList(values=[KeyValue(key="n", value=AnyValue(int_value=3))])
    )
    requests = [
        _request(AnyValue(string_value="took 31ms"), structured),
        _request(AnyValue(string_value="took 29ms")),
    ]
    path = tmp_path / "export.otlp"
    write(path, requests)  # type: ignore[operator]
    status, out = run(["--input-format", "otlp", str(path)])
    assert status == 0
    assert out.splitlines() == ["took <*>ms", "{n:<int>}", "took <*>ms"]


def test_a_file_that_is_not_otlp_fails_with_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"resourceLogs": 7}\n')
    assert run(["--input-format", "otlp", str(path)])[0] == 1


def test_a_missing_input_fails_with_exit_1(tmp_path: Path) -> None:
    assert run([str(tmp_path / "none.log")])[0] == 1


def test_pattern_rules_apply_and_a_bad_rule_file_exits_2_with_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[rules]\ncolour = '\\b(red|blue)\\b'\n")
    assert run(["--pattern-rules", str(good)], b"paint it red\n") == (0, "paint it <*>\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[rules]\nbroken = '[a-'\n")
    result = subprocess.run(
        [sys.executable, "-m", "otlp_stats", "pattern", "--pattern-rules", str(bad)],
        input=b"x\n",
        capture_output=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert "rule 'broken': bad regular expression" in lines[0]


def test_hostile_lines_stay_within_the_bounds_given() -> None:
    lines = b"9" * 100_000 + b"\n" + b"\xff\xfe bad \xc3( line 7\n" + b" w".join([b"x"] * 10_000)
    status, out = run(["--max-pattern-tokens", "5", "--max-pattern-length", "40"], lines)
    assert status == 0
    patterns = out.splitlines()
    assert patterns[0] == "<*>"
    assert patterns[1] == "\ufffd\ufffd bad \ufffd( line <*>"
    assert patterns[2] == "x wx wx wx wx <*>"
    assert all(len(p.encode()) <= 40 for p in patterns)


def test_bounds_below_one_mask_are_bad_usage() -> None:
    with pytest.raises(SystemExit) as exited:
        run(["--max-pattern-length", "2"])
    assert exited.value.code == 2
