"""Sinks in the real service and in replay: the last partial report reaches them at SIGTERM,
a dead sink does not hold the stop beyond its grace, a bad sink URI stops the start."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import cast

import pytest
import redis
import structlog

from otlp_stats.cli.main import main
from tests.support.fakes import export_request, log_record
from tests.support.redistools import RedisServer, free_port
from tests.support.servicetools import REPO, ServiceProcess


def post_logs(service: ServiceProcess, *services: str) -> None:
    request = export_request(
        [log_record(f"message {n}", **{"service.name": name}) for n, name in enumerate(services)]
    )
    sent = urllib.request.Request(
        f"{service.http_url}/v1/logs",
        request.SerializeToString(),
        {"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with urllib.request.urlopen(sent, timeout=10) as answer:
        assert answer.status == 200


def stdout_lines(service: ServiceProcess) -> list[str]:
    service.all_reports()  # waits for the output to end
    return [line.strip() for line in service.stdout.lines if line.strip()]


def test_the_final_partial_report_reaches_every_sink_at_sigterm(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    path = tmp_path / "reports.jsonl"
    service = ServiceProcess(
        *("--window", "3600", "--report-sink", "stdout", "--report-sink", f"file://{path}"),
        *("--report-sink", f"redis-stream://127.0.0.1:{server.port}/0?stream=reports"),
    )
    try:
        service.wait_serving()
        post_logs(service, "a", "b", "a")
        assert service.stop() == 0
        printed = stdout_lines(service)
        client = redis.Redis.from_url(server.url)
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange("reports"))
        client.close()
    finally:
        service.stop()
        server.stop()
    (last,) = printed
    assert '"partial":true' in last and '"records":3' in last
    assert path.read_text().splitlines() == printed
    assert [fields[b"report"].decode() for _, fields in entries] == printed


def test_a_dead_sink_gets_a_bounded_grace_at_stop_and_stdout_its_report(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook?retries=1000"
    service = ServiceProcess(
        *("--window", "3600", "--shutdown-grace", "1", "--report-sink", "stdout"),
        *("--report-sink", dead),
    )
    try:
        service.wait_serving()
        post_logs(service, "a")
        started = time.monotonic()
        assert service.stop() == 0
        stopped_in = time.monotonic() - started
        (last,) = stdout_lines(service)
    finally:
        service.stop()
    assert '"partial":true' in last
    # The grace (at least 2 s for sinks) and no more, however many retries the sink has left.
    assert stopped_in < 10
    assert "sink_undelivered_at_stop" in service.stderr_text


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("kafka://broker:9092", "unknown sink"),
        ("redis-stream://127.0.0.1:6379/0", "needs ?stream=NAME"),
        ("https://hooks.example/x?headers_file=/nonexistent", "cannot be read"),
    ],
)
def test_a_bad_sink_uri_exits_2_with_one_clear_line(uri: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "otlp_stats", "--report-sink", uri],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr and "--report-sink" in done.stderr
    assert "Traceback" not in done.stderr


def test_replay_hands_its_reports_and_revisions_to_the_sinks_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = structlog.get_config()
    start = int(time.time()) // 60 * 60 - 3600
    frames = tmp_path / "frames.jsonl"
    in_order = [
        f'{{"ts": {start + 7 * n}, "svc": "s{n % 3}", "msg": "m{n % 5}"}}' for n in range(40)
    ]
    # Late by far more than the lateness: merged into its stored window, a revision printed.
    late = f'{{"ts": {start + 1}, "svc": "s1", "msg": "late"}}'
    frames.write_text("\n".join([*in_order, late]) + "\n")
    path = tmp_path / "reports.jsonl"
    try:
        status = main(
            [
                "replay",
                *("--input-format", "jsonl", "--value-field", "svc", "--message-field", "msg"),
                *("--window", "60", "--report-format", "json", "--report-sink", "stdout"),
                *("--store", f"sqlite:///{tmp_path / 'state.db'}"),
                *("--report-sink", f"file://{path}", str(frames)),
            ]
        )
    finally:
        structlog.configure(**config)
    printed = capsys.readouterr().out.splitlines()
    assert status == 0
    assert any('"revision":2' in line for line in printed)
    assert path.read_text().splitlines() == printed


def test_with_several_processes_the_supervisor_hands_the_merged_reports_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "reports.jsonl"
    service = ServiceProcess(
        *("--processes", "2", "--window", "3600", "--report-sink", "stdout"),
        *("--report-sink", f"file://{path}"),
    )
    try:
        service.wait_serving()
        for _ in range(4):
            post_logs(service, "a", "b")
        assert service.stop() == 0
        printed = stdout_lines(service)
    finally:
        service.stop()
    # One merged report, whichever process counted which request, and the same in the file.
    (last,) = printed
    assert '"partial":true' in last and '"records":8' in last
    assert path.read_text().splitlines() == printed
