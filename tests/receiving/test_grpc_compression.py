"""gzip-compressed OTLP/gRPC Export requests: counted, and limited by their decompressed size."""

from __future__ import annotations

import grpc
import pytest

from tests.support.expected import only_report, summary_of
from tests.support.fakes import export_request, log_record
from tests.support.grpctools import GrpcChannels
from tests.support.servicetools import ONE_WINDOW, running_service


def test_gzip_requests_are_counted_and_a_gzip_bomb_is_refused(
    grpc_channels: GrpcChannels,
) -> None:
    under_limit = export_request(
        [log_record(f"line {n % 10} " + "padding " * 100, foo=f"v{n % 3}") for n in range(600)]
    )
    # Compresses to a few KiB and inflates past the 1 MiB limit.
    bomb = export_request([log_record("z" * (2 * 1024 * 1024), foo="bomb")])
    with running_service(
        "--attribute-key", "foo", "--window", ONE_WINDOW, "--max-recv-size", "1MiB"
    ) as service:
        stub = grpc_channels.logs_stub(service.grpc_target, grpc.Compression.Gzip)
        assert under_limit.ByteSize() > 256 * 1024
        stub.Export(under_limit, timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(bomb, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert service.stop() == 0
        report = only_report(service.all_reports())
    assert summary_of(report) == {(f"v{n}", False): (10, 200) for n in range(3)}
