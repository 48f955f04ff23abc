"""Wires the pipeline together; starts downstream first and stops upstream first."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

import grpc
import structlog
from grpc_reflection.v1alpha import reflection
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from otlp_stats.admin import HttpSite, build_admin_app
from otlp_stats.aggregator import Aggregator
from otlp_stats.clock import Clock, SystemClock
from otlp_stats.config import Settings
from otlp_stats.health import Health, HealthState
from otlp_stats.health_publisher import SERVICE_NAME as HEALTH_SERVICE_NAME
from otlp_stats.health_publisher import HealthPublisher
from otlp_stats.http_receiver import build_otlp_http_site
from otlp_stats.intake import Intake
from otlp_stats.queue import RequestQueue
from otlp_stats.receiver import LogsReceiver, logs_service_handler
from otlp_stats.reporter import Reporter
from otlp_stats.resolve import LabelRenderer
from otlp_stats.telemetry import Metrics, RateLimitedLog, StateCollector
from otlp_stats.workers import WorkerPool

# In-flight Export handlers never await, so they finish at once; this only bounds the wait.
_GRPC_STOP_GRACE = 1.0
# Reflection answers from the default descriptor pool: naming the service through its generated
# module guarantees that the module, and every message Export uses, is in the pool.
_LOGS_SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name


class Service:
    """gRPC and HTTP receivers -> intake -> queue -> workers -> aggregator -> reporter; admin."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        out: TextIO | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.log: Any = structlog.get_logger("otlp_stats")
        self.health = Health()
        self.registry = registry or CollectorRegistry()
        # process_* (CPU, RSS, open fds) for the dashboard and sizing; the registry is our own,
        # so the default registry's collectors are not there unless registered here.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.metrics = Metrics(self.registry)
        self.queue = RequestQueue(settings.queue_size, settings.queue_max_bytes)
        self.aggregator = Aggregator(
            settings.window, self.clock.now(), settings.max_values, settings.sketch_lg_k
        )
        self.reporter = Reporter(
            self.aggregator,
            self.queue,
            self.clock,
            out or sys.stdout,
            self.metrics,
            settings.attribute_key,
            settings.missing_label,
            settings.report_format,
            logger=self.log,
        )
        self.workers = WorkerPool(
            self.queue,
            self.aggregator.add,
            settings.attribute_key,
            settings.workers,
            self.metrics,
            self.log,
            LabelRenderer(settings.max_value_length),
        )
        self.intake = Intake(
            self.queue,
            self.health,
            self.clock,
            self.metrics,
            settings.max_recv_size,
            settings.retry_delay,
            RateLimitedLog(self.log),
            settings.attribute_key,
        )
        self.registry.register(
            StateCollector(
                self.queue,
                self.health,
                lambda: self.reporter.last_report,
                lambda: self.aggregator.late_records,
                settings.missing_label,
                settings.metrics_top_values,
                lambda: (self.aggregator.tracked_values, self.aggregator.sketch_bytes),
                lambda: self.workers.labels.truncated,
            )
        )
        self.admin = HttpSite(build_admin_app(self.registry, self.health), settings.admin_listen)
        self.otlp_http = build_otlp_http_site(
            self.intake, self.metrics, settings.http_listen, settings.max_recv_size
        )
        self.grpc_health = HealthPublisher(self.health, (_LOGS_SERVICE,))
        self._grpc: grpc.aio.Server | None = None
        self.grpc_port = 0

    async def start(self) -> None:
        """Admin first (probes see "starting"), then the pipeline from its end to its front."""
        await self.admin.start()
        await self.reporter.start()
        await self.workers.start()
        if self.settings.grpc_health:
            await self.grpc_health.start()
        self._grpc = self._build_grpc_server()
        self.grpc_port = self._grpc.add_insecure_port(str(self.settings.grpc_listen))
        await self._grpc.start()
        await self.otlp_http.start()
        self.health.move_to(HealthState.SERVING)
        self.log.info(
            "serving",
            grpc_port=self.grpc_port,
            http_port=self.otlp_http.port,
            admin_port=self.admin.port,
            grpc_tls=False,
            http_tls=False,
            admin_tls=False,
            grpc_health=self.settings.grpc_health,
            grpc_reflection=self.settings.grpc_reflection,
            attribute_key=self.settings.attribute_key,
            window_seconds=self.settings.window,
        )

    def _build_grpc_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.settings.max_recv_size),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers(
            (logs_service_handler(LogsReceiver(self.intake, self.metrics)),)
        )
        services = [_LOGS_SERVICE]
        if self.settings.grpc_health:
            self.grpc_health.register(server)
            services.append(HEALTH_SERVICE_NAME)
        if self.settings.grpc_reflection:
            reflection.enable_server_reflection([*services, reflection.SERVICE_NAME], server)
        return server

    async def stop(self) -> bool:
        """Refuse new Exports, drain what was acknowledged, print the last windows.

        Returns False if the queue could not be drained within the shutdown grace, in which case
        the records still queued were acknowledged but not counted (and are logged as such).
        """
        if self.health.state is HealthState.STOPPED:
            return True
        deadline = time.monotonic() + self.settings.shutdown_grace
        self.health.move_to(HealthState.DRAINING)
        self.log.info("draining", queued_requests=self.queue.depth)
        drained = await self._drain(deadline)
        if self._grpc is not None:
            await self._grpc.stop(_GRPC_STOP_GRACE)
        await self.otlp_http.stop()
        await self.grpc_health.stop()
        await self.workers.stop()
        await self.reporter.stop()
        self.health.move_to(HealthState.STOPPED)
        await self.admin.stop()
        self.log.info("stopped", drained=drained)
        return drained

    async def _drain(self, deadline: float) -> bool:
        try:
            await asyncio.wait_for(self.queue.wait_idle(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self.log.error(
                "drain_timeout",
                queued_requests=self.queue.depth,
                grace_seconds=self.settings.shutdown_grace,
            )
            return False
        return True
