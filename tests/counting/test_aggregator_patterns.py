"""Patterns in the aggregator: counted per value and window, merged whatever the order or the
split (replicas, restarts), bounded by --max-patterns, reported with their top ones."""

from __future__ import annotations

import itertools
import pickle

import pytest

from otlp_stats.counting.aggregator import (
    Aggregator,
    LabelTally,
    ResolvedBatch,
    WindowReport,
    merge_snapshots,
    report_of_snapshot,
)
from otlp_stats.counting.keyed import aggregator_for
from otlp_stats.patterns.tally import OVERFLOW_PATTERN, PatternCount, reported_patterns

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def patterned(*counts: tuple[str, int, str], hashes: tuple[int, ...] = ()) -> LabelTally:
    """Records of the given (pattern, records, example), one hash each unless given."""
    records = sum(count[1] for count in counts)
    messages = list(hashes) or list(range(records))
    return LabelTally(records, messages, [], [PatternCount(*count) for count in counts])


# Three requests for two values; "payment" patterns differ only in a word, so the report's
# similarity merge makes them one.
BATCHES: list[ResolvedBatch] = [
    {
        "checkout": patterned(
            ("payment <*> accepted in <*>ms", 3, "payment 9 accepted in 3ms"),
            ("cart <*> emptied", 1, "cart 7 emptied"),
        ),
        "auth": patterned(("user <*> logged in at <*>", 2, "user 5 logged in at 3")),
    },
    {
        "checkout": patterned(
            ("payment <*> accepted in <*>ms", 2, "payment 1 accepted in 8ms"),
            ("payment <*> refused in <*>ms", 1, "payment 4 refused in 2ms"),
        ),
    },
    {
        "auth": patterned(("user <*> logged out at <*>", 4, "user 2 logged out at 9")),
        None: patterned(("boot", 1, "boot")),
    },
]


def one_window(aggregator: Aggregator) -> WindowReport:
    [report] = aggregator.close_until(T0 + 10)
    return report


def counted(batches: list[ResolvedBatch], top_patterns: int = 3) -> WindowReport:
    aggregator = Aggregator(10, T0, top_patterns=top_patterns)
    for batch in batches:
        aggregator.add(T0 + 1, batch)
    return one_window(aggregator)


def test_a_value_reports_its_distinct_and_top_patterns_after_the_similarity_merge() -> None:
    report = counted(BATCHES)
    checkout = next(entry for entry in report.values if entry.value == "checkout")
    # accepted and refused differ in one token of five: one pattern after the merge.
    assert checkout.distinct_patterns == 2
    assert checkout.top_patterns == (
        PatternCount("payment <*> <*> in <*>ms", 6, "payment 1 accepted in 8ms"),
        PatternCount("cart <*> emptied", 1, "cart 7 emptied"),
    )
    auth = next(entry for entry in report.values if entry.value == "auth")
    assert auth.distinct_patterns == 1
    assert auth.top_patterns == (
        PatternCount("user <*> logged <*> at <*>", 6, "user 2 logged out at 9"),
    )
    missing = next(entry for entry in report.values if entry.missing)
    assert missing.top_patterns == (PatternCount("boot", 1, "boot"),)


def test_top_patterns_lists_at_most_that_many_and_zero_only_counts_them() -> None:
    one = next(e for e in counted(BATCHES, top_patterns=1).values if e.value == "checkout")
    assert [count.records for count in one.top_patterns] == [6]
    assert one.distinct_patterns == 2
    none = next(e for e in counted(BATCHES, top_patterns=0).values if e.value == "checkout")
    assert none.top_patterns == ()
    assert none.distinct_patterns == 2


@pytest.mark.parametrize(
    "counts",
    [(), (PatternCount("a <*>", 2, "a 1"),), (PatternCount(OVERFLOW_PATTERN, 3, ""),)],
)
@pytest.mark.parametrize("top", [0, 1, 3])
def test_a_value_of_one_pattern_or_none_reports_what_the_merge_would(
    counts: tuple[PatternCount, ...], top: int
) -> None:
    aggregator = Aggregator(10, T0, top_patterns=top)
    aggregator.add(T0 + 1, {"v": LabelTally(5, [1], [], list(counts))})
    [entry] = one_window(aggregator).values
    expected = reported_patterns(counts, top)
    assert (entry.distinct_patterns, entry.top_patterns) == (expected.distinct, expected.top)


def test_values_without_patterns_report_none() -> None:
    report = counted([{"a": LabelTally.of_hashes([1, 2])}])
    assert report.values[0].distinct_patterns == 0
    assert report.values[0].top_patterns == ()


