"""The supervisor of --processes N: N serving processes on the same ports, one service outside.

The supervisor binds no OTLP port. It starts the serving processes (processes/child.py), which
receive and count; each sends the windows it closes as sketches, and says which windows it has
closed. The supervisor merges each window's shares into its own aggregator (sketches unioned,
records summed, the per-window cap applied as in one process) and prints the window, once,
when every live process has closed it. It owns what is one per service: the reporter, the store
and its keeper (one SQLite writer; one Redis share per replica), the admin port with /metrics
and the probes. A process that dies is started again and the windows it held are counted as
lost shares (otlp_stats_lost_window_shares_total), never silently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import structlog
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otlp_stats.clock import Clock, SystemClock
from otlp_stats.config import ListenAddress, Settings
from otlp_stats.counting.aggregator import CLOCK_STEPPED_BACK
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.health import Health, HealthState
from otlp_stats.operating.state_metrics import StateCollector
from otlp_stats.processes.link import Share
from otlp_stats.processes.merged_metrics import MergedMetrics
from otlp_stats.processes.serving import Handlers, ServingProcess
from otlp_stats.receiving.tls import server_tls
from otlp_stats.reporting.reporter import Reporter
from otlp_stats.service import (
    build_admin_site,
    build_reporter,
    load_tokens,
    open_aggregator,
    open_report_sinks,
    sink_grace,
)
from otlp_stats.store.location import open_keeper, open_store
from otlp_stats.telemetry import Metrics

# A process that has not closed a window this long after every other one could have is
# taken as stuck: the window is printed without its share, which is counted lost if it comes.
STRAGGLER_GRACE = 5.0
START_TIMEOUT = 60.0
# A process that dies soon after its start is started again after a pause that doubles.
_RESTART_FIRST = 0.5
_RESTART_MOST = 30.0
_STABLE_AFTER = 10.0


class MergingReporter(Reporter):
    """The reporter over the merged windows: its watermark is what every process has closed."""

    def __init__(self, *args: Any, promised: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._promised = promised

    def watermark(self) -> float:
        return min(self._clock.now(), self._promised())


class Supervisor:
    """Same lifecycle as Service (start, stop, reload_credentials), for N serving processes."""

    def __init__(self, settings: Settings, clock: Clock | None = None, out: TextIO | None = None):
        self.settings = settings
        self.clock = clock or SystemClock()
        self.log: Any = structlog.get_logger("otlp_stats")
        self.health = Health()
        # The supervisor's own figures; /metrics shows them merged with its processes'.
        self.own_registry = CollectorRegistry()
        ProcessCollector(registry=self.own_registry)
        PlatformCollector(registry=self.own_registry)
        self.metrics = Metrics(self.own_registry)
        self.tls = server_tls(settings)
        self.tokens = load_tokens(settings, self.metrics)
        self.aggregator = open_aggregator(
            settings, self.clock.now(), keep_sketches=settings.store != "memory"
        )
        # The sinks live here: the supervisor owns the one reporter of the service.
        self.sinks = open_report_sinks(settings, self.log)
        self.own_registry.register(self.sinks.collector())
        self.reporter = build_reporter(
            functools.partial(MergingReporter, promised=self._promised),
            settings,
            self.aggregator,
            # Nothing is queued here: the processes' queues hold the watermark back, each
            # through what it says it has closed.
            RequestQueue(1, 1),
            self.clock,
            out,
            self.metrics,
            self.log,
            self.sinks,
        )
        self.store = open_store(settings)
        self.keeper = open_keeper(
            settings, self.store, self.aggregator, self.reporter, self.clock, self.log
        )
        self.own_registry.register(self.keeper.collector())
        self.own_registry.register(
            StateCollector(
                RequestQueue(1, 1),
                self.health,
                lambda: self.reporter.last_reports,
                lambda: {CLOCK_STEPPED_BACK: 0},
                settings.missing_label,
                settings.metrics_top_values,
                lambda: (0, 0),
                lambda: 0,
                self.reporter.watermark_lag,
                # Its processes track the patterns; their gauges are summed (merged_metrics).
                (lambda: 0) if settings.count_patterns else None,
            )
        )
        self.merged = MergedMetrics(self.own_registry)
        self.registry = CollectorRegistry()
        self.registry.register(self.merged)
        self.registry.register(ProcessesCollector(self))
        self.admin = build_admin_site(
            settings,
            self.registry,
            self.health,
            self.store,
            self.keeper,
            self.clock,
            self.tls,
            self.tokens,
        )
        self.processes: dict[int, ServingProcess] = {}
        self._following: dict[int, asyncio.Task[None]] = {}
        self._serving_settings = dataclasses.replace(
            settings, store="memory", report_sink=("stdout",)
        )
        self._restored = False
        self._stopping = False
        self._frozen_watermark: float | None = None
        self.restarts = 0
        self.lost_window_shares = 0
        self._delays: dict[int, float] = {}
        self.grpc_port = 0
        self.http_port = 0

    async def start(self) -> None:
        """Admin and reporting first, then the first process (it binds the ports: with port 0
        the OS picks them), then the others on the ports it got."""
        await self.admin.start()
        await self.keeper.restore()
        self._restored = True
        await self.keeper.start()
        self.sinks.start()
        await self.reporter.start()
        first = self._spawn(0)
        ready = await asyncio.wait_for(asyncio.shield(first.ready), START_TIMEOUT)
        self.grpc_port, self.http_port = ready.grpc_port, ready.http_port
        self._serving_settings = dataclasses.replace(
            self._serving_settings,
            grpc_listen=ListenAddress(self.settings.grpc_listen.host, self.grpc_port),
            http_listen=ListenAddress(self.settings.http_listen.host, self.http_port),
        )
        others = [self._spawn(slot) for slot in range(1, self.settings.processes)]
        await asyncio.wait_for(
            asyncio.gather(*(asyncio.shield(p.ready) for p in others)), START_TIMEOUT
        )
        self.health.move_to(HealthState.SERVING)
        self.log.info(
            "serving",
            grpc_port=self.grpc_port,
            http_port=self.http_port,
            admin_port=self.admin.port,
            processes=self.settings.processes,
            pids=[p.pid for p in self.processes.values()],
            attribute_key=",".join(self.settings.attribute_keys),
            window_seconds=self.settings.window,
            window_time=self.settings.window_time,
        )

    def _spawn(self, slot: int) -> ServingProcess:
        """Start the process of `slot` and follow it; it promises nothing older than now."""
        first_open = self.aggregator.index_of(self.clock.now() - self.aggregator.lateness)
        process = ServingProcess(slot, self._serving_settings, first_open)
        self.processes[slot] = process
        self._following[slot] = asyncio.create_task(
            self._follow(process, time.monotonic()), name=f"serving-process-{slot}"
        )
        return process

    async def _follow(self, process: ServingProcess, started: float) -> None:
        handlers = Handlers(self._take_share, self.merged.update)
        exit_code = await process.follow(handlers)
        self.merged.retire(process.slot)
        if self._stopping or process.stopped or self.health.state is not HealthState.SERVING:
            # Stopped as asked, or failed while the service starts: start() says so.
            return
        # Died (killed, crashed): what it held of the open windows is gone with it.
        self.restarts += 1
        self.lost_window_shares += process.open_windows
        self.log.error(
            "process_died",
            process=process.slot,
            pid=process.pid,
            exit_code=exit_code,
            lost_window_shares=process.open_windows,
        )
        del self.processes[process.slot]
        await asyncio.sleep(self._restart_delay(process.slot, time.monotonic() - started))
        if self._stopping:
            return
        replacement = self._spawn(process.slot)
        try:
            await asyncio.wait_for(asyncio.shield(replacement.ready), START_TIMEOUT)
        except (RuntimeError, TimeoutError):
            return  # its own end is followed, and logged, like this one's
        self.log.info("process_restarted", process=process.slot, pid=replacement.pid)

    def _restart_delay(self, slot: int, lived: float) -> float:
        """At once after a long life; after a pause that doubles while it keeps dying young
        (a port taken, a bad file), so a crash loop does not burn a core."""
        if lived > _STABLE_AFTER:
            self._delays[slot] = _RESTART_FIRST
            return 0.0
        delay = self._delays.get(slot, _RESTART_FIRST)
        self._delays[slot] = min(_RESTART_MOST, delay * 2)
        return delay

    def _take_share(self, share: Share) -> None:
        if not self.aggregator.merge(share.snapshot):
            # Printed already without it (a straggler past the grace): said, not hidden.
            self.lost_window_shares += 1
            self.log.error("share_after_report", window_start=share.snapshot.start)

    def _promised(self) -> float:
        """The time before which every live process has closed its windows and sent them."""
        if self._frozen_watermark is not None:
            return self._frozen_watermark
        now = self.clock.now()
        # A process that is behind (a backlog in its queue) still talks, and holds the window
        # back as one process's queue does: its records are acknowledged once counted, so
        # printing without its share would lose them. Only a process silent past the grace
        # (stuck) is passed over; what it sends later is counted as a lost share.
        heard_since = time.monotonic() - STRAGGLER_GRACE
        talking = [p for p in self.processes.values() if p.last_heard >= heard_since]
        if not talking:
            return now - STRAGGLER_GRACE
        first_open = min(p.first_open_index for p in talking)
        return self.aggregator.window_bounds(first_open)[0] + self.aggregator.lateness

    async def stop(self) -> bool:
        """Drain every process (each sends its last shares, the partial ones too), then print
        what is left as one report per window, the current one partial."""
        if self.health.state is HealthState.STOPPED:
            return True
        self.health.move_to(HealthState.DRAINING)
        deadline = time.monotonic() + self.settings.shutdown_grace
        # Windows close from here only at the end, as the one partial report.
        self._frozen_watermark = self.reporter.watermark()
        self._stopping = True
        self.log.info("draining", processes=len(self.processes))
        for process in self.processes.values():
            process.request_stop()
        following = list(self._following.values())
        if following:
            _, pending = await asyncio.wait(following, timeout=self.settings.shutdown_grace + 10)
            for process in self.processes.values():
                if not process.stopped:
                    process.kill()
            if pending:
                await asyncio.wait(pending, timeout=10)
        drained = bool(self.processes) and all(p.drained for p in self.processes.values())
        if self._restored:
            await self.keeper.checkpoint_now()
            await self.reporter.stop()
            await self.keeper.stop()
        await self.sinks.stop(sink_grace(deadline))
        self.health.move_to(HealthState.STOPPED)
        await self.admin.stop()
        self.log.info("stopped", drained=drained)
        return drained

    def reload_credentials(self) -> bool:
        """SIGHUP: the token file re-read here (admin port) and by every process (OTLP ports)."""
        for process in self.processes.values():
            process.reload_credentials()
        if self.tokens is None:
            return False
        self.tokens.reload()
        self.log.info("credentials_reloaded", processes=len(self.processes))
        return True


class ProcessesCollector(Collector):
    """How many processes serve, how often one was replaced, what their deaths cost."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        supervisor = self._supervisor
        yield GaugeMetricFamily(
            "otlp_stats_processes",
            "Serving processes running (--processes).",
            value=len(supervisor.processes),
        )
        yield CounterMetricFamily(
            "otlp_stats_process_restarts",
            "Serving processes that died and were started again.",
            value=supervisor.restarts,
        )
        yield CounterMetricFamily(
            "otlp_stats_lost_window_shares",
            "Window shares that never reached a report: held by a process that died, or sent "
            "after their window was printed.",
            value=supervisor.lost_window_shares,
        )
