"""make bench's interleaved rounds: which round the table shows, and the round-by-round lines."""

from __future__ import annotations

from bench.load_run import LoadFigures
from bench.report import _round_lines
from bench.run import median_round
from bench.server_run import ServerRun

_LOAD = LoadFigures(1000, 1000.0, 1.0, 1.0, 2.0, 0, 0, 0, "digest")


def run(name: str, cpu: float, records: int = 1000) -> ServerRun:
    return ServerRun(
        name=name,
        saturation=_LOAD,
        half_rate=_LOAD,
        half_rate_target_rps=1.0,
        cpu_us_per_record=cpu,
        peak_rss_bytes=1,
        processes=1,
        records_acknowledged=records,
        records_reported=records,
        window_reports=1,
        partial_reports=1,
        metric_counted=None,
        metric_error=None,
        exit_code=0,
        digests_seen=frozenset({"digest"}),
    )


def test_the_table_shows_the_median_round_of_those_that_counted() -> None:
    rounds = [run("service", 0.9), run("service", 0.7), None, run("service", 1.1)]
    assert median_round(rounds) is rounds[0]  # 0.7, 0.9, 1.1: the middle one
    # An even count takes the upper middle (the less flattering); a round that counted nothing
    # (its CPU per record is 0) is left out rather than sorted first.
    upper, counted = run("service", 0.9), run("service", 0.8)
    assert median_round([run("service", 0.7), upper]) is upper
    assert median_round([run("service", 0.0, records=0), counted]) is counted
    assert median_round([None, None]) is None


def test_rounds_pair_by_their_number_even_when_one_failed() -> None:
    lines = _round_lines(
        {
            "baseline": [run("baseline", 5.0), None, run("baseline", 4.0)],
            "service": [run("service", 1.0), run("service", 0.9), run("service", 0.8)],
        }
    )
    assert lines == [
        "- Baseline CPU µs/record by round: 5.00 / failed / 4.00 (the table: the median)",
        "- Service CPU µs/record by round: 1.00 / 0.90 / 0.80 (the table: the median)",
        "- Service ÷ baseline CPU per record, round by round: 0.20 / n/a / 0.20",
    ]
