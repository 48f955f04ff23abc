"""Wires the pipeline together; starts downstream first and stops upstream first."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import grpc
import structlog
from aiohttp import web
from grpc_reflection.v1alpha import reflection
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from otlp_stats.clock import Clock, SystemClock
from otlp_stats.config import Settings
from otlp_stats.counting.aggregator import CLOCK_STEPPED_BACK, Aggregator
from otlp_stats.counting.keyed import aggregator_for
from otlp_stats.counting.late import LateRecords, RejectLate
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import EventTime, default_scanner
from otlp_stats.counting.workers import WorkerPool
from otlp_stats.errors import Unauthenticated
from otlp_stats.health import Health, HealthState
from otlp_stats.operating.admin import (
    add_distinct_route,
    add_patterns_route,
    add_ready_detail,
    build_admin_app,
)
from otlp_stats.operating.health_publisher import SERVICE_NAME as HEALTH_SERVICE_NAME
from otlp_stats.operating.health_publisher import HealthPublisher
from otlp_stats.operating.pattern_query import PatternQueries
from otlp_stats.operating.query import DistinctQueries, answer_without_history, query_scope
from otlp_stats.operating.state_metrics import StateCollector
from otlp_stats.receiving.auth import BearerTokens, CredentialsError
from otlp_stats.receiving.grpc_auth import TokenInterceptor
from otlp_stats.receiving.grpc_receiver import LogsReceiver, logs_service_handler
from otlp_stats.receiving.http_auth import token_middleware
from otlp_stats.receiving.http_receiver import build_otlp_http_site
from otlp_stats.receiving.http_site import HttpSite
from otlp_stats.receiving.intake import Intake
from otlp_stats.receiving.tls import ServerTls, server_tls
from otlp_stats.reporting.reporter import Reporter, patterns_shown
from otlp_stats.reporting.sinks.base import ReportSinks
from otlp_stats.reporting.sinks.build import open_sinks
from otlp_stats.store.base import StateStore
from otlp_stats.store.keeper import StateKeeper
from otlp_stats.store.location import open_keeper, open_outbox, open_store
from otlp_stats.store.replicas import ReplicaMerger
from otlp_stats.telemetry import Metrics, RateLimitedLog

# In-flight Export handlers never await, so they finish at once; this only bounds the wait.
_GRPC_STOP_GRACE = 1.0
# Reflection answers from the default descriptor pool: naming the service through its generated
# module guarantees that the module, and every message Export uses, is in the pool.
_LOGS_SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name
# Probes must work without credentials (a kubelet has no token), so these stay open.
_PROBE_PATHS = ("/health", "/livez", "/readyz")
ReporterT = TypeVar("ReporterT", bound=Reporter)


class Service:
    """gRPC and HTTP receivers -> intake -> queue -> workers -> aggregator -> reporter; admin."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        out: TextIO | None = None,
        registry: CollectorRegistry | None = None,
        *,
        serving_process: bool = False,
    ) -> None:
        """`serving_process`: one of several processes serving the same ports under a
        supervisor (otlp_stats/processes/): no admin port and no store of its own; its closed
        windows keep their sketches and go to the reporter's listeners (the link to the
        supervisor, which merges and prints them), not to stdout."""
        self.settings = settings
        self.serving_process = serving_process
        self.clock = clock or SystemClock()
        self.log: Any = structlog.get_logger("otlp_stats")
        self.health = Health()
        self.registry = registry or CollectorRegistry()
        # process_* (CPU, RSS, open fds) for the dashboard and sizing; the registry is our own,
        # so the default registry's collectors are not there unless registered here.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.metrics = Metrics(self.registry)
        # Security before anything is opened: a bad certificate or token file stops the start.
        self.tls = server_tls(settings)
        self.tokens = load_tokens(settings, self.metrics)
        self.queue = RequestQueue(settings.queue_size, settings.queue_max_bytes)
        event_time = settings.window_time == "event"
        # With a store, closed windows keep their sketches for it (docs/storage.md); the
        # memory store is today's behaviour, without that per-window serialization.
        self.aggregator = open_aggregator(
            settings, self.clock.now(), keep_sketches=settings.store != "memory" or serving_process
        )
        lateness = self.aggregator.lateness
        # A serving process of several has none: its supervisor reports.
        self.sinks = open_report_sinks(settings, self.log, enabled=not serving_process)
        self.registry.register(self.sinks.collector())
        self.reporter = build_reporter(
            Reporter, settings, self.aggregator, self.queue, self.clock, out, self.metrics,
            self.log, self.sinks,
        )  # fmt: skip
        # Counting state beyond this process (docs/storage.md).
        self.store = open_store(settings)
        self.keeper = open_keeper(
            settings, self.store, self.aggregator, self.reporter, self.clock, self.log
        )
        if serving_process:
            # Its windows are the supervisor's to print and to store.
            self.reporter.prints_closed = False
            self.reporter.remove_listener(self.keeper.window_closed)
        self.registry.register(self.keeper.collector())
        # --durability ack: Exports are answered once their counts are in the journal.
        self.committer = self.keeper.committer if not serving_process else None
        if self.committer is not None:
            self.committer.report_to(self.health)
        # Late records (event time): merged into their stored window with a store that keeps
        # closed windows, else rejected to their sender (counting/late.py, store/revisions.py).
        self.late: LateRecords = (
            self.keeper.reviser.late
            if self.keeper.reviser is not None
            else RejectLate(settings.window, lateness)
        )
        # The C scanner when it was built, else the Python one (counting/scan.py);
        # the start line says which.
        self.event_time = (
            EventTime.of(settings.window, settings.max_clock_skew) if event_time else None
        )
        self.scanner = default_scanner(settings.attribute_keys, self.event_time, settings.masker())
        self.workers = WorkerPool(
            self.queue,
            self.aggregator,
            self.scanner,
            settings.workers,
            self.metrics,
            self.log,
            settings.max_records_per_request,
            settings.retry_delay,
            LabelRenderer(settings.max_value_length),
            self.event_time,
            self.late,
            self.committer,
        )
        self.intake = Intake(
            self.queue,
            self.health,
            self.clock,
            self.metrics,
            settings.max_recv_size,
            settings.retry_delay,
            RateLimitedLog(self.log),
            counter=self.workers,
        )
        self.registry.register(
            StateCollector(
                self.queue,
                self.health,
                lambda: self.reporter.last_reports,
                self._late_records,
                settings.missing_label,
                settings.metrics_top_values,
                lambda: (self.aggregator.tracked_values, self.aggregator.sketch_bytes),
                lambda: self.workers.labels.truncated,
                self.reporter.watermark_lag,
                (lambda: self.aggregator.tracked_patterns) if settings.count_patterns else None,
            )
        )
        # A serving process of several (--processes) leaves the admin port to its supervisor.
        self.admin = (
            build_admin_site(
                settings,
                self.registry,
                self.health,
                self.store,
                self.keeper,
                self.clock,
                self.tls,
                self.tokens,
            )
            if not serving_process
            else None
        )
        self.otlp_http = build_otlp_http_site(
            self.intake,
            self.metrics,
            settings.http_listen,
            settings.max_recv_size,
            read_timeout=settings.http_read_timeout,
            idle_timeout=settings.http_idle_timeout,
            ssl_context=self.tls.ssl_context() if self.tls else None,
            tokens=self.tokens,
            reuse_port=settings.processes > 1,
        )
        self.grpc_health = HealthPublisher(self.health, (_LOGS_SERVICE,))
        self._grpc: grpc.aio.Server | None = None
        self.grpc_port = 0
        # Set once the stored state is loaded: until then there is nothing of ours to save, and
        # a checkpoint at stop would overwrite the stored open windows with an empty one.
        self._restored = False

    async def start(self) -> None:
        """Admin first (probes see "starting"), then the pipeline from its end to its front."""
        if self.admin is not None:
            await self.admin.start()
        await self.keeper.restore()
        self._restored = True
        await self.keeper.start()
        if self.committer is not None:
            await self.committer.start()
        self.sinks.start()
        await self.reporter.start()
        await self.workers.start()
        if self.settings.grpc_health:
            await self.grpc_health.start()
        self._grpc = self._build_grpc_server()
        if self.tls is None:
            self.grpc_port = self._grpc.add_insecure_port(str(self.settings.grpc_listen))
        else:
            self.grpc_port = self._grpc.add_secure_port(
                str(self.settings.grpc_listen), self.tls.grpc_credentials()
            )
        await self._grpc.start()
        await self.otlp_http.start()
        self.health.move_to(HealthState.SERVING)
        self.log.info(
            # A serving process of several: the supervisor logs "serving" once for them all.
            "process_serving" if self.serving_process else "serving",
            grpc_port=self.grpc_port,
            http_port=self.otlp_http.port,
            event_loop=_running_loop_name(),
            admin_port=self.admin.port if self.admin is not None else None,
            grpc_tls=_tls_mode(self.tls),
            http_tls=_tls_mode(self.tls),
            admin_tls=_tls_mode(self.tls, verify_clients=False)
            if self.settings.admin_tls
            else "plaintext",
            auth="bearer" if self.tokens else "none",
            admin_auth="bearer" if self.settings.admin_auth else "none",
            grpc_health=self.settings.grpc_health,
            grpc_reflection=self.settings.grpc_reflection,
            attribute_key=",".join(self.settings.attribute_keys),
            window_seconds=self.settings.window,
            window_time=self.settings.window_time,
            scanner=self.scanner.name,
        )

    def _build_grpc_server(self) -> grpc.aio.Server:
        interceptors = []
        if self.tokens is not None:
            interceptors.append(TokenInterceptor(self.tokens, open_services=(HEALTH_SERVICE_NAME,)))
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.settings.max_recv_size),
                # Off unless several processes serve the port: a second service started by
                # mistake on the same port must fail, not share it silently.
                ("grpc.so_reuseport", 1 if self.settings.processes > 1 else 0),
                *_connection_options(self.settings),
            ],
            interceptors=interceptors,
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
        """Refuse new Exports, count what was admitted, print the last windows.

        Returns False if the queue could not be drained within the shutdown grace, in which case
        the requests still queued are refused as the service shuts down (UNAVAILABLE, 503:
        their senders retry) rather than acknowledged.
        """
        if self.health.state is HealthState.STOPPED:
            return True
        deadline = time.monotonic() + self.settings.shutdown_grace
        self.health.move_to(HealthState.DRAINING)
        self.log.info("draining", queued_requests=self.queue.depth)
        drained = await self._drain(deadline)
        # Workers first: after a drain cut short, what still waits is refused to its senders
        # now, while their Export handlers still await an answer.
        await self.workers.stop()
        if self.committer is not None:
            # Before the checkpoint: what waits is committed and answered, then covered by it.
            await self.committer.stop()
        if self._grpc is not None:
            await self._grpc.stop(_GRPC_STOP_GRACE)
        await self.otlp_http.stop(max(0.0, deadline - time.monotonic()))
        await self.grpc_health.stop()
        if self._restored:
            # The open window is checkpointed before the reporter closes it as partial, so a
            # restart resumes it rather than losing it or counting it twice.
            await self.keeper.checkpoint_now()
            await self.reporter.stop()
            await self.keeper.stop()
        # After the last report (the partial window, revisions the keeper flushed) is handed on.
        await self.sinks.stop(sink_grace(deadline))
        self.health.move_to(HealthState.STOPPED)
        if self.admin is not None:
            await self.admin.stop()
        self.log.info("stopped", drained=drained)
        return drained

    def _late_records(self) -> dict[str, int]:
        """Late records by reason: the arrival-time kind, then the fates of event-time ones."""
        stepped_back = self.aggregator.late_records[CLOCK_STEPPED_BACK]
        return {CLOCK_STEPPED_BACK: stepped_back, **self.late.records_by_reason}

    def reload_credentials(self) -> bool:
        """Re-read the token file (on SIGHUP); on error keep the tokens accepted so far."""
        if self.tokens is None:
            self.log.info("credentials_reload_skipped", reason="no auth_token_file")
            return False
        try:
            count = self.tokens.reload()
        except CredentialsError as error:
            self.log.error("credentials_reload_failed", error=str(error))
            return False
        # The count, never the tokens: a log line is no place for a secret.
        self.log.info("credentials_reloaded", tokens=count)
        return True

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


