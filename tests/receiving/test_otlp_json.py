"""OTLP/JSON decoding: the protobuf JSON mapping, with hex ids and unknown fields ignored."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from otlp_stats.errors import MalformedRequest
from otlp_stats.receiving.otlp_json import decode_json_request, encode_json

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
TRUE = {"boolValue": True}


def request_with(record: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps(
        {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                    },
                    "scopeLogs": [{"scope": {"name": "lib"}, "logRecords": [record]}],
                }
            ],
            **extra,
        }
    ).encode()


def only_record(payload: bytes) -> Any:
    request = decode_json_request(payload)
    [resource_logs] = request.resource_logs
    [scope_logs] = resource_logs.scope_logs
    [record] = scope_logs.log_records
    return record


def test_trace_and_span_ids_are_hex_not_base64() -> None:
    record = only_record(request_with({"traceId": TRACE_ID, "spanId": SPAN_ID}))
    assert record.trace_id == bytes.fromhex(TRACE_ID)
    assert record.span_id == bytes.fromhex(SPAN_ID)


def test_hex_ids_are_case_insensitive_and_may_use_the_proto_field_names() -> None:
    record = only_record(request_with({"trace_id": TRACE_ID.upper(), "span_id": SPAN_ID.upper()}))
    assert record.trace_id == bytes.fromhex(TRACE_ID)
    assert record.span_id == bytes.fromhex(SPAN_ID)


def test_empty_ids_mean_unset() -> None:
    record = only_record(request_with({"traceId": "", "spanId": "", "body": {"stringValue": "x"}}))
    assert record.trace_id == b"" and record.span_id == b""


@pytest.mark.parametrize("value", ["not-hex", "abc", "5b8e fff7 9803 g1"])
def test_an_id_that_is_not_hex_is_malformed(value: str) -> None:
    with pytest.raises(MalformedRequest, match="traceId must be a hex string"):
        decode_json_request(request_with({"traceId": value}))


def test_unknown_fields_are_ignored_at_every_level() -> None:
    payload = json.dumps(
        {
            "resourceLogs": [
                {
                    "resource": {"attributes": [], "someFutureField": {"a": 1}},
                    "scopeLogs": [
                        {
                            "scope": {"name": "lib", "newScopeField": True},
                            "logRecords": [{"body": {"stringValue": "kept"}, "newField": [1, 2]}],
                            "extra": "x",
                        }
                    ],
                    "unknownList": [],
                }
            ],
            "topLevelUnknown": 7,
        }
    ).encode()
    record = only_record(payload)
    assert record.body.string_value == "kept"


def test_64_bit_integers_as_strings_or_numbers_and_enums_as_integers() -> None:
    record = only_record(
        request_with(
            {
                "timeUnixNano": "1767225600000000000",
                "observedTimeUnixNano": 1767225600000000001,
                "severityNumber": 9,
                "attributes": [
                    {"key": "as_string", "value": {"intValue": "9007199254740993"}},
                    {"key": "as_number", "value": {"intValue": 42}},
                ],
            }
        )
    )
    assert record.time_unix_nano == 1767225600000000000
    assert record.observed_time_unix_nano == 1767225600000000001
    assert record.severity_number == 9
    assert [a.value.int_value for a in record.attributes] == [9007199254740993, 42]


def test_an_enum_value_from_a_newer_schema_is_kept() -> None:
    assert only_record(request_with({"severityNumber": 99})).severity_number == 99


def test_bytes_values_are_base64() -> None:
    encoded = base64.b64encode(b"\x00\xffraw").decode()
    record = only_record(request_with({"body": {"bytesValue": encoded}}))
    assert record.body.bytes_value == b"\x00\xffraw"


def test_structured_bodies_and_attributes_decode() -> None:
    record = only_record(
        request_with(
            {
                "body": {
                    "kvlistValue": {
                        "values": [
                            {"key": "user", "value": {"stringValue": "ana"}},
                            {
                                "key": "tags",
                                "value": {"arrayValue": {"values": [{"boolValue": True}]}},
                            },
                        ]
                    }
                },
                "attributes": [{"key": "ratio", "value": {"doubleValue": 0.5}}],
            }
        )
    )
    assert [kv.key for kv in record.body.kvlist_value.values] == ["user", "tags"]
    assert record.attributes[0].value.double_value == 0.5


def test_an_empty_object_is_an_empty_request() -> None:
    assert decode_json_request(b"{}").resource_logs == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe\xfa", "not JSON"),
        (b"[]", "JSON object"),
        (b'"text"', "JSON object"),
        (b'{"resourceLogs": {"not": "a list"}}', "cannot decode"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}',
            "cannot decode",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_bad_json_is_malformed_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedRequest, match=reason):
        decode_json_request(payload)


def test_deeply_nested_values_are_malformed_not_a_crash() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(200):
        value = {"arrayValue": {"values": [value]}}
    with pytest.raises(MalformedRequest):
        decode_json_request(request_with({"body": value}))


def test_answers_encode_with_lower_camel_case_names() -> None:
    assert json.loads(encode_json(ExportLogsServiceResponse())) == {}
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad")
    assert json.loads(encode_json(status)) == {"code": 3, "message": "bad"}
