"""Pattern tallies: order does not matter below the bound, the bound holds, bytes round-trip."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otlp_stats.patterns.tally import (
    MAX_EXAMPLE_CHARS,
    OVERFLOW_PATTERN,
    PatternCount,
    PatternTable,
    decode_counts,
    encode_counts,
    merge_counts,
    reported_patterns,
)

SEEN = [
    ("payment <*> accepted", 3, "payment 9 accepted"),
    ("payment <*> accepted", 2, "payment 10 accepted"),
    ("user <*> logged in", 5, "user bob logged in"),
    ("disk full", 1, "disk full"),
]


def test_any_order_and_any_split_give_the_same_table() -> None:
    tables = set()
    for order in itertools.permutations(SEEN):
        halves = [
            [PatternCount(*seen) for seen in order[:2]],
            [PatternCount(*seen) for seen in order[2:]],
        ]
        tables.add(merge_counts(halves, max_patterns=10))
    assert tables == {
        (
            # A tie in records is ordered by pattern.
            PatternCount("payment <*> accepted", 5, "payment 10 accepted"),
            PatternCount("user <*> logged in", 5, "user bob logged in"),
            PatternCount("disk full", 1, "disk full"),
        )
    }


def test_patterns_past_the_bound_count_in_overflow() -> None:
    table = PatternTable(max_patterns=2)
    for pattern, records, example in SEEN:
        table.add(pattern, records, example)
    assert len(table) == 2
    assert table.records == 11
    assert table.counts()[-1] == PatternCount(OVERFLOW_PATTERN, 1, "")
    # The overflow entry merges into another table's overflow, not as a pattern.
    other = PatternTable.of(table.counts(), max_patterns=10)
    assert other.overflow_records == 1 and len(other) == 2


def test_reported_patterns_merge_similar_ones_and_keep_the_top() -> None:
    counts = [
        PatternCount("user alice logged in from <*>", 4, "user alice logged in from 1.2.3.4"),
        PatternCount("user bob logged in from <*>", 3, "user bob logged in from 1.2.3.5"),
        PatternCount("disk full", 2, "disk full"),
        PatternCount(OVERFLOW_PATTERN, 1, ""),
    ]
    reported = reported_patterns(counts, top=1)
    assert reported.distinct == 3
    assert reported.top == (
        PatternCount("user <*> logged in from <*>", 7, "user alice logged in from 1.2.3.4"),
    )
    assert reported_patterns(counts, top=0).top == ()


def test_encoded_counts_round_trip_and_old_rows_read_empty() -> None:
    counts = (PatternCount("a <*>", 2, "a \ufffd"), PatternCount("b", 1, "b"))
    assert decode_counts(encode_counts(counts)) == counts
    assert decode_counts(None) == () == decode_counts(b"")


def test_a_table_needs_room_for_one_pattern() -> None:
    with pytest.raises(ValueError, match="max_patterns"):
        PatternTable(0)


def test_examples_are_kept_to_a_prefix_that_merges_alike() -> None:
    long_b, long_a = "x" * 5_000 + "b", "x" * 5_000 + "a"
    one = PatternTable.of([PatternCount("p", 1, long_b), PatternCount("p", 1, long_a)], 10)
    other = PatternTable.of([PatternCount("p", 1, "x" * 3), PatternCount("p", 1, long_a)], 10)
    assert one.counts() == (PatternCount("p", 2, "x" * MAX_EXAMPLE_CHARS),)
    assert other.counts() == (PatternCount("p", 2, "xxx"),)


_counts = st.lists(
    st.builds(
        PatternCount,
        st.sampled_from(["a <*>", "b", "c <*> d", OVERFLOW_PATTERN]),
        st.integers(1, 5),
        st.sampled_from(["", "x", "y", "é", "x" * 2_000, "x" * 2_000 + "a", "x" * 1_024]),
    ),
    max_size=30,
)


@given(st.lists(_counts, max_size=4), st.integers(1, 3))
def test_merge_adds_as_add_does(parts: list[list[PatternCount]], max_patterns: int) -> None:
    """merge() adds a pattern already tracked without calling add(): the same table."""
    merged, added = PatternTable(max_patterns), PatternTable(max_patterns)
    for part in parts:
        merged.merge(part)
        for pattern, records, example in part:
            added.add(pattern, records, example)
    assert merged.counts() == added.counts()
    assert (len(merged), merged.overflow_records) == (len(added), added.overflow_records)
