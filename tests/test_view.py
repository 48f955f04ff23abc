"""Decoding through the view, and the proof that a key is not on any record."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from otlp_stats.errors import MalformedRequest
from otlp_stats.view import count_records, decode_view, key_may_be_on_records, key_needle
from tests.fakes import any_value, export_request, log_record, worked_example_request


def check(request_wire: bytes, key: str) -> bool:
    return key_may_be_on_records(request_wire, decode_view(request_wire), key)


def test_decodes_and_counts_records() -> None:
    view = decode_view(worked_example_request().SerializeToString())
    assert count_records(view) == 5


def test_truncated_request_is_malformed() -> None:
    wire = worked_example_request().SerializeToString()
    with pytest.raises(MalformedRequest, match="cannot decode"):
        decode_view(wire[:-3])


def test_key_on_a_record_is_seen() -> None:
    assert check(worked_example_request("foo").SerializeToString(), "foo")


def test_key_only_on_resource_and_scope_is_not_on_records() -> None:
    request = export_request([log_record("a", other=1)], resource={"foo": "r"}, scope={"foo": "s"})
    assert not check(request.SerializeToString(), "foo")


def test_key_nowhere_is_not_on_records() -> None:
    assert not check(export_request([log_record("a", bar="x")]).SerializeToString(), "foo")


def test_needle_inside_a_body_errs_on_the_safe_side() -> None:
    body = "text" + key_needle("foo").decode() + "more"
    request = export_request([log_record(body)], resource={"foo": "r"})
    assert check(request.SerializeToString(), "foo")


def test_duplicate_key_on_the_resource_errs_on_the_safe_side() -> None:
    request = export_request([log_record("a")])
    attributes = request.resource_logs[0].resource.attributes
    attributes.extend(
        [KeyValue(key="foo", value=any_value("1")), KeyValue(key="foo", value=any_value("2"))]
    )
    assert check(request.SerializeToString(), "foo")


def test_long_keys_use_a_multibyte_length() -> None:
    key = "k" * 200
    assert key_needle(key)[:3] == b"\x0a\xc8\x01"
    assert check(export_request([log_record("a", **{key: "v"})]).SerializeToString(), key)


names = st.sampled_from(["foo", "foobar", "fo", "x"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(names, max_size=3), min_size=1, max_size=4),
    st.lists(names, max_size=2),
    st.lists(names, max_size=2),
)
def test_answer_is_exact_on_ordinary_requests_and_never_wrongly_absent(
    record_keys: list[list[str]], scope_keys: list[str], resource_keys: list[str]
) -> None:
    records = [log_record("body", **dict.fromkeys(keys, "v")) for keys in record_keys]
    request = export_request(
        records, resource=dict.fromkeys(resource_keys, "r"), scope=dict.fromkeys(scope_keys, "s")
    )
    on_records = any("foo" in keys for keys in record_keys)
    # Sound (never False when a record has it) and, on ordinary requests, exact.
    assert check(request.SerializeToString(), "foo") == on_records
