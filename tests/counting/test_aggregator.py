"""Windowing and counting in the single-owner aggregator."""

from __future__ import annotations

import datasketches

from otlp_stats.counting.aggregator import Aggregator, LabelTally, ValueReport
from otlp_stats.counting.sketches import DistinctEstimate

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a multiple of every window used here


def tally(records: int, *messages: int) -> LabelTally:
    """`records` records whose message hashes are drawn from `messages` (each at least once)."""
    assert records >= len(messages)
    return LabelTally.of_hashes([*messages, *[messages[0]] * (records - len(messages))])


def exact(value: str | None, distinct: int, records: int) -> ValueReport:
    return ValueReport(value, DistinctEstimate.exact(distinct), records)


def test_windows_are_aligned_to_the_epoch_not_to_the_start() -> None:
    aggregator = Aggregator(10, start_time=T0 + 7.3)
    aggregator.add(T0 + 8, {"a": tally(1, 1)})
    [report] = aggregator.close_until(T0 + 10)
    assert (report.start, report.end) == (T0, T0 + 10)
    assert report.values == (exact("a", 1, 1),)


def test_window_end_is_exclusive() -> None:
    aggregator = Aggregator(10, start_time=T0)
    aggregator.add(T0 + 9.999, {"a": tally(1, 1)})
    aggregator.add(T0 + 10, {"a": tally(1, 2)})
    first, second = aggregator.close_until(T0 + 20)
    assert first.records == 1 and second.records == 1
    assert second.start == T0 + 10


def test_window_does_not_close_before_its_end() -> None:
    aggregator = Aggregator(10, start_time=T0)
    assert aggregator.close_until(T0 + 9.99) == []
    assert len(aggregator.close_until(T0 + 10)) == 1


def test_empty_windows_are_reported_as_heartbeats() -> None:
    aggregator = Aggregator(5, start_time=T0)
    reports = aggregator.close_until(T0 + 15)
    assert [(r.start, r.records, r.values) for r in reports] == [
        (T0, 0, ()),
        (T0 + 5, 0, ()),
        (T0 + 10, 0, ()),
    ]


def test_each_window_is_reported_once() -> None:
    aggregator = Aggregator(10, start_time=T0)
    assert len(aggregator.close_until(T0 + 10)) == 1
    assert aggregator.close_until(T0 + 10) == []
    assert aggregator.close_until(T0 + 19) == []


def test_distinct_messages_merge_across_batches_records_add_up() -> None:
    aggregator = Aggregator(10, start_time=T0)
    aggregator.add(T0 + 1, {"a": tally(2, 1, 2)})
    aggregator.add(T0 + 2, {"a": tally(3, 2, 3), "b": tally(1, 1)})
    [report] = aggregator.close_until(T0 + 10)
    assert report.values == (exact("a", 3, 5), exact("b", 1, 1))
    assert report.records == 6
    assert report.distinct_messages == 3  # union over values, not the sum


def test_same_message_in_two_windows_counts_in_each() -> None:
    aggregator = Aggregator(10, start_time=T0)
    aggregator.add(T0 + 1, {"a": tally(1, 7)})
    aggregator.add(T0 + 11, {"a": tally(1, 7)})
    first, second = aggregator.close_until(T0 + 20)
    assert first.values[0].distinct_messages == second.values[0].distinct_messages == 1


def test_values_sorted_by_distinct_then_records_then_value_missing_last() -> None:
    aggregator = Aggregator(10, start_time=T0)
    aggregator.add(
        T0,
        {
            "z": tally(1, 1),
            None: tally(1, 2),
            "a": tally(1, 3),
            "many": tally(2, 4, 5),
            "busy": tally(5, 6),
        },
    )
    [report] = aggregator.close_until(T0 + 10)
    assert [v.value for v in report.values] == ["many", "busy", "a", "z", None]
    assert report.values[-1].missing


def test_batch_for_an_already_reported_window_is_counted_late_not_lost() -> None:
    aggregator = Aggregator(10, start_time=T0)
    aggregator.close_until(T0 + 10)
    aggregator.add(T0 + 5, {"a": tally(4, 1)})  # the clock stepped back
    assert aggregator.late_records == {"clock_stepped_back": 4, "window_closed": 0}
    [report] = aggregator.close_until(T0 + 20)
    assert report.start == T0 + 10 and report.records == 4


