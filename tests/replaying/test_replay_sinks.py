"""A replay's reports reach the sinks under idempotency keys of their own."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from otlp_stats.cli.main import main
from tests.support.history import history_requests, write_proto

FIRST = 1_767_225_600.0  # 2026-01-01
REQUESTS, _ = history_requests(FIRST, FIRST + 3 * 3600, per_hour=4)


class _Receiver(http.server.ThreadingHTTPServer):
    keys: list[str]


class _Keys(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.keys.append(self.headers["Idempotency-Key"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[str]]]:
    server = _Receiver(("127.0.0.1", 0), _Keys)
    server.keys = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", server.keys
    server.shutdown()
    server.server_close()
    thread.join()


def test_two_replays_of_one_file_are_never_taken_for_the_live_service_or_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], webhook: tuple[str, list[str]]
) -> None:
    url, keys = webhook
    path = tmp_path / "logs"
    write_proto(path, REQUESTS)
    for _ in range(2):
        assert main(["replay", str(path), "--window", "3600", "--report-sink", url]) == 0
    capsys.readouterr()
    assert len(keys) == 6  # three hourly windows, twice
    first, second = keys[:3], keys[3:]
    assert all(key.split("/")[-1].startswith("replay-") for key in keys), keys
    # The live service without --replica-id ends its keys with "-"; each run has its own id.
    assert {key.split("/")[-1] for key in first} != {key.split("/")[-1] for key in second}
    assert [key.split("/")[:3] for key in first] == [key.split("/")[:3] for key in second]
