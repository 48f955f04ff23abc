"""The small-request bench's pacing and its --processes rows (bench/small_client.py,
bench/small_requests.py): the paced load is the same for one process and for two."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.processes_breakdown import plan_runs
from bench.small_client import Pace
from bench.small_requests import (
    BARE_PAIR,
    BARE_POLLER,
    H2LOAD_SCENARIOS,
    PACED_SCENARIOS,
    PROCESSES,
    SCENARIOS,
    SHARE_SCENARIOS,
    Figure,
    Scenario,
    SmallRequestCost,
    render_small_requests,
)


def test_slots_are_one_over_the_rate_apart_whoever_takes_them() -> None:
    pace = Pace(100.0, now=10.0)
    # Three callers at the same moment: the first sends at once, the others wait their turn.
    assert [pace.delay(10.0) for _ in range(3)] == pytest.approx([0.0, 0.01, 0.02])
    # A caller arriving after its slot sends at once; the schedule goes on from that slot.
    assert pace.delay(10.035) == 0.0
    assert pace.delay(10.035) == pytest.approx(0.005)


def test_a_server_far_behind_gets_no_burst_to_catch_up() -> None:
    pace = Pace(100.0, now=0.0)
    pace.delay(0.0)
    # A second late: of the 100 missed slots only the last 50 ms' are sent at once (5, and
    # the slot due now), then the pace resumes.
    late = [pace.delay(1.0) for _ in range(9)]
    assert late == pytest.approx([0.0] * 6 + [0.01, 0.02, 0.03])


def test_no_rate_means_no_pacing() -> None:
    pace = Pace(0.0, now=0.0)
    assert [pace.delay(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]


def _figure(rate: float, cpu: float = 100.0) -> Figure:
    return Figure(cpu_us_per_request=cpu, requests_per_second=rate, refused=0)


def test_the_pace_is_a_share_of_one_process_at_saturation_in_the_same_round() -> None:
    cost = SmallRequestCost(callers=32, seconds=1.0)
    paced = PACED_SCENARIOS[0]
    cost.rounds[("service", paced.saturated.name)] = [_figure(3000.0), _figure(4000.0)]
    cost.rounds[(PROCESSES, paced.saturated.name)] = [_figure(9000.0)]
    # Two processes are offered what one process was, not a share of their own rate.
    assert cost.pace(PROCESSES, paced) == pytest.approx(4000.0 * paced.load)
    assert cost.pace("service", paced) == pytest.approx(4000.0 * paced.load)


def test_without_one_process_measured_a_server_is_paced_by_its_own_rate() -> None:
    cost = SmallRequestCost(callers=32, seconds=1.0)
    paced = PACED_SCENARIOS[1]
    cost.rounds[(PROCESSES, paced.saturated.name)] = [_figure(2000.0)]
    assert cost.pace(PROCESSES, paced) == pytest.approx(2000.0 * paced.load)
    with pytest.raises(RuntimeError):
        cost.pace("service", Scenario("grpc", 1, load=0.5))


def test_the_report_gives_the_paced_ratio_round_by_round() -> None:
    cost = SmallRequestCost(callers=32, seconds=1.0)
    paced = PACED_SCENARIOS[1]
    cost.rounds[("service", paced.name)] = [_figure(1500.0, 100.0), _figure(1500.0, 120.0)]
    cost.rounds[(PROCESSES, paced.name)] = [_figure(1500.0, 105.0), _figure(1500.0, 150.0)]
    text = "\n".join(render_small_requests(cost))
    assert "paced at 50% of 1 process's saturation: --processes 2" in text
    # The upper median of the rounds' own ratios, not a ratio of medians from other rounds.
    assert "1.25x, median round (medians 150 vs 120 µs), NOT met" in text
    assert "(round by round: 1.05 / 1.25)" in text
    assert "processes=2: µs/request by round 105 / 150 (requests/s 1,500 / 1,500)" in text


def test_the_ratio_is_the_median_round_s_even_when_medians_come_from_other_rounds() -> None:
    cost = SmallRequestCost(callers=32, seconds=1.0)
    paced = PACED_SCENARIOS[0]
    one = [90.0, 200.0, 100.0]
    two = [180.0, 210.0, 105.0]  # rounds: 2.00, 1.05, 1.05
    cost.rounds[("service", paced.name)] = [_figure(1000.0, cpu) for cpu in one]
    cost.rounds[(PROCESSES, paced.name)] = [_figure(1000.0, cpu) for cpu in two]
    text = "\n".join(render_small_requests(cost))
    # Medians 180 over 100 would say 1.80x; round by round the median is 1.05x.
    assert "1.05x, median round (medians 180 vs 100 µs), met" in text


def test_the_breakdown_measures_one_process_at_each_serving_process_share() -> None:
    assert plan_runs([2], 0.0) == [(1, 0.0), (2, 0.0)]
    assert plan_runs([2, 4], 3000.0) == [
        (1, 3000.0),
        (2, 3000.0),
        (4, 3000.0),
        (1, 1500.0),
        (1, 750.0),
    ]


def test_two_processes_are_also_set_against_one_at_each_one_s_share() -> None:
    cost = SmallRequestCost(callers=32, seconds=1.0)
    paced, share = PACED_SCENARIOS[1], SHARE_SCENARIOS[1]
    assert (share.transport, share.records, share.load) == (paced.transport, 10, paced.load / 2)
    cost.rounds[("service", paced.saturated.name)] = [_figure(4000.0)]
    assert cost.pace("service", share) == pytest.approx(1000.0)
    cost.rounds[(PROCESSES, paced.name)] = [_figure(2000.0, 120.0), _figure(2000.0, 130.0)]
    cost.rounds[("service", share.name)] = [_figure(1000.0, 130.0), _figure(1000.0, 125.0)]
    text = "\n".join(render_small_requests(cost))
    assert "--processes 2 ÷ one process at 25% (what each serving process gets): 1.04x" in text
    assert "(round by round: 0.92 / 1.04)" in text
    assert "paced at 25% of 1 process's saturation, service: µs/request by round 130 / 125" in text
    # Only one process is measured at the share: no ratio line without a pair.
    assert "25% of 1 process's saturation, service ÷" not in text


def test_the_c_sender_s_rows_say_so_and_give_its_own_cpu() -> None:
    cost = SmallRequestCost(callers=32, seconds=1.0)
    sent = H2LOAD_SCENARIOS[0]
    assert sent.name == "10 records, OTLP/HTTP protobuf, 32 connections, sent by h2load"
    assert sent.saturated == sent
    figure = Figure(cpu_us_per_request=40.0, requests_per_second=9000.0, refused=0)
    cost.rounds[("service", sent.name)] = [replace(figure, client_us_per_request=6.4)]
    cost.rounds[(PROCESSES, sent.name)] = [replace(figure, cpu_us_per_request=42.0)]
    text = "\n".join(render_small_requests(cost))
    assert (
        f"- {sent.name}: --processes 2 CPU per request within 10% of one process's: 1.05x" in text
    )
    assert (
        f"- {sent.name}, service: µs/request by round 40 (requests/s 9,000); refused 0; "
        "the client's own CPU µs/request 6" in text
    )


def test_the_table_compares_the_service_with_a_bare_handler_on_its_own_listener() -> None:
    cost = SmallRequestCost(callers=32, seconds=1.0)
    one = SCENARIOS[0]
    for server, cpu in (("service", 90.0), ("baseline", 100.0), ("bare", 80.0)):
        cost.rounds[(server, one.name)] = [_figure(5000.0, cpu)]
    cost.rounds[(BARE_POLLER, one.name)] = [_figure(6000.0, 60.0)]
    text = "\n".join(render_small_requests(cost))
    # Baseline, bare, bare on the poller listener; then service over each of them.
    assert f"| {one.name} | 90 | 100 | 80 | 60 | 0.90 | 1.12 | 1.50 | 5,000 |" in text
    assert f"- {one.name}, service ÷ {BARE_POLLER} round by round: 1.50" in text


def test_two_bare_handlers_sharing_the_port_are_set_against_one() -> None:
    cost = SmallRequestCost(callers=32, seconds=1.0)
    grpc = H2LOAD_SCENARIOS[1]
    assert grpc.transport == "grpc"
    cost.rounds[(BARE_POLLER, grpc.name)] = [_figure(9000.0, 100.0), _figure(9000.0, 110.0)]
    cost.rounds[(BARE_PAIR, grpc.name)] = [_figure(9500.0, 130.0), _figure(9500.0, 121.0)]
    text = "\n".join(render_small_requests(cost))
    assert (
        f"- {grpc.name}: the yardstick, bare grpc.aio on the same listener, two processes "
        "sharing the port ÷ one: 1.30x, median round (round by round: 1.30 / 1.10)" in text
    )