def test_close_all_marks_the_current_window_partial() -> None:
    aggregator = Aggregator(10, start_time=T0)
    aggregator.add(T0 + 3, {"a": tally(1, 1)})
    aggregator.add(T0 + 12, {"b": tally(1, 1)})
    complete, current = aggregator.close_all(T0 + 15)
    assert not complete.partial and complete.values == (exact("a", 1, 1),)
    assert current.partial and current.values == (exact("b", 1, 1),)
    assert (current.start, current.end) == (T0 + 10, T0 + 20)


def test_close_all_with_nothing_open_still_reports_the_current_window() -> None:
    aggregator = Aggregator(10, start_time=T0)
    [current] = aggregator.close_all(T0 + 1)
    assert current.partial and current.records == 0


def test_fractional_windows() -> None:
    aggregator = Aggregator(0.5, start_time=T0)
    aggregator.add(T0 + 0.75, {"a": tally(1, 1)})
    first, second = aggregator.close_until(T0 + 1.0)
    assert (second.start, second.end, second.records) == (T0 + 0.5, T0 + 1.0, 1)
    assert first.records == 0


def test_batch_is_copied_not_aliased() -> None:
    aggregator = Aggregator(10, start_time=T0)
    batch: dict[str | None, LabelTally] = {"a": tally(1, 1)}
    aggregator.add(T0, batch)
    batch["a"].hashes.append(99)
    aggregator.add(T0, {"a": tally(1, 2)})
    [report] = aggregator.close_until(T0 + 10)
    assert report.values == (exact("a", 2, 2),)


def test_values_past_the_cap_count_in_one_overflow_entry() -> None:
    aggregator = Aggregator(10, start_time=T0, max_values=2)
    aggregator.add(T0, {"a": tally(1, 1), "b": tally(1, 2), None: tally(1, 3)})
    aggregator.add(T0, {"c": tally(2, 4, 5), "d": tally(1, 4), "a": tally(1, 6)})
    [report] = aggregator.close_until(T0 + 10)
    assert [(v.value, v.overflow, v.missing) for v in report.values] == [
        ("a", False, False),
        ("b", False, False),
        (None, False, True),
        (None, True, False),
    ]
    overflow = report.values[-1]
    assert (overflow.records, overflow.distinct_messages) == (3, 2)
    assert report.overflow_values == 2
    assert report.records == 7
    assert aggregator.overflow_records == 3


def test_missing_bucket_is_tracked_even_at_the_cap() -> None:
    aggregator = Aggregator(10, start_time=T0, max_values=1)
    aggregator.add(T0, {"a": tally(1, 1)})
    aggregator.add(T0, {None: tally(1, 2)})
    [report] = aggregator.close_until(T0 + 10)
    assert [v.missing for v in report.values] == [False, True]
    assert not any(v.overflow for v in report.values)


def test_counts_above_the_sketch_threshold_are_estimates_within_bounds() -> None:
    aggregator = Aggregator(10, start_time=T0, lg_k=8)  # k = 256
    aggregator.add(
        T0,
        {
            "a": LabelTally.of_hashes(list(range(10_000))),
            "b": LabelTally.of_hashes(list(range(100))),
        },
    )
    [report] = aggregator.close_until(T0 + 10)
    big, small = report.values
    assert small.distinct == DistinctEstimate.exact(100)
    assert big.distinct.estimated
    assert big.distinct.lower_bound <= 10_000 <= big.distinct.upper_bound
    assert abs(big.distinct_messages - 10_000) / 10_000 < 0.25
    assert (
        report.distinct.estimated
        and report.distinct.lower_bound <= 10_000 <= report.distinct.upper_bound
    )


def compact_sketch(*hashes: int) -> bytes:
    """Hashes handed over the way the C scanner hands them: a serialized compact theta sketch."""
    sketch = datasketches.update_theta_sketch(16)
    for digest in hashes:
        sketch.update(digest)
    return bytes(sketch.compact(True).serialize())


def test_hashes_handed_over_in_sketches_count_like_hashes_handed_over_one_by_one() -> None:
    one_by_one = Aggregator(10, start_time=T0)
    one_by_one.add(T0, {"a": tally(5, 1, 2, 3), None: tally(1, 9)})
    one_by_one.add(T0 + 1, {"a": tally(2, 3, 4)})
    in_sketches = Aggregator(10, start_time=T0)
    in_sketches.add(T0, {"a": LabelTally(5, sketches=[compact_sketch(1, 2, 3)]), None: tally(1, 9)})
    # Both ways in one batch: the int hashes of structured bodies with a sketch of the rest.
    in_sketches.add(T0 + 1, {"a": LabelTally(2, [4], [compact_sketch(3)])})
    [expected] = one_by_one.close_until(T0 + 10)
    [report] = in_sketches.close_until(T0 + 10)
    assert report == expected
    assert report.values == (exact("a", 4, 7), exact(None, 1, 1))


