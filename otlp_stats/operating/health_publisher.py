"""grpc.health.v1 on the gRPC port, answering from the health state machine.

SERVING only while the service is ready; NOT_SERVING while starting, draining and stopped, so a
Kubernetes `grpc:` probe takes a draining pod out of rotation before its port closes. The
servicer is grpcio-health-checking's; the health state machine calls its listeners
synchronously while the servicer's `set` is a coroutine, so changes pass through a queue to a
task this component owns.
"""

from __future__ import annotations

import asyncio

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from otlp_stats.health import Health, HealthState

SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The empty name is the whole server, which is what a probe without a service name asks about.
OVERALL = ""


class HealthPublisher:
    """Mirrors Health into a HealthServicer for the server-wide name and each named service."""

    def __init__(self, health: Health, services: tuple[str, ...]) -> None:
        self.servicer = health_aio.HealthServicer()
        self._health = health
        self._names = (OVERALL, *services)
        self._changes: asyncio.Queue[HealthState] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        """Add the Health service to a grpc.aio server (before the server starts)."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        """Publish the current state before the port opens, then follow every change."""
        await self._publish(self._health.state)
        self._health.subscribe(self._changes.put_nowait)
        self._task = asyncio.create_task(self._follow(), name="grpc-health")

    async def stop(self) -> None:
        """NOT_SERVING for good (the servicer then ignores any later change)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.servicer.enter_graceful_shutdown()

    async def _follow(self) -> None:
        while True:
            await self._publish(await self._changes.get())

    async def _publish(self, state: HealthState) -> None:
        # Ready, not only serving: a journal that cannot be written refuses every Export.
        serving = state is HealthState.SERVING and self._health.unavailable is None
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._names:
            await self.servicer.set(name, status)
