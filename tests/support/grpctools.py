"""gRPC channels a test opens to a running service, closed for it when the test ends."""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub


class GrpcChannels:
    """The `grpc_channels` fixture (tests/conftest.py): open channels, close them all after."""

    def __init__(self) -> None:
        self._opened: list[grpc.Channel] = []

    def open(self, target: str, compression: grpc.Compression | None = None) -> grpc.Channel:
        channel = grpc.insecure_channel(target, compression=compression)
        self._opened.append(channel)
        return channel

    def logs_stub(
        self, target: str, compression: grpc.Compression | None = None
    ) -> LogsServiceStub:
        return LogsServiceStub(self.open(target, compression))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        for channel in self._opened:
            channel.close()
