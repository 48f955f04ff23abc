"""The bench's C sender (bench/h2load_client.py): what h2load sends is counted exactly once, over
both doors, and its summary is read right. h2load comes from Debian's nghttp2-client
(`make system-deps`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.h2load_client import grpc_frame, parse_succeeded, send_with_h2load
from bench.run import service_argv
from bench.server_process import ServerProcess
from otlp_stats.loadgen import Workload

REPO = Path(__file__).resolve().parent.parent

_SUMMARY = """
finished in 1.02s, 1960.78 req/s, 1.29MB/s
requests: 2000 total, 2000 started, 2000 done, 1995 succeeded, 5 failed, 0 errored, 0 timeout
status codes: 1995 2xx, 0 3xx, 0 4xx, 5 5xx
"""


def test_the_summary_gives_succeeded_and_failed_requests() -> None:
    assert parse_succeeded(_SUMMARY) == (1995, 5)
    with pytest.raises(RuntimeError, match="no request summary"):
        parse_succeeded("h2load: connection refused\n")


def test_a_grpc_message_is_framed_with_its_big_endian_length() -> None:
    assert grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"


@pytest.mark.parametrize(("transport", "connections", "streams"), [("grpc", 2, 4), ("http", 8, 1)])
def test_every_request_h2load_gets_an_answer_to_is_reported_once(
    transport: str, connections: int, streams: int, tmp_path: Path
) -> None:
    assert shutil.which("h2load"), "h2load is missing: make system-deps installs nghttp2-client"
    argv = [*service_argv(Workload(), ""), "--http-listen", "127.0.0.1:0"]
    with ServerProcess("service", argv, cwd=tmp_path, env=dict(os.environ)) as server:
        server.start()
        port = server.grpc_port if transport == "grpc" else server.http_port
        tally = send_with_h2load(
            transport, f"127.0.0.1:{port}", server.pid, records=10,
            connections=connections, streams=streams, seconds=0.2, warmup_requests=100,
        )  # fmt: skip
        stopped = server.stop()
    assert stopped.exit_code == 0
    assert tally["refused"] == 0
    assert tally["requests"] >= connections * streams
    assert tally["server_cpu_seconds"] > 0
    # The warm-up's hundred requests and the measured ones, ten records each.
    assert tally["records_all"] == (100 + tally["requests"]) * 10
    assert stopped.reported_records == tally["records_all"]