def build_admin_site(
    settings: Settings,
    registry: CollectorRegistry,
    health: Health,
    store: StateStore,
    keeper: StateKeeper | ReplicaMerger,
    clock: Clock,
    tls: ServerTls | None,
    tokens: BearerTokens | None,
) -> HttpSite:
    """The admin port: /metrics, the probes, the query API, behind the token if asked."""
    admin_app = build_admin_app(registry, health)
    if settings.store != "memory":
        scope = query_scope(settings)
        add_distinct_route(admin_app, DistinctQueries(store, scope, clock).answer)
        add_patterns_route(admin_app, PatternQueries(store, scope, clock).answer)
    else:
        add_distinct_route(admin_app, answer_without_history)
        add_patterns_route(admin_app, answer_without_history)
    if isinstance(keeper, ReplicaMerger):
        add_ready_detail(admin_app, keeper.readiness_detail)
    if settings.admin_auth and tokens is not None:
        admin_app.middlewares.append(
            token_middleware(tokens, "admin", _refuse_admin, open_paths=_PROBE_PATHS)
        )
    return HttpSite(
        admin_app,
        settings.admin_listen,
        # The admin port never asks for client certificates: kubelet probes have none.
        ssl_context=tls.ssl_context(verify_clients=False) if tls and settings.admin_tls else None,
    )