def test_the_order_of_the_traffic_does_not_change_the_report() -> None:
    reports = {counted(list(order)) for order in itertools.permutations(BATCHES)}
    assert len(reports) == 1


def test_traffic_split_across_two_replicas_and_merged_equals_one_node() -> None:
    one_node = counted(BATCHES)
    for split in range(len(BATCHES) + 1):
        mine, theirs = Aggregator(10, T0), Aggregator(10, T0)
        for batch in BATCHES[:split]:
            mine.add(T0 + 1, batch)
        for batch in BATCHES[split:]:
            theirs.add(T0 + 1, batch)
        for snapshot in theirs.snapshot():
            assert mine.merge(snapshot)
        assert one_window(mine).values == one_node.values


def test_closed_shares_sent_between_processes_merge_to_one_nodes_report() -> None:
    # --processes: each serving process's closed window goes, pickled, to the supervisor.
    one_node = counted(BATCHES)
    supervisor = Aggregator(10, T0)
    for batch in BATCHES:
        process = Aggregator(10, T0, keep_sketches=True)
        process.add(T0 + 1, batch)
        share = one_window(process).snapshot
        assert share is not None
        assert supervisor.merge(pickle.loads(pickle.dumps(share, pickle.HIGHEST_PROTOCOL)))
    assert one_window(supervisor).values == one_node.values


def test_merged_snapshots_report_what_one_node_reports() -> None:
    one_node = counted(BATCHES)
    shares = []
    for batch in BATCHES:
        replica = Aggregator(10, T0)
        replica.add(T0 + 1, batch)
        shares += replica.snapshot()
    merged = merge_snapshots(shares)
    assert report_of_snapshot(merged, partial=False).values == one_node.values


def test_a_restart_restores_the_patterns_of_open_windows() -> None:
    before = Aggregator(10, T0)
    before.add(T0 + 1, BATCHES[0])
    after = Aggregator(10, T0)
    after.restore(before.snapshot())
    for batch in BATCHES[1:]:
        after.add(T0 + 1, batch)
    assert one_window(after).values == counted(BATCHES).values


def test_patterns_past_max_patterns_go_to_the_overflow_pattern() -> None:
    aggregator = Aggregator(10, T0, max_patterns=2)
    aggregator.add(
        T0 + 1,
        {"a": patterned(("alpha", 5, "alpha"), ("bravo <*>", 4, "bravo 1"), ("x y z", 3, "x y z"))},
    )
    aggregator.add(T0 + 1, {"a": patterned(("q r", 2, "q r"), ("alpha", 1, "alpha"))})
    assert aggregator.tracked_patterns == 2
    [entry] = one_window(aggregator).values
    assert entry.pattern_overflow_records == 5
    # The overflow pattern is one pattern more, named when it is among the top.
    assert entry.distinct_patterns == 3
    assert entry.top_patterns == (
        PatternCount("alpha", 6, "alpha"),
        PatternCount("bravo <*>", 4, "bravo 1"),
        PatternCount(OVERFLOW_PATTERN, 5, ""),
    )


def test_the_overflow_value_keeps_the_patterns_of_values_past_max_values() -> None:
    aggregator = Aggregator(10, T0, max_values=1)
    aggregator.add(T0 + 1, {"a": patterned(("one", 1, "one"))})
    aggregator.add(T0 + 1, {"b": patterned(("two <*>", 2, "two 2"))})
    aggregator.add(T0 + 1, {"c": patterned(("two <*>", 1, "two 1"))})
    overflow = next(entry for entry in one_window(aggregator).values if entry.overflow)
    assert overflow.top_patterns == (PatternCount("two <*>", 3, "two 1"),)


def test_tracked_patterns_counts_open_windows_only() -> None:
    aggregator = Aggregator(10, T0)
    aggregator.add(T0 + 1, BATCHES[0])
    aggregator.add(T0 + 11, BATCHES[1])
    assert aggregator.tracked_patterns == 3 + 2
    aggregator.close_until(T0 + 10)
    assert aggregator.tracked_patterns == 2


def test_every_key_gets_the_pattern_settings() -> None:
    aggregator = aggregator_for(("k1", "k2"), 10, T0, max_patterns=1, top_patterns=0)
    batch = {"a": patterned(("one", 1, "one"), ("two", 1, "two"))}
    aggregator.add_keys(T0 + 1, [batch, batch])  # type: ignore[attr-defined]
    assert aggregator.tracked_patterns == 2
    reports = aggregator.close_until(T0 + 10)
    assert [r.values[0].pattern_overflow_records for r in reports] == [1, 1]
    assert [r.values[0].top_patterns for r in reports] == [(), ()]
