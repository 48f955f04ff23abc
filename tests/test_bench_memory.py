"""The memory benchmark's harness: requests carry the counts it believes, and its check bites.

The end-to-end cases run the three scenarios in miniature against the real service, with a
sketch of k = 32 so the estimated path and its bounds are exercised on a few thousand records,
and a cap of a few values so the overflow entry is.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench.memory_accuracy import check_report
from bench.memory_run import MEMORY_SCENARIOS, measure_memory
from bench.memory_workload import MemoryScenario, RequestTemplate

REPO = Path(__file__).resolve().parent.parent
SMALL = MemoryScenario(
    name="t", title="tiny", records=250, records_per_request=100, distinct_values=7,
    body_length=40, callers=2, body_repeat=3,
)  # fmt: skip


def decoded_records(template: RequestTemplate, index: int) -> list[tuple[str, str]]:
    request = ExportLogsServiceRequest.FromString(template.payload(index))
    (resource_logs,) = request.resource_logs
    (scope_logs,) = resource_logs.scope_logs
    return [
        (record.body.string_value, record.attributes[0].value.string_value)
        for record in scope_logs.log_records
    ]


def exact_report(scenario: MemoryScenario) -> dict[str, object]:
    """The report a perfect counter would print for `scenario` (no overflow, nothing estimated)."""
    values = [
        {
            "value": scenario.value_label(value),
            "overflow": False,
            "distinct_messages": scenario.distinct_bodies_of(value),
            "estimated": False,
            "records": scenario.records_of(value),
        }
        for value in range(scenario.values_sent)
    ]
    return {
        "records": scenario.records,
        "distinct_messages": scenario.bodies,
        "estimated": False,
        "values": values,
    }


def test_templated_requests_carry_the_bodies_and_values_the_scenario_counts() -> None:
    template = RequestTemplate(SMALL)
    records = [
        record for index in range(SMALL.requests) for record in decoded_records(template, index)
    ]
    assert len(records) == SMALL.records == sum(template.records_in(i) for i in range(3))
    assert {len(body) for body, _ in records} == {SMALL.body_length}
    for value in range(SMALL.distinct_values):
        label = SMALL.value_label(value)
        under = [body for body, record_value in records if record_value == label]
        assert len(under) == SMALL.records_of(value)
        assert len(set(under)) == SMALL.distinct_bodies_of(value)
    assert len({body for body, _ in records}) == SMALL.bodies


def test_requests_keep_their_wire_length_whatever_the_counters() -> None:
    scenario = replace(SMALL, records=10**6, body_repeat=1)
    template = RequestTemplate(scenario)
    assert len(template.payload(0)) == len(template.payload(scenario.requests - 1))
    assert decoded_records(template, scenario.requests - 1)[-1][0].startswith("t-000000999999 ")


def test_a_perfect_report_passes_the_check() -> None:
    assert check_report(SMALL, [exact_report(SMALL)], SMALL.records).passed


def test_the_check_catches_a_wrong_exact_count_and_a_lost_record() -> None:
    report = exact_report(SMALL)
    values = report["values"]
    assert isinstance(values, list)
    values[2]["distinct_messages"] += 1
    check = check_report(SMALL, [report], SMALL.records - 1)
    assert not check.passed
    assert any("value-000002: exact count" in problem for problem in check.problems)
    assert any("acknowledged" in problem for problem in check.problems)


def test_the_check_holds_estimates_to_three_standard_errors() -> None:
    scenario = replace(SMALL, sketch_lg_k=5)  # relative standard error 1/sqrt(32), 17.7%
    report = exact_report(scenario)
    values = report["values"]
    assert isinstance(values, list)
    truth = scenario.distinct_bodies_of(0)
    values[0].update(estimated=True, lower_bound=truth - 1, upper_bound=truth + 1)
    assert check_report(scenario, [report], scenario.records).passed
    values[0]["distinct_messages"] = round(truth * 1.6)
    check = check_report(scenario, [report], scenario.records)
    assert [problem for problem in check.problems if "off" in problem]


def test_scaling_keeps_the_one_record_per_value_shape_of_scenario_b() -> None:
    (_, b, _) = MEMORY_SCENARIOS
    small = b.scaled(0.01)
    assert small.records == small.distinct_values == 10_000
    assert small.max_values == 10_000


@pytest.mark.parametrize(
    "scenario",
    [
        MemoryScenario(
            name="a", title="distinct messages", records=4000, records_per_request=500,
            distinct_values=4, body_length=100, callers=3, sketch_lg_k=5,
        ),
        MemoryScenario(
            name="b", title="values past the cap", records=300, records_per_request=100,
            distinct_values=300, body_length=100, callers=3, max_values=40, sketch_lg_k=5,
        ),
        MemoryScenario(
            name="c", title="64 KiB bodies", records=64, records_per_request=8,
            distinct_values=4, body_length=64 * 1024, callers=4, body_repeat=2,
        ),
    ],
    ids=lambda scenario: scenario.title,
)  # fmt: skip
def test_each_scenario_in_miniature_matches_the_real_service(
    scenario: MemoryScenario, tmp_path: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTLP_STATS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    run = measure_memory(scenario, cwd=tmp_path, env=env, deadline_seconds=60)
    assert run.accuracy.problems == []
    assert run.passed
    assert run.records_acknowledged == scenario.records
    assert run.peak_rss_bytes >= run.idle_rss_bytes > 0
    if scenario.sketch_lg_k == 5:
        assert run.accuracy.estimated_figures > 0
    if scenario.max_values < scenario.distinct_values:
        assert run.accuracy.values_reported == scenario.max_values
        assert run.accuracy.overflow_values_truth == scenario.distinct_values - scenario.max_values
