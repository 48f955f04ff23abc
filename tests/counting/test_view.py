"""Decoding through the view, and the proof that a key is not on any record."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import tally_view
from otlp_stats.counting.view import count_records, decode_view, key_may_be_on_records
from otlp_stats.errors import MalformedRequest
from tests.support.fakes import any_value, export_request, log_record, worked_example_request


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


def test_a_longer_key_containing_the_key_errs_on_the_safe_side() -> None:
    request = export_request([log_record("a", foobar="x")], resource={"foo": "r"})
    assert check(request.SerializeToString(), "foo")


def test_key_inside_a_body_errs_on_the_safe_side() -> None:
    request = export_request([log_record("text with foo in it")], resource={"foo": "r"})
    assert check(request.SerializeToString(), "foo")


def test_duplicate_key_on_the_resource_errs_on_the_safe_side() -> None:
    request = export_request([log_record("a")])
    attributes = request.resource_logs[0].resource.attributes
    attributes.extend(
        [KeyValue(key="foo", value=any_value("1")), KeyValue(key="foo", value=any_value("2"))]
    )
    assert check(request.SerializeToString(), "foo")


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field, with a deliberately non-minimal (padded) length varint."""
    length = len(payload)
    return bytes([number << 3 | 2, (length & 0x7F) | 0x80, length >> 7]) + payload


def test_record_key_in_a_longer_than_needed_encoding_is_still_seen() -> None:
    # Decoders accept a length varint padded with a continuation byte (0x83 0x00 for 3): the key
    # on the record must still be found, or the record would count under the resource's value.
    padded_key = _field(1, b"foo") + _field(2, any_value("rec").SerializeToString())
    record = _field(5, any_value("body").SerializeToString()) + _field(6, padded_key)
    resource = _field(1, KeyValue(key="foo", value=any_value("res")).SerializeToString())
    wire = _field(1, _field(1, resource) + _field(2, _field(2, record)))
    full = ExportLogsServiceRequest.FromString(wire)
    assert full.resource_logs[0].scope_logs[0].log_records[0].attributes[0].key == "foo"
    view = decode_view(wire)
    assert check(wire, "foo")
    assert list(tally_view(view, "foo", LabelRenderer(), check(wire, "foo"))) == ["rec"]


# No name contains "foo" but "foo" itself, so the answer is exact as well as sound here.
names = st.sampled_from(["foo", "bar", "fo", "x"])


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
