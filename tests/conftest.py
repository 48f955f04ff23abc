"""Fixtures shared by test modules in every folder below this one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.grpctools import GrpcChannels


@pytest.fixture
def grpc_channels() -> Iterator[GrpcChannels]:
    channels = GrpcChannels()
    yield channels
    channels.close()
