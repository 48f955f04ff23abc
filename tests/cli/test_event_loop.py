"""--event-loop: uvloop where it can be imported, asyncio's own loop when asked or without it."""

from __future__ import annotations

import asyncio
import sys
import urllib.request

import pytest
import uvloop

from otlp_stats.cli.event_loop import EventLoopError, loop_factory, run
from tests.support.fakes import export_request, log_record
from tests.support.grpctools import GrpcChannels
from tests.support.servicetools import running_service


async def _loop_class() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop() -> None:
    assert run(_loop_class(), loop_factory("auto")) is uvloop.Loop
    assert run(_loop_class(), loop_factory("uvloop")) is uvloop.Loop


def test_asyncio_runs_on_asyncios_own_loop() -> None:
    assert not issubclass(run(_loop_class(), loop_factory("asyncio")), uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert not issubclass(run(_loop_class(), loop_factory("auto")), uvloop.Loop)
    with pytest.raises(EventLoopError, match="uvloop cannot be imported"):
        loop_factory("uvloop")


@pytest.mark.parametrize(
    ("flags", "expected"), [((), "uvloop"), (("--event-loop", "asyncio"), "asyncio")]
)
def test_the_serving_line_names_the_loop_and_both_doors_count_on_it(
    flags: tuple[str, ...], expected: str, grpc_channels: GrpcChannels
) -> None:
    request = export_request([log_record(f"body {n}", foo="a") for n in range(10)])
    with running_service("--attribute-key", "foo", "--window", "1000000000", *flags) as service:
        assert service.wait_serving()["event_loop"] == expected
        grpc_channels.logs_stub(service.grpc_target).Export(request, timeout=10)
        post = urllib.request.Request(
            service.http_url + "/v1/logs",
            data=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(post, timeout=10) as response:
            assert response.status == 200
        assert service.stop() == 0
        [report] = service.all_reports()
    assert report["records"] == 20
