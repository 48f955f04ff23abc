"""Hostile senders: a fresh attribute value on every record, and clients that stall.

Neither can push the service past its caps or keep others from being served.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import grpc
import grpc.aio
import h2.config
import h2.connection
import h2.events
import h2.settings

from tests.support.securetools import EXPORT, KEY, ClientSide, export_request
from tests.support.servicetools import ONE_WINDOW, REPO, running_service

MAX_VALUES = 50


def test_a_fresh_value_on_every_record_stays_within_the_value_cap() -> None:
    with running_service(f"--window={ONE_WINDOW}", f"--max-values={MAX_VALUES}") as service:
        sent = subprocess.run(
            [
                sys.executable,
                "-m",
                "otlp_stats.loadgen",
                f"--target={service.grpc_target}",
                "--requests=100",
                "--records-per-request=100",
                "--values=10000",
                "--pool=100",
                "--callers=4",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["records_acknowledged"] == 10_000
        rss = service.metric("process_resident_memory_bytes")
        assert service.stop() == 0
        [report] = service.all_reports()
    assert report["records"] == 10_000
    # The cap, plus the entry the overflow is reported in.
    assert len(report["values"]) <= MAX_VALUES + 1
    [overflow] = [entry for entry in report["values"] if entry.get("overflow")]
    assert overflow["records"] > 0 and overflow["distinct_values"] > 0
    assert rss is not None and rss < 400 * 1024 * 1024


def test_stalled_clients_do_not_starve_others_and_are_cut_off() -> None:
    with running_service(f"--attribute-key={KEY}", "--http-read-timeout=1") as service:
        http_port, grpc_port = service.ports["http_port"], service.ports["grpc_port"]
        stalled = []
        # Half a request body each, then silence; and raw TCP connections that never speak.
        for _ in range(50):
            conn = socket.create_connection(("127.0.0.1", http_port))
            conn.sendall(
                b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: 1000\r\n\r\n" + b"\x0a" * 10
            )
            stalled.append(conn)
        stalled += [socket.create_connection(("127.0.0.1", grpc_port)) for _ in range(50)]
        started = time.monotonic()
        client = ClientSide()
        client.grpc_export(service, export_request("patient", "served"))
        assert client.http_export(service, export_request("patient", "served too"))[0] == 200
        assert time.monotonic() - started < 5, "a good client waited on the stalled ones"
        # Each stalled HTTP body is answered 408 once the read timeout passes.
        stalled[0].settimeout(10)
        answer = stalled[0].recv(200)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        timeouts = service.metric(
            "otlp_stats_export_refused_total", {"transport": "http", "reason": "read_timeout"}
        )
        assert timeouts is not None and timeouts >= 1
        for conn in stalled:
            conn.close()
        with urllib.request.urlopen(service.admin_url + "/readyz", timeout=5) as ready:
            assert ready.status == 200
        assert service.stop() == 0


STREAM_LIMIT = 20


def test_streams_that_never_finish_do_not_starve_other_clients() -> None:
    """Three peers each hold every stream the server allows them, 60 in all, each stream with
    half a message sent; a fourth peer is still served. A PING answered after the streams
    proves the server read them all before the good call was made."""
    flags = (f"--attribute-key={KEY}", f"--grpc-max-concurrent-streams={STREAM_LIMIT}")
    with running_service(*flags) as service:
        stuck = [StuckPeer(service.grpc_target) for _ in range(3)]
        try:
            for peer in stuck:
                assert peer.server_stream_limit == STREAM_LIMIT
                peer.open_half_sent_streams(STREAM_LIMIT)
                assert peer.server_has_read_everything_sent()
            with grpc.insecure_channel(service.grpc_target) as good:
                served: grpc.UnaryUnaryMultiCallable[bytes, bytes] = good.unary_unary(EXPORT)
                assert served(export_request("patient", "served"), timeout=10) == b""
            for peer in stuck:
                assert peer.reset_streams() == 0  # still open, still waiting, not refused
        finally:
            for peer in stuck:
                peer.close()
        accepted = service.metric("otlp_stats_records_accepted_total", {"transport": "grpc"})
        assert accepted == 1
        assert service.http_get("/readyz")[0] == 200
        assert service.stop() == 0


class StuckPeer:
    """A raw HTTP/2 client (h2) that opens Export streams and never finishes them."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._socket = socket.create_connection((host, int(port)), timeout=10)
        self._target = target
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._h2.initiate_connection()
        self._flush()
        self._events: list[h2.events.Event] = []
        self.server_stream_limit = self._read_until(h2.events.RemoteSettingsChanged)
        self._streams: list[int] = []

    def open_half_sent_streams(self, count: int) -> None:
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", EXPORT),
            (":authority", self._target),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        # A gRPC message prefix announcing 1,000 bytes, then only 10 of them.
        half_message = b"\x00" + (1000).to_bytes(4, "big") + b"\x0a" * 10
        for _ in range(count):
            stream = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream, headers)
            self._h2.send_data(stream, half_message)
            self._streams.append(stream)
        self._flush()

    def server_has_read_everything_sent(self) -> bool:
        """HTTP/2 frames are read in order: the PING's answer comes after the frames before it."""
        self._h2.ping(b"stuckpee")
        self._flush()
        answer: bytes = self._read_until(h2.events.PingAckReceived)
        return answer == b"stuckpee"

    def reset_streams(self) -> int:
        """Streams the server has reset so far, read up to the answer to a fresh PING."""
        self._h2.ping(b"resetchk")
        self._flush()
        self._read_until(h2.events.PingAckReceived)
        return sum(isinstance(event, h2.events.StreamReset) for event in self._events)

    def close(self) -> None:
        self._socket.close()

    def _flush(self) -> None:
        self._socket.sendall(self._h2.data_to_send())

    def _read_until(self, wanted: type[h2.events.Event]) -> Any:
        """Read frames until an event of this type: the stream limit, or the PING's data."""
        while True:
            data = self._socket.recv(65536)
            assert data, "the server closed the connection"
            events = self._h2.receive_data(data)
            self._flush()  # settings and ping acknowledgements
            self._events += events
            for event in events:
                if isinstance(event, h2.events.RemoteSettingsChanged) and wanted is type(event):
                    limit = event.changed_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]
                    return limit.new_value
                if isinstance(event, h2.events.PingAckReceived) and wanted is type(event):
                    return event.ping_data
