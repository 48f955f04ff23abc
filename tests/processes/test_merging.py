"""The supervisor's parts on their own: merging windows, merging metrics, counting cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otlp_stats.config import ConfigError, load_settings
from otlp_stats.counting.aggregator import Aggregator, LabelTally, ResolvedBatch, WindowReport
from otlp_stats.processes.cores import available_cores, cgroup_quota
from otlp_stats.processes.merged_metrics import MergedMetrics
from otlp_stats.telemetry import Metrics
from tests.support.servicetools import metric_value

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def hashes(*messages: int) -> LabelTally:
    return LabelTally.of_hashes(list(messages))


def closed_share(aggregator: Aggregator) -> WindowReport:
    [report] = aggregator.close_until(T0 + 10)
    return report


def keeping(max_values: int = 100) -> Aggregator:
    return Aggregator(10, T0, max_values, keep_sketches=True)


def test_merged_shares_report_what_one_process_counting_everything_reports() -> None:
    one, first, second = keeping(), keeping(), keeping()
    batches: list[ResolvedBatch] = [
        {"a": hashes(1, 2, 2), None: hashes(7)},
        {"a": hashes(2, 3), "b": hashes(4)},
        {"b": hashes(4, 5), None: hashes(7, 8)},
    ]
    for number, batch in enumerate(batches):
        one.add(T0 + 1, batch)
        (first if number % 2 else second).add(T0 + 1, batch)
    merged = Aggregator(10, T0, 100)
    for share in (closed_share(first), closed_share(second)):
        assert share.snapshot is not None
        assert merged.merge(share.snapshot)
    assert closed_share(merged) == closed_share(one)


def test_the_cap_on_values_holds_for_the_merged_window_as_for_one_process() -> None:
    first, second = keeping(max_values=2), keeping(max_values=2)
    first.add(T0 + 1, {"a": hashes(1), "b": hashes(2)})
    second.add(T0 + 1, {"c": hashes(3), "d": hashes(4), "e": hashes(5)})
    merged = Aggregator(10, T0, 2)
    for share in (closed_share(first), closed_share(second)):
        assert share.snapshot is not None
        merged.merge(share.snapshot)
    report = closed_share(merged)
    assert [entry.value for entry in report.values if not entry.overflow] == ["a", "b"]
    [overflow] = [entry for entry in report.values if entry.overflow]
    # c and d overflowed here, e already in the second process: every value past the cap.
    assert (overflow.records, report.overflow_values, report.records) == (3, 3, 5)


def test_a_share_for_a_window_already_reported_is_refused() -> None:
    late = keeping()
    late.add(T0 + 1, {"a": hashes(1)})
    merged = Aggregator(10, T0, 100)
    merged.close_until(T0 + 10)
    snapshot = closed_share(late).snapshot
    assert snapshot is not None
    assert merged.merge(snapshot) is False
    assert merged.open_windows == 0


def exposition(records: float, queued: float) -> bytes:
    registry = CollectorRegistry()
    Counter("otlp_stats_records_counted", "Records.", registry=registry).inc(records)
    Gauge("otlp_stats_queue_requests", "Queued.", registry=registry).set(queued)
    Counter("otlp_stats_windows_reported", "Not theirs.", registry=registry).inc(5)
    return generate_latest(registry)


def scraped(collector: MergedMetrics) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    families = text_string_to_metric_families(generate_latest(registry).decode())
    return {sample.name: sample.value for family in families for sample in family.samples}


def supervisor_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("otlp_stats_windows_reported", "Reports printed.", registry=registry).inc(2)
    Gauge("otlp_stats_queue_requests", "The supervisor queues nothing.", registry=registry)
    return registry


def test_metrics_sum_the_processes_and_take_reports_from_the_supervisor() -> None:
    merged = MergedMetrics(supervisor_registry())
    merged.update(0, exposition(10, 3))
    merged.update(1, exposition(32, 4))
    samples = scraped(merged)
    assert samples["otlp_stats_records_counted_total"] == 42
    assert samples["otlp_stats_queue_requests"] == 7
    assert samples["otlp_stats_windows_reported_total"] == 2


def test_a_dead_process_leaves_its_counters_but_not_its_gauges() -> None:
    merged = MergedMetrics(supervisor_registry())
    merged.update(0, exposition(10, 3))
    merged.update(1, exposition(32, 4))
    merged.retire(1)
    merged.update(1, exposition(1, 1))  # its replacement starts from zero
    samples = scraped(merged)
    assert samples["otlp_stats_records_counted_total"] == 43
    assert samples["otlp_stats_queue_requests"] == 4


def write_cgroup(root: Path, cpu_max: str) -> Path:
    """A cgroup v2 directory whose cpu.max says `cpu_max`."""
    root.mkdir(parents=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def test_cgroup_v2_quota_is_quota_over_period_and_max_means_none(tmp_path: Path) -> None:
    assert cgroup_quota(write_cgroup(tmp_path / "a", cpu_max="150000 100000")) == 1.5
    assert cgroup_quota(write_cgroup(tmp_path / "b", cpu_max="max 100000")) is None


def test_cgroup_v1_quota_is_read_from_cfs_files(tmp_path: Path) -> None:
    root = tmp_path / "v1" / "cpu"
    root.mkdir(parents=True)
    (root / "cpu.cfs_quota_us").write_text("200000\n")
    (root / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path / "v1") == 2.0
    (root / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path / "v1") is None


def test_available_cores_are_the_affinity_capped_by_the_quota_rounded_up(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path / "none") == affinity
    assert available_cores(write_cgroup(tmp_path / "half", cpu_max="50000 100000")) == 1
    big = write_cgroup(tmp_path / "big", cpu_max=f"{(affinity + 8) * 100000} 100000")
    assert available_cores(big) == affinity


def test_processes_auto_is_the_cores_available_and_a_count_must_be_positive() -> None:
    assert load_settings(["--processes", "auto"], environ={}).processes == available_cores()
    assert load_settings(["--processes", "3"], environ={}).processes == 3
    with pytest.raises(ConfigError):
        load_settings(["--processes", "0"], environ={})


def test_event_time_with_a_store_is_refused_for_several_processes(tmp_path: Path) -> None:
    flags = ["--processes", "2", "--window-time", "event", "--store", f"sqlite:///{tmp_path}/s.db"]
    with pytest.raises(ConfigError, match="processes > 1 with window_time=event"):
        load_settings(flags, environ={})
    assert load_settings(flags[:4], environ={}).processes == 2


def test_pattern_cuts_of_every_process_are_summed_per_bound() -> None:
    def process(tokens: int, length: int) -> bytes:
        metrics = Metrics(CollectorRegistry())
        metrics.hot.pattern_cut_tokens = tokens
        metrics.hot.pattern_cut_length = length
        return generate_latest(metrics.registry)

    # The supervisor's own Metrics count no cuts: its zeros are not in the sum.
    supervisor = Metrics(CollectorRegistry())
    supervisor.hot.pattern_cut_tokens = 1_000
    merged = MergedMetrics(supervisor.registry)
    merged.update(0, process(3, 1))
    merged.update(1, process(4, 0))
    merged.retire(1)
    merged.update(1, process(2, 5))
    registry = CollectorRegistry()
    registry.register(merged)
    text = generate_latest(registry).decode()
    assert metric_value(text, "otlp_stats_pattern_cut_records_total", {"bound": "tokens"}) == 9
    assert metric_value(text, "otlp_stats_pattern_cut_records_total", {"bound": "length"}) == 6
