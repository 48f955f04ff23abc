"""Hostile senders: a fresh attribute value on every record, and clients that stall.

Neither can push the service past its caps or keep others from being served.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator

import grpc
import grpc.aio

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


async def test_streams_that_never_finish_do_not_starve_other_clients() -> None:
    with running_service(f"--attribute-key={KEY}", "--grpc-max-concurrent-streams=20") as service:
        forever = asyncio.Event()

        async def never_finishing() -> AsyncIterator[bytes]:
            await forever.wait()
            yield b""

        # Channels to one target share a connection unless told not to; each client here is
        # another peer with its own connection.
        own_connection = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(service.grpc_target, options=own_connection) as stuck:
            # 60 calls on one connection, three times the streams it may open: none completes.
            export: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = stuck.stream_unary(EXPORT)
            calls = [export(never_finishing()) for _ in range(60)]
            async with grpc.aio.insecure_channel(
                service.grpc_target, options=own_connection
            ) as good:
                served: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = good.unary_unary(EXPORT)
                assert await served(export_request("patient", "served"), timeout=10) == b""
            for call in calls:
                call.cancel()
        accepted = service.metric("otlp_stats_records_accepted_total", {"transport": "grpc"})
        assert accepted == 1
        assert service.http_get("/readyz")[0] == 200
        assert service.stop() == 0
