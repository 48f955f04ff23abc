"""gzip-compressed OTLP/gRPC Export requests: counted, and limited by their decompressed size."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from tests.support.expected import only_report, summary_of
from tests.support.fakes import export_request, log_record
from tests.support.servicetools import ONE_WINDOW, running_service


@pytest.fixture
def channels() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def test_gzip_requests_are_counted_and_a_gzip_bomb_is_refused(
    channels: list[grpc.Channel],
) -> None:
    under_limit = export_request(
        [log_record(f"line {n % 10} " + "padding " * 100, foo=f"v{n % 3}") for n in range(600)]
    )
    # Compresses to a few KiB and inflates past the 1 MiB limit.
    bomb = export_request([log_record("z" * (2 * 1024 * 1024), foo="bomb")])
    with running_service(
        "--attribute-key", "foo", "--window", ONE_WINDOW, "--max-recv-size", "1MiB"
    ) as service:
        channel = grpc.insecure_channel(service.grpc_target, compression=grpc.Compression.Gzip)
        channels.append(channel)
        stub = LogsServiceStub(channel)  # type: ignore[no-untyped-call]
        assert under_limit.ByteSize() > 256 * 1024
        stub.Export(under_limit, timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(bomb, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert service.stop() == 0
        report = only_report(service.all_reports())
    assert summary_of(report) == {(f"v{n}", False): (10, 200) for n in range(3)}