# Sinks get at least this long to deliver the last reports, even when the drain used the grace.
MIN_SINK_GRACE = 2.0


def open_aggregator(settings: Settings, now: float, *, keep_sketches: bool) -> Aggregator:
    """The counting state the settings ask for: one aggregator, or one per key."""
    # Event time waits for disordered records; arrival time has nothing to wait for.
    lateness = settings.allowed_lateness if settings.window_time == "event" else 0.0
    return aggregator_for(
        settings.attribute_keys,
        settings.window,
        now,
        settings.max_values,
        settings.sketch_lg_k,
        keep_sketches=keep_sketches,
        lateness=lateness,
        max_patterns=settings.max_patterns,
        top_patterns=settings.top_patterns,
    )


def build_reporter(
    make: Callable[..., ReporterT],
    settings: Settings,
    aggregator: Aggregator,
    queue: RequestQueue,
    clock: Clock,
    out: TextIO | None,
    metrics: Metrics,
    log: Any,
    sinks: ReportSinks,
) -> ReporterT:
    """The reporter the settings ask for; `make` is Reporter or one of its kinds (with its
    own arguments bound)."""
    return make(
        aggregator,
        queue,
        clock,
        out or sys.stdout,
        metrics,
        settings.attribute_key,
        settings.missing_label,
        settings.report_format,
        logger=log,
        window_time=settings.window_time,
        sinks=sinks,
        report_top=settings.report_top,
        patterns=patterns_shown(
            settings.count_patterns, settings.top_patterns, settings.report_patterns
        ),
    )


