"""Attribute precedence and value rendering."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otlp_stats.counting.resolve import find_attribute, render_value, resolve_attribute
from tests.support.fakes import Plain, any_value, key_values


def resolved(
    record: dict[str, Plain], scope: dict[str, Plain], resource: dict[str, Plain]
) -> str | None:
    value = resolve_attribute("foo", key_values(record), key_values(scope), key_values(resource))
    return None if value is None else render_value(value)


def test_record_attribute_beats_scope_and_resource() -> None:
    assert resolved({"foo": "r"}, {"foo": "s"}, {"foo": "x"}) == "r"


def test_scope_attribute_beats_resource() -> None:
    assert resolved({}, {"foo": "s"}, {"foo": "x"}) == "s"


def test_resource_attribute_used_when_nothing_closer_has_it() -> None:
    assert resolved({"other": "r"}, {"other": "s"}, {"foo": "x"}) == "x"


def test_key_nowhere_is_missing() -> None:
    assert resolved({"bar": "1"}, {}, {"baz": "2"}) is None


def test_empty_string_is_a_present_value_and_still_wins() -> None:
    assert resolved({"foo": ""}, {"foo": "s"}, {}) == ""


def test_last_duplicate_key_wins() -> None:
    attributes = key_values([("foo", "first"), ("foo", "second")])
    found = find_attribute(attributes, "foo")
    assert found is not None and render_value(found) == "second"


def test_key_match_is_exact_and_case_sensitive() -> None:
    assert resolved({"Foo": "a", "foo.bar": "b", "fo": "c"}, {}, {}) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        ("", ""),
        (42, "42"),
        (-9223372036854775808, "-9223372036854775808"),
        (True, "true"),
        (False, "false"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (1e16, "1e+16"),
        (3.0, "3.0"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (float("nan"), "NaN"),
        (b"\x00\xffhi", "AP9oaQ=="),
        ([1, "a", True, None, 2.5], '[1,"a",true,null,2.5]'),
        ({"b": 1, "a": [b"\x01"]}, '{"a":["AQ=="],"b":1}'),
        (None, ""),
    ],
)
def test_render_value(value: Plain, expected: str) -> None:
    assert render_value(any_value(value)) == expected


def test_double_renders_shortest_round_trip() -> None:
    for number in (0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308):
        assert float(render_value(any_value(number))) == number
        assert render_value(any_value(number)) == repr(number)


def test_kvlist_renders_canonically_whatever_the_key_order() -> None:
    one = render_value(any_value({"x": 1, "y": {"b": 2, "a": 1}}))
    other = render_value(any_value({"y": {"a": 1, "b": 2}, "x": 1}))
    assert one == other == '{"x":1,"y":{"a":1,"b":2}}'
    assert json.loads(one) == {"x": 1, "y": {"a": 1, "b": 2}}


def test_non_ascii_strings_render_unescaped() -> None:
    assert render_value(any_value(["café", "日本"])) == '["café","日本"]'


def test_empty_any_value_is_present_not_missing() -> None:
    found = find_attribute(key_values({"foo": None}), "foo")
    assert found is not None
    assert found == AnyValue()
