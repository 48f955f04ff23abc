"""Message identity: equal bodies hash equal, different bodies do not."""

from __future__ import annotations

from otlp_stats.counting.messages import canonical_bytes, message_hash
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