def test_sketches_above_the_threshold_estimate_within_bounds_and_survive_a_checkpoint() -> None:
    aggregator = Aggregator(10, start_time=T0, lg_k=8)  # k = 256
    for first in range(0, 10_000, 1_000):
        batch = list(range(first, first + 1_000))
        aggregator.add(T0, {"a": LabelTally(1_000, batch[:10], [compact_sketch(*batch[10:])])})
    resumed = Aggregator(10, start_time=T0, lg_k=8)
    resumed.restore(aggregator.snapshot())
    for counted in (aggregator, resumed):
        [report] = counted.close_until(T0 + 10)
        [value] = report.values
        assert value.records == 10_000
        assert value.distinct.estimated
        assert value.distinct.lower_bound <= 10_000 <= value.distinct.upper_bound


# Event time: windows of 10 s that wait 5 s past their end for disordered records. Started at
# T0 + 5, the first open window is [T0, T0 + 10): the one before had closed by then.
def event_aggregator(start: float = T0 + 5) -> Aggregator:
    return Aggregator(10, start_time=start, lateness=5)


def test_event_time_disordered_batches_within_the_lateness_land_in_their_windows() -> None:
    aggregator = event_aggregator()
    window = aggregator._index(T0)
    # Arrivals move forward while the records' own windows go back and forth.
    for arrival, index in ((T0 + 1, window), (T0 + 12, window + 1), (T0 + 14, window)):
        added = aggregator.add_windows(arrival, {index: {"a": tally(1, int(arrival))}})
        assert added.counted == 1 and not added.late
    aggregator.add_windows(T0 + 14.5, {window + 1: {"b": tally(2, 7)}, window: {"b": tally(1, 8)}})
    first, second = aggregator.close_until(T0 + 25)
    assert (first.start, first.records) == (T0, 3)
    assert {v.value: v.records for v in first.values} == {"a": 2, "b": 1}
    assert (second.start, second.records) == (T0 + 10, 3)


def test_event_time_windows_close_at_their_end_plus_the_lateness_in_order() -> None:
    aggregator = event_aggregator()
    assert aggregator.close_until(T0 + 14.9) == []
    [first] = aggregator.close_until(T0 + 15)
    assert first.start == T0 and first.records == 0  # empty: still printed, a heartbeat
    assert [r.start for r in aggregator.close_until(T0 + 45)] == [T0 + 10, T0 + 20, T0 + 30]


def test_event_time_records_of_a_closed_window_are_handed_back_and_counted_late() -> None:
    aggregator = event_aggregator()
    window = aggregator._index(T0)
    # Arrived once the window's end plus the lateness had passed: late, printed or not yet.
    added = aggregator.add_windows(
        T0 + 15, {window: {"a": tally(3, 1), "b": tally(1, 2)}, window + 1: {"a": tally(2, 1)}}
    )
    assert added.counted == 2 and added.late_records == 4
    assert set(added.late) == {window}
    # Printed (after the clock stepped back, say): late whatever the arrival.
    aggregator.close_until(T0 + 30)
    assert aggregator.add_windows(T0 + 3, {window + 1: {"a": tally(1, 1)}}).late_records == 1
    assert aggregator.late_records == {"clock_stepped_back": 0, "window_closed": 5}
    [report] = aggregator.close_until(T0 + 40)
    assert report.start == T0 + 20 and report.records == 0


def test_event_time_windows_older_than_the_service_are_closed_from_the_start() -> None:
    aggregator = event_aggregator(start=T0 + 100)
    before = aggregator._index(T0 + 85)  # [T0+80, T0+90): its end + 5 s passed before start
    within = aggregator._index(T0 + 95)  # [T0+90, T0+100): may still take disordered records
    added = aggregator.add_windows(
        T0 + 100, {before: {"a": tally(1, 1)}, within: {"a": tally(1, 1)}}
    )
    assert (added.counted, added.late_records) == (1, 1)
    [report] = aggregator.close_until(T0 + 105)
    assert report.start == T0 + 90 and report.records == 1


def test_event_time_close_all_prints_what_waits_for_its_lateness_as_partial() -> None:
    aggregator = event_aggregator()
    window = aggregator._index(T0)
    aggregator.add_windows(T0 + 12, {window: {"a": tally(1, 1)}, window + 1: {"a": tally(1, 2)}})
    reports = aggregator.close_all(T0 + 13)
    assert [(r.start, r.partial, r.records) for r in reports] == [
        (T0, True, 1),
        (T0 + 10, True, 1),
    ]
