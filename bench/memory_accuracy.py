"""A window report checked against the counts a memory scenario carries by construction.

The rule, stated once: a figure the report does not mark as estimated must be exact. An
estimated figure must be within 3 standard errors of the truth (the theta sketch's relative
standard error is 1/sqrt(k), 1.6% at k = 4096), every one of them; and the truth must fall
inside the reported ~95% [lower_bound, upper_bound] for at least 90% of the estimated
entries, which leaves room for the 1 in 20 that a 95% interval misses by design.
Record counts are never estimated, so they must match exactly everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench.memory_workload import MemoryScenario

OVERFLOW_LABEL = "__overflow__"
STANDARD_ERRORS_ALLOWED = 3.0
SHARE_WITHIN_BOUNDS = 0.90


@dataclass
class AccuracyCheck:
    """Outcome of one report's check; `problems` empty means it passed."""

    values_reported: int = 0
    exact_figures: int = 0
    estimated_figures: int = 0
    estimated_within_bounds: int = 0
    worst_relative_error: float = 0.0
    relative_standard_error: float = 0.0
    overflow_values_estimate: int | None = None
    overflow_values_truth: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def check_report(
    scenario: MemoryScenario, reports: Sequence[Mapping[str, object]], records_acknowledged: int
) -> AccuracyCheck:
    check = AccuracyCheck(relative_standard_error=1 / math.sqrt(2**scenario.sketch_lg_k))
    if len(reports) != 1:
        check.problems.append(f"expected one window report, got {len(reports)}")
        return check
    report = reports[0]
    if records_acknowledged != scenario.records:
        check.problems.append(
            f"the server acknowledged {records_acknowledged:,} of {scenario.records:,} records"
        )
    if _number(report.get("records")) != scenario.records:
        check.problems.append(
            f"report counts {report.get('records')} records, sent {scenario.records:,}"
        )
    _check_distinct(check, "window total", report, scenario.bodies)
    entries = report.get("values")
    if not isinstance(entries, list):
        check.problems.append("the report has no list of values")
        return check
    _check_values(check, scenario, entries)
    _check_bounds_share(check)
    return check


def _check_values(check: AccuracyCheck, scenario: MemoryScenario, entries: list[object]) -> None:
    tracked_records = 0
    tracked_bodies = 0
    seen: set[int] = set()
    overflow: Mapping[str, object] | None = None
    for entry in entries:
        if not isinstance(entry, dict):
            check.problems.append(f"a value entry is not an object: {entry!r}")
            continue
        if entry.get("overflow") is True:
            overflow = entry
            continue
        label = str(entry.get("value"))
        index = scenario.value_index(label)
        if index is None or index in seen:
            check.problems.append(f"reported value {label!r} was not sent, or appears twice")
            continue
        seen.add(index)
        records = scenario.records_of(index)
        if _number(entry.get("records")) != records:
            check.problems.append(f"{label}: {entry.get('records')} records, sent {records}")
        tracked_records += records
        tracked_bodies += scenario.distinct_bodies_of(index)
        _check_distinct(check, label, entry, scenario.distinct_bodies_of(index))
    check.values_reported = len(seen)
    expected_tracked = min(scenario.values_sent, scenario.max_values)
    if len(seen) != expected_tracked:
        check.problems.append(f"{len(seen):,} values tracked, expected {expected_tracked:,}")
    untracked_values = scenario.values_sent - len(seen)
    if overflow is None:
        if untracked_values:
            check.problems.append(f"no overflow entry for {untracked_values:,} untracked values")
        return
    _check_overflow(check, scenario, overflow, tracked_records, tracked_bodies, untracked_values)


def _check_overflow(
    check: AccuracyCheck,
    scenario: MemoryScenario,
    overflow: Mapping[str, object],
    tracked_records: int,
    tracked_bodies: int,
    untracked_values: int,
) -> None:
    records = scenario.records - tracked_records
    if _number(overflow.get("records")) != records:
        check.problems.append(f"overflow: {overflow.get('records')} records, expected {records:,}")
    _check_distinct(check, OVERFLOW_LABEL, overflow, scenario.bodies - tracked_bodies)
    # The overflow's count of values comes without bounds: only the 3-standard-error rule.
    estimate = _number(overflow.get("distinct_values"))
    check.overflow_values_estimate = estimate
    check.overflow_values_truth = untracked_values
    error = _relative_error(estimate, untracked_values)
    check.worst_relative_error = max(check.worst_relative_error, error)
    if error > STANDARD_ERRORS_ALLOWED * check.relative_standard_error:
        check.problems.append(
            f"overflow: {estimate} distinct values, truth {untracked_values:,} ({error:.2%} off)"
        )


def _check_distinct(
    check: AccuracyCheck, label: str, entry: Mapping[str, object], truth: int
) -> None:
    reported = _number(entry.get("distinct_messages"))
    if entry.get("estimated") is not True:
        check.exact_figures += 1
        if reported != truth:
            check.problems.append(f"{label}: exact count {reported}, truth {truth:,}")
        return
    check.estimated_figures += 1
    lower = _number(entry.get("lower_bound"))
    upper = _number(entry.get("upper_bound"))
    if lower <= truth <= upper:
        check.estimated_within_bounds += 1
    error = _relative_error(reported, truth)
    check.worst_relative_error = max(check.worst_relative_error, error)
    if error > STANDARD_ERRORS_ALLOWED * check.relative_standard_error:
        check.problems.append(f"{label}: estimate {reported}, truth {truth:,} ({error:.2%} off)")


def _check_bounds_share(check: AccuracyCheck) -> None:
    if not check.estimated_figures:
        return
    share = check.estimated_within_bounds / check.estimated_figures
    # With a handful of estimates one miss is already past 10%; allow one miss in any case.
    misses = check.estimated_figures - check.estimated_within_bounds
    if share < SHARE_WITHIN_BOUNDS and misses > 1:
        check.problems.append(
            f"truth inside the ~95% bounds for only {check.estimated_within_bounds} of "
            f"{check.estimated_figures} estimates"
        )


def _relative_error(reported: int, truth: int) -> float:
    return abs(reported - truth) / truth if truth else float(reported != 0)


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1
