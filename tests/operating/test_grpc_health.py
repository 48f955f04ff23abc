"""grpc.health.v1 and server reflection on the gRPC port.

The publisher is driven in process through every health state with a real grpc.aio server;
the service as a process shows a probe's view of shutdown and that both can be switched off.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from otlp_stats.health import Health, HealthState
from otlp_stats.operating.health_publisher import HealthPublisher
from otlp_stats.receiving.grpc_receiver import SERVICE_NAME
from tests.support.grpctools import GrpcChannels
from tests.support.servicetools import running_service

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class PublishedHealth:
    """A Health, its publisher on a real server, and a client stub to ask it."""

    def __init__(self) -> None:
        self.health = Health()
        self.publisher = HealthPublisher(self.health, (SERVICE_NAME,))
        self.server = grpc.aio.server()
        self.publisher.register(self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = health_pb2_grpc.HealthStub(self.channel)

    async def check(self, service: str = "") -> int:
        answer = await self.stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(answer.status)


@pytest.fixture
async def published() -> AsyncIterator[PublishedHealth]:
    published = PublishedHealth()
    await published.publisher.start()
    await published.server.start()
    yield published
    await published.channel.close()
    await published.server.stop(None)
    await published.publisher.stop()


async def test_not_serving_while_starting(published: PublishedHealth) -> None:
    assert await published.check() == NOT_SERVING
    assert await published.check(SERVICE_NAME) == NOT_SERVING


async def test_watch_follows_serving_then_draining(published: PublishedHealth) -> None:
    watch = published.stub.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == NOT_SERVING
    published.health.move_to(HealthState.SERVING)
    assert (await watch.read()).status == SERVING
    assert await published.check() == SERVING
    assert await published.check(SERVICE_NAME) == SERVING
    published.health.move_to(HealthState.DRAINING)
    assert (await watch.read()).status == NOT_SERVING
    assert await published.check(SERVICE_NAME) == NOT_SERVING
    watch.cancel()


async def test_an_unknown_service_is_not_found(published: PublishedHealth) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await published.check("no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_stopped_publisher_stays_not_serving(published: PublishedHealth) -> None:
    watch = published.stub.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == NOT_SERVING
    published.health.move_to(HealthState.SERVING)
    assert (await watch.read()).status == SERVING
    await published.publisher.stop()
    assert (await watch.read()).status == NOT_SERVING
    assert await published.check(SERVICE_NAME) == NOT_SERVING
    watch.cancel()


def test_a_probe_sees_serving_then_not_serving_when_the_service_drains(
    grpc_channels: GrpcChannels,
) -> None:
    with running_service() as service:
        channel = grpc_channels.open(service.grpc_target)
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=30)
        assert next(watch).status == SERVING
        service.process.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING
        assert service.process.wait(30) == 0


def test_health_and_reflection_can_be_switched_off(grpc_channels: GrpcChannels) -> None:
    with running_service("--grpc-health", "false", "--grpc-reflection", "no") as service:
        serving = service.wait_log("serving")
        assert (serving["grpc_health"], serving["grpc_reflection"]) == (False, False)
        channel = grpc_channels.open(service.grpc_target)
        with pytest.raises(grpc.RpcError) as health:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.value.code() == grpc.StatusCode.UNIMPLEMENTED
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        with pytest.raises(grpc.RpcError) as listing:
            next(answers)
        assert listing.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert service.stop() == 0


def test_reflection_lists_the_logs_service_and_health(grpc_channels: GrpcChannels) -> None:
    with running_service() as service:
        channel = grpc_channels.open(service.grpc_target)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {service.name for service in answer.list_services_response.service}
        assert names == {
            SERVICE_NAME,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        assert service.stop() == 0
