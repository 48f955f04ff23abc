"""Structured bodies: the pattern is the shape, keys sorted and value types."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otlp_stats.patterns.masker import CUT_LENGTH, CUT_TOKENS, Masker
from otlp_stats.patterns.structured import MAX_DEPTH, MAX_KEYS, value_pattern, value_pattern_cuts


def any_value(document: dict[str, Any]) -> AnyValue:
    return json_format.ParseDict(document, AnyValue())


def kvlist(**values: dict[str, Any]) -> dict[str, Any]:
    return {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in values.items()]}}


def test_a_kvlist_is_its_sorted_keys_and_value_types() -> None:
    body = any_value(
        kvlist(
            user={"stringValue": "bob"},
            took={"intValue": "31"},
            ok={"boolValue": True},
            ratio={"doubleValue": 0.5},
            raw={"bytesValue": "AAE="},
            none={},
        )
    )
    assert value_pattern(body, Masker()) == (
        "{none:<null>,ok:<bool>,ratio:<double>,raw:<bytes>,took:<int>,user:<str>}"
    )


def test_values_and_array_lengths_do_not_change_the_pattern() -> None:
    first = kvlist(tags={"arrayValue": {"values": [{"stringValue": "a"}]}}, n={"intValue": "1"})
    second = kvlist(
        n={"intValue": "99"},
        tags={"arrayValue": {"values": [{"stringValue": "b"}, {"stringValue": "c"}]}},
    )
    masker = Masker()
    assert value_pattern(any_value(first), masker) == value_pattern(any_value(second), masker)
    assert value_pattern(any_value(first), masker) == "{n:<int>,tags:[<str>]}"


def test_keys_holding_ids_are_masked_and_duplicates_are_one_key() -> None:
    body = any_value(kvlist(**{"user-1": {"intValue": "1"}, "user-2": {"intValue": "2"}}))
    assert value_pattern(body, Masker()) == "{<*>:<int>}"


def test_a_string_body_is_masked_as_a_message() -> None:
    assert value_pattern(any_value({"stringValue": "took 31ms"}), Masker()) == "took <*>ms"


def test_depth_and_keys_are_bounded() -> None:
    deep: dict[str, Any] = {"intValue": "1"}
    for _ in range(MAX_DEPTH + 5):
        deep = {"arrayValue": {"values": [deep]}}
    assert value_pattern(any_value(deep), Masker()) == "[" * MAX_DEPTH + "<*>" + "]" * MAX_DEPTH
    wide = kvlist(**{f"k{chr(97 + i // 26)}{chr(97 + i % 26)}": {} for i in range(MAX_KEYS + 9)})
    # Room for all the keys' shapes: the shape's own length bound is another test's.
    assert value_pattern(any_value(wide), Masker(max_length=4096)).count(":<null>") == MAX_KEYS


def test_a_key_or_string_cut_at_a_bound_says_so() -> None:
    masker = Masker(max_tokens=4, max_length=24)
    long_key = kvlist(**{"k" * 40: {"intValue": "1"}, "short": {"intValue": "2"}})
    assert value_pattern_cuts(any_value(long_key), masker) == (
        "{<*>:<int>,short:<int>}",
        CUT_LENGTH,
    )
    many = any_value({"arrayValue": {"values": [kvlist(**{"a b c d e f": {}})]}})
    assert value_pattern_cuts(many, masker) == ("[{a b c d <*>:<null>}]", CUT_TOKENS)
    text = any_value({"stringValue": "one two three four five six seven"})
    assert value_pattern_cuts(text, Masker(max_tokens=4, max_length=16)) == (
        "one two <*>",
        CUT_TOKENS | CUT_LENGTH,
    )
    assert value_pattern_cuts(any_value(kvlist(ok={"intValue": "1"})), masker)[1] == 0


def test_the_whole_shape_is_cut_at_max_length() -> None:
    """64 keys of ten letters each fit the key bound, and an array of kvlists with different
    keys nests shapes: only the shape's own length bounds them."""
    keys = {
        f"k{'abcdefghij'[n % 10] * 9}{chr(0x430 + n % 32)}": {"intValue": "1"} for n in range(64)
    }
    wide = any_value(kvlist(**keys))
    # Keys short enough to stay whole at the bound: the shapes differ only in the cut.
    items = [
        kvlist(**{f"field{'abcdefghij'[n % 10] * (n % 40 + 1)}": {"intValue": "1"}})
        for n in range(200)
    ]
    nested = any_value({"arrayValue": {"values": items}})
    masker = Masker(max_length=100)
    for body in (wide, nested):
        full, full_cuts = value_pattern_cuts(body, Masker(max_length=10**6))
        pattern, cuts = value_pattern_cuts(body, masker)
        assert len(full.encode()) > 100 and full_cuts == 0
        assert len(pattern.encode()) <= 100
        assert pattern.endswith("<*>") and full.startswith(pattern[:-3])
        assert cuts == CUT_LENGTH
    # A shape within the bound is left whole and says no cut.
    small = any_value(kvlist(user={"stringValue": "bob"}))
    assert value_pattern_cuts(small, masker) == ("{user:<str>}", 0)
