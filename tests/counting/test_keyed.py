"""Several attribute keys side by side: each key its own values, cap and overflow; one report
per key per window, naming its key."""

from __future__ import annotations

from otlp_stats.counting.aggregator import Aggregator, LabelTally
from otlp_stats.counting.keyed import KeyedAggregator, aggregator_for

T0 = 1_767_225_600.0
KEYS = ("service.name", "k8s.namespace.name", "severity_text")


def hashes(*messages: int) -> LabelTally:
    return LabelTally.of_hashes(list(messages))


def keyed(max_values: int = 10, lateness: float = 0.0) -> KeyedAggregator:
    aggregator = aggregator_for(KEYS, 10, T0, max_values, lateness=lateness, keep_sketches=True)
    assert isinstance(aggregator, KeyedAggregator)
    return aggregator


def test_one_key_is_the_plain_aggregator_and_names_its_key() -> None:
    aggregator = aggregator_for(("service.name",), 10, T0)
    assert type(aggregator) is Aggregator
    aggregator.add(T0 + 1, {"a": hashes(1)})
    [report] = aggregator.close_until(T0 + 10)
    assert report.attribute_key == "service.name"


def test_one_report_per_key_per_window_in_the_keys_order() -> None:
    aggregator = keyed()
    aggregator.add_keys(T0 + 1, [{"a": hashes(1, 2)}, {"prod": hashes(1, 2)}, {None: hashes(1, 2)}])
    aggregator.add_keys(T0 + 11, [{"b": hashes(3)}, {"prod": hashes(3)}, {"ERROR": hashes(3)}])
    reports = aggregator.close_until(T0 + 20)
    assert [(r.start, r.attribute_key) for r in reports] == [(T0, key) for key in KEYS] + [
        (T0 + 10, key) for key in KEYS
    ]
    assert [[(v.value, v.records) for v in r.values] for r in reports[:3]] == [
        [("a", 2)],
        [("prod", 2)],
        [(None, 2)],
    ]
    assert all(report.snapshot is not None for report in reports)
    assert [r.snapshot.attribute_key for r in reports if r.snapshot] == [*KEYS, *KEYS]


def test_each_key_has_its_own_cap_and_overflow() -> None:
    aggregator = keyed(max_values=1)
    aggregator.add_keys(
        T0 + 1,
        [
            {"a": hashes(1), "b": hashes(2)},
            {"prod": hashes(1, 2)},
            {"x": hashes(1), "y": hashes(2)},
        ],
    )
    first, second, third = aggregator.close_until(T0 + 10)
    assert first.overflow_values == 1 and third.overflow_values == 1
    assert second.overflow_values == 0
    assert [v.value for v in second.values] == ["prod"]


def test_late_records_are_counted_once_and_handed_back_per_key() -> None:
    aggregator = keyed(lateness=5)
    added = aggregator.add_windows_keys(
        T0 + 30, [{int(T0 // 10): {"a": hashes(1)}}, {int(T0 // 10): {"p": hashes(1)}}, {}]
    )
    # T0's window closed at T0+15: under every key the same record is late.
    assert added.counted == 0 and added.late_records == 1
    assert set(added.late_by_key) == set(KEYS)
    assert aggregator.late_records["window_closed"] == 1


def test_snapshots_restore_and_merge_to_their_own_key() -> None:
    source = keyed()
    source.add_keys(T0 + 1, [{"a": hashes(1)}, {"prod": hashes(1, 2)}, {"E": hashes(3)}])
    snapshots = source.snapshot()
    assert sorted(s.attribute_key for s in snapshots) == sorted(KEYS)
    restored = keyed()
    restored.restore(snapshots)
    merged = keyed()
    for snapshot in snapshots:
        assert merged.merge(snapshot)
    for aggregator in (restored, merged):
        reports = aggregator.close_until(T0 + 10)
        assert {r.attribute_key: r.records for r in reports} == dict.fromkeys(KEYS, 1) | {
            "k8s.namespace.name": 2
        }


def test_a_snapshot_without_a_key_is_the_first_keys() -> None:
    source = Aggregator(10, T0)
    source.add(T0 + 1, {"a": hashes(1)})
    [snapshot] = source.snapshot()
    assert snapshot.attribute_key == ""
    aggregator = keyed()
    aggregator.restore([snapshot])
    reports = aggregator.close_until(T0 + 10)
    assert [(r.attribute_key, r.records) for r in reports] == [
        ("service.name", 1),
        ("k8s.namespace.name", 0),
        ("severity_text", 0),
    ]


def test_close_all_reports_every_key_the_current_window_partial() -> None:
    aggregator = keyed()
    aggregator.add_keys(T0 + 1, [{"a": hashes(1)}, {"p": hashes(1)}, {"E": hashes(1)}])
    aggregator.add_keys(T0 + 12, [{"a": hashes(1)}, {"p": hashes(1)}, {"E": hashes(1)}])
    reports = aggregator.close_all(T0 + 13)
    assert [(r.start, r.attribute_key, r.partial) for r in reports] == [
        (T0, key, False) for key in KEYS
    ] + [(T0 + 10, key, True) for key in KEYS]


def test_a_journal_replayed_for_one_key_reopens_the_window_for_every_key() -> None:
    # Started in a later window; then the journal holds an older one for the second key only
    # (the key was added since): every key's next window to close is that older one.
    aggregator = aggregator_for(KEYS, 10, T0 + 20, 10, keep_sketches=True)
    assert isinstance(aggregator, KeyedAggregator)
    aggregator.add_keys(T0 + 21, [{"a": hashes(1)}, {"prod": hashes(1)}, {"INFO": hashes(1)}])
    first = int(T0 // 10)
    assert aggregator.replay_key(KEYS[1], first, {"prod": hashes(9)})
    assert not aggregator.replay_key("host.name", first, {"x": hashes(9)})  # no longer counted
    index = aggregator.add_keys(
        T0 + 22, [{"a": hashes(2)}, {"prod": hashes(2)}, {"INFO": hashes(2)}]
    )
    reports = aggregator.close_until(T0 + 30)
    assert [(r.start, r.attribute_key) for r in reports][:3] == [(T0, key) for key in KEYS]
    assert [r.records for r in reports[:3]] == [0, 1, 0]
    assert index == first + 2
