"""Message identity: equal bodies hash equal, different bodies do not."""

from __future__ import annotations

import pytest

from otlp_stats.counting.messages import body_hash, canonical_bytes, message_hash
from otlp_stats.counting.sketches import DistinctCounter
from tests.support.fakes import Plain, any_value


def same(a: Plain, b: Plain) -> bool:
    return message_hash(any_value(a)) == message_hash(any_value(b))


def test_equal_string_bodies_are_one_message() -> None:
    assert same("my log body 1", "my log body 1")
    assert not same("my log body 1", "my log body 2")


def test_kvlist_bodies_equal_in_another_key_order_are_one_message() -> None:
    assert same({"a": 1, "b": {"c": [1, 2], "d": "x"}}, {"b": {"d": "x", "c": [1, 2]}, "a": 1})


def test_array_order_matters() -> None:
    assert not same([1, 2], [2, 1])


def test_types_are_part_of_the_value() -> None:
    assert not same("1", 1)
    assert not same(1, 1.0)
    assert not same(True, 1)
    assert not same(b"a", "a")
    assert not same(["a"], "a")
    assert not same(None, "")


def test_string_body_differs_from_structured_body_with_same_text() -> None:
    assert not same('{"a":1}', {"a": 1})


def test_nested_structures_do_not_collide_by_concatenation() -> None:
    assert not same(["ab", "c"], ["a", "bc"])
    assert not same({"a": "bc"}, {"ab": "c"})


def test_all_nans_are_one_message_and_zero_signs_are_equal() -> None:
    assert same(float("nan"), -float("nan"))
    assert same(0.0, -0.0)


def test_duplicate_kvlist_key_last_wins() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

    duplicated = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="a", value=AnyValue(int_value=1)),
                KeyValue(key="a", value=AnyValue(int_value=2)),
            ]
        )
    )
    assert canonical_bytes(duplicated) == canonical_bytes(any_value({"a": 2}))


def test_hash_is_stable_across_processes_and_signed_64_bit() -> None:
    # A fixed value: Python's salted hash() would change between runs, xxh3 does not.
    value = message_hash(any_value("my log body 1"))
    assert -(2**63) <= value < 2**63
    assert value == message_hash(any_value("my log body 1"))
    import subprocess
    import sys

    code = (
        "from otlp_stats.counting.messages import message_hash;"
        "from opentelemetry.proto.common.v1.common_pb2 import AnyValue;"
        "print(message_hash(AnyValue(string_value='my log body 1')))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(other.stdout) == value


# Literal hashes, computed once and never to be recomputed: every sketch already stored (SQLite,
# Redis) holds these. A change of algorithm, seed, canonical encoding or signed mapping fails
# here rather than silently splitting each stored message from the same message arriving now.
PINNED_HASHES: list[tuple[Plain, int]] = [
    ("my log body 1", 8681316230811480574),
    ("", 4314477486969564949),
    ({"b": [True, None], "a": 1}, -5452412189563412733),
    (7, -736211960145303855),
    (1.5, -3082954559585088663),
    (b"\x00\xff", 2182428891943817589),
    (["a", 2], -8972337879599399497),
]


@pytest.mark.parametrize(("body", "pinned"), PINNED_HASHES, ids=repr)
def test_known_bodies_hash_to_their_pinned_values(body: Plain, pinned: int) -> None:
    assert message_hash(any_value(body)) == pinned


def test_bytes_that_are_not_an_any_value_hash_to_their_pinned_value() -> None:
    assert body_hash(b"\xff\xff") == 2090352650885537375


def test_a_stored_sketch_of_known_bodies_is_pinned_byte_for_byte() -> None:
    # What a checkpoint writes: datasketches' own hash of each message hash (seed 9001, whose
    # 16-bit seed hash 0x93cc is in the preamble) decides these bytes too.
    counter = DistinctCounter()
    counter.update([message_hash(any_value("one")), message_hash(any_value({"a": 1}))])
    assert counter.serialize().hex() == (
        "02030300001acc930200000000000000bcffc621d582a90567f965e6c366cb2c"
    )
