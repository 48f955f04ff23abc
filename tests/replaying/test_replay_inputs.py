"""Inputs and the ledger: compression from the bytes, the exporter's framings, once per store."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from otlp_stats.cli.main import main
from otlp_stats.counting.aggregator import Aggregator, LabelTally
from tests.support.history import (
    history_requests,
    proto_frames,
    write_json_lines,
    write_proto,
    write_proto_compressed_each,
)

FIRST = 1_767_225_600.0  # 2026-01-01
REQUESTS, TRUTH = history_requests(FIRST, FIRST + 48 * 3600, per_hour=5)
RECORDS = 48 * 5


def _replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["replay", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    "writer",
    [write_json_lines, write_proto, write_proto_compressed_each],
    ids=["json-gzip", "proto-zstd", "proto-each-message-zstd"],
)
def test_every_file_exporter_framing_and_compression_counts_every_record(
    writer: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs"
    writer(path, REQUESTS)  # type: ignore[operator]
    status, out, err = _replay(capsys, str(path), "--window", "3600", "--report-format", "json")
    assert status == 0, err
    assert f"{RECORDS} records" in err
    assert sum(json.loads(line)["records"] for line in out.splitlines()) == RECORDS


def test_uncompressed_json_lines_and_globs_in_name_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gz = tmp_path / "a.gz"
    write_json_lines(gz, REQUESTS[:24])
    (tmp_path / "a.json").write_bytes(gzip.decompress(gz.read_bytes()))
    write_proto(tmp_path / "b.json", REQUESTS[24:])  # the name says nothing: the bytes do
    gz.unlink()
    status, _, err = _replay(capsys, str(tmp_path / "*.json"), "--window", "3600")
    assert status == 0, err
    assert f"replayed 2 inputs: {RECORDS} records" in err


def test_a_malformed_request_is_named_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gz = tmp_path / "x.gz"
    write_json_lines(gz, REQUESTS[:2])
    lines = gzip.decompress(gz.read_bytes()).splitlines()
    path = tmp_path / "logs.json"
    path.write_bytes(lines[0] + b"\n" + b'{"resourceLogs": 7}\n' + lines[1] + b"\n")
    status, _, err = _replay(capsys, str(path))
    assert status == 0
    assert f"{path}:2: " in err and "Traceback" not in err
    assert "10 records" in err and "1 malformed skipped" in err


def test_a_truncated_proto_file_says_where_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs.pb"
    path.write_bytes(b"".join(proto_frames(REQUESTS[:3]))[:-7])
    status, _, err = _replay(capsys, str(path))
    assert status == 1
    assert "message 3" in err and "truncated" in err and "Traceback" not in err


def test_replaying_the_same_input_twice_into_a_store_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    path = tmp_path / "logs.json.gz"
    write_json_lines(path, REQUESTS)
    store = store_url
    assert _replay(capsys, str(path), "--store", store)[0] == 0
    copy = tmp_path / "renamed.gz"
    copy.write_bytes(path.read_bytes())
    status, out, err = _replay(capsys, str(copy), "--store", store)
    assert status == 3
    assert out == ""
    assert f"{copy} was already replayed into {store} (as {path}" in err
    assert f"finished, {RECORDS} records" in err and "--force" in err
    assert _replay(capsys, str(copy), "--store", store, "--force")[0] == 0


def test_stdin_into_a_store_is_spooled_so_the_ledger_knows_it(tmp_path: Path) -> None:
    path = tmp_path / "logs.pb.zst"
    write_proto(path, REQUESTS)
    store = f"sqlite:///{tmp_path / 'state.db'}"
    command = [sys.executable, "-m", "otlp_stats", "replay", "--store", store, "-"]
    first = subprocess.run(command, input=path.read_bytes(), capture_output=True, check=False)
    assert first.returncode == 0, first.stderr.decode()
    assert f"{RECORDS} records" in first.stderr.decode()
    again = subprocess.run(command, input=path.read_bytes(), capture_output=True, check=False)
    assert again.returncode == 3
    assert "<stdin> was already replayed" in again.stderr.decode()


def test_closing_without_heartbeats_skips_the_empty_windows_at_once() -> None:
    aggregator = Aggregator(10, 0.0, lateness=5)
    aggregator.add_windows(0, {100: {"a": LabelTally.of_hashes([1])}})
    aggregator.add_windows(0, {10**9: {"a": LabelTally.of_hashes([2])}})
    assert [r.start for r in aggregator.close_until(10**10 + 4, empty=False)] == [1000]
    assert [r.start for r in aggregator.close_until(10**10 + 15, empty=False)] == [10**10]
    late = aggregator.add_windows(10**10 + 15, {10**9: {"a": LabelTally.of_hashes([3])}})
    assert late.late_records == 1


def test_replay_takes_report_top(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One minute of frames: service sN has N + 1 distinct uids, so s9 leads and s0 trails.
    frames = [
        json.dumps({"ts": 1_767_225_600 + 5, "uid": f"u{uid}", "service": f"s{service}"})
        for service in range(10)
        for uid in range(service + 1)
    ]
    path = tmp_path / "frames.jsonl"
    path.write_text("\n".join(frames) + "\n")
    argv = [str(path), "--input-format", "jsonl", "--time-field", "ts", "--value-field"]
    argv += ["service", "--message-field", "uid", "--window", "60", "--report-format", "json"]
    status, out, err = _replay(capsys, *argv, "--report-top", "3")
    assert status == 0, err
    [report] = [json.loads(line) for line in out.splitlines()]
    assert [entry["value"] for entry in report["values"]] == ["s9", "s8", "s7"]
    assert report["more_values"] == {"values": 7, "records": sum(range(1, 8))}
    assert report["records"] == len(frames)


def test_several_keys_replay_one_report_per_key_per_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs"
    write_proto(path, REQUESTS)
    argv = ["--window", "3600", "--report-format", "json"]
    argv += ["--attribute-key", "service.name", "--attribute-key", "k8s.namespace.name"]
    status, out, err = _replay(capsys, str(path), *argv)
    assert status == 0, err
    reports = [json.loads(line) for line in out.splitlines()]
    # The records are counted once (the summary), and each key's reports hold them all.
    assert f"{RECORDS} records in {len(reports) // 2} windows" in err
    services, namespaces = reports[0::2], reports[1::2]
    assert {r["attribute_key"] for r in services} == {"service.name"}
    assert {r["attribute_key"] for r in namespaces} == {"k8s.namespace.name"}
    assert [r["window_start"] for r in services] == [r["window_start"] for r in namespaces]
    assert sum(r["records"] for r in services) == sum(r["records"] for r in namespaces) == RECORDS
    # No request names a namespace: every record is in its missing bucket.
    assert all(v["missing"] for r in namespaces for v in r["values"])
    assert all(not v["missing"] for r in services for v in r["values"])