def sink_grace(deadline: float) -> float:
    return max(MIN_SINK_GRACE, deadline - time.monotonic())


def open_report_sinks(settings: Settings, log: Any, *, enabled: bool = True) -> ReportSinks:
    """The `--report-sink` destinations; stdout alone when not `enabled`."""
    if not enabled:
        return open_sinks(("stdout",), log)
    return open_sinks(
        settings.report_sink,
        log,
        settings.sink_queue_size,
        replica=settings.replica_id,
        outbox=open_outbox(settings) if _keeps_reports(settings) else None,
    )


def _keeps_reports(settings: Settings) -> bool:
    # Only a sink other than stdout has anything to keep: no outbox table otherwise.
    return any(uri != "stdout" for uri in settings.report_sink)


def load_tokens(settings: Settings, metrics: Metrics) -> BearerTokens | None:
    if settings.auth_token_file is None:
        return None
    tokens = BearerTokens(settings.auth_token_file, metrics.auth_refused)
    tokens.reload()
    return tokens


def _refuse_admin(refusal: Unauthenticated, _request: web.Request) -> web.Response:
    return web.Response(status=401, text=str(refusal))


def _tls_mode(tls: ServerTls | None, *, verify_clients: bool = True) -> str:
    if tls is None:
        return "plaintext"
    return "mutual_tls" if tls.mutual and verify_clients else "tls"


def _connection_options(settings: Settings) -> list[tuple[str, int]]:
    """Keepalive and per-connection limits, so dead, idle and greedy peers do not pile up."""
    return [
        # The server pings a connection quiet for keepalive_time and drops it if the ping is
        # not answered within keepalive_timeout: a vanished peer frees its resources.
        ("grpc.keepalive_time_ms", round(settings.grpc_keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", round(settings.grpc_keepalive_timeout * 1000)),
        # Pings also on connections without calls (an idle collector's connection is checked
        # too), and clients may ping (the Collector's keepalive) at most every 10 s; faster
        # pingers get GOAWAY (too_many_pings).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_connection_idle_ms", round(settings.grpc_max_connection_idle * 1000)),
        # One connection cannot open more than this many calls at once; further ones wait.
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
    ]


def _running_loop_name() -> str:
    """uvloop or asyncio (--event-loop): the package of the running loop's class."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]
