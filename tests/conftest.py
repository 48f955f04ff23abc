"""Fixtures shared by test modules in every folder below this one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.containertools import build_image, engine_problem
from tests.support.grpctools import GrpcChannels


@pytest.fixture
def grpc_channels() -> Iterator[GrpcChannels]:
    channels = GrpcChannels()
    yield channels
    channels.close()


@pytest.fixture(scope="session")
def image_built() -> float:
    """The image, built once per session from this checkout; the seconds the build took. Where
    no container engine can run, every test using it is skipped for that one reason."""
    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"image tests: no container engine can run here: {problem}")
    return build_image()
