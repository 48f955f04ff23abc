"""One /metrics for the whole service: the supervisor's figures beside its processes' summed.

Each serving process sends its exposition every second (processes/child.py); at scrape time
they are parsed and added up sample by sample (same name, same labels): counters, histogram
buckets and queue gauges of N processes sum to the service's. The figures of what the
supervisor alone does (reports, the store, health, its own process) come from it alone. A
process that dies leaves its counters behind, so a counter of the service never goes back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

# Families the supervisor alone produces: its processes' are not theirs to report (they print
# no window, keep no store) or would be counted twice (process_*: each process's own).
SUPERVISOR_FAMILIES = (
    "otlp_stats_windows_reported",
    "otlp_stats_revisions",
    "otlp_stats_overflow_records",
    "otlp_stats_pattern_overflow_records",
    "otlp_stats_last_window_",
    "otlp_stats_health_state",
    "otlp_stats_watermark_lag_seconds",
    "otlp_stats_store_",
    "otlp_stats_scoped_reports",
    "otlp_stats_process",  # processes, process restarts, lost window shares
    "otlp_stats_lost_",
    "process_",
    "python_",
)
# Families both sides add to: tokens refused on the admin port (supervisor) and on the OTLP
# ports (processes).
SHARED_FAMILIES = ("otlp_stats_auth_refused",)
# What survives a process's death: values that only ever grow.
_CUMULATIVE = frozenset({"counter", "histogram", "summary"})

_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def _supervisors(name: str) -> bool:
    return name.startswith(SUPERVISOR_FAMILIES)


class _Family:
    """One family's samples, added up across sources in the order they first appear."""

    def __init__(self, metric: Metric) -> None:
        self.name = metric.name
        self.documentation = metric.documentation
        self.type = metric.type
        self.values: dict[_SampleKey, float] = {}

    def add(self, metric: Metric) -> None:
        for sample in metric.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            self.values[key] = self.values.get(key, 0.0) + sample.value

    def metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, self.type)
        for (name, labels), value in self.values.items():
            metric.add_sample(name, dict(labels), value)
        return metric


def _sum(sources: Iterable[Metric]) -> dict[str, _Family]:
    families: dict[str, _Family] = {}
    for metric in sources:
        family = families.get(metric.name)
        if family is None:
            family = families[metric.name] = _Family(metric)
        family.add(metric)
    return families


def parse_exposition(text: bytes) -> list[Metric]:
    return list(text_string_to_metric_families(text.decode("utf-8")))


class MergedMetrics(Collector):
    """The supervisor's registry (its own families) and its processes' latest expositions."""

    def __init__(self, supervisor: CollectorRegistry) -> None:
        self._supervisor = supervisor
        self._latest: dict[int, bytes] = {}
        # Counters of processes that died or were replaced, so the sums never go back.
        self._retired: list[Metric] = []

    def update(self, slot: int, exposition: bytes) -> None:
        self._latest[slot] = exposition

    def retire(self, slot: int) -> None:
        """The process in `slot` has ended: keep its cumulative figures, forget its gauges."""
        exposition = self._latest.pop(slot, None)
        if exposition is None:
            return
        kept = [m for m in parse_exposition(exposition) if m.type in _CUMULATIVE]
        self._retired = [family.metric() for family in _sum([*self._retired, *kept]).values()]

    def collect(self) -> Iterator[Metric]:
        own = [
            metric
            for metric in self._supervisor.collect()
            if _supervisors(metric.name) or metric.name in SHARED_FAMILIES
        ]
        theirs = [
            metric
            for exposition in self._latest.values()
            for metric in parse_exposition(exposition)
            if not _supervisors(metric.name)
        ]
        retired = [metric for metric in self._retired if not _supervisors(metric.name)]
        for family in _sum([*own, *theirs, *retired]).values():
            yield family.metric()
