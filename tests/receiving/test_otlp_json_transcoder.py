"""The C OTLP/JSON transcoder (receiving/_otlp_json.c) counts exactly what json_format does.

What an encoder writes, it transcodes to the very bytes json_format.Parse then
SerializeToString gives, so the scanner sees the same request: same verdicts, attribute
values, message identities and record timestamps. Anything it is not sure of it hands back
(None) to the reference path, so a refusal keeps its status and its reason. Each test holds
the transcoder to that: where it answers, the reference path accepts the same request.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import NativeScanner
from otlp_stats.errors import MalformedRequest
from otlp_stats.receiving._otlp_json import transcode
from otlp_stats.receiving.otlp_json import (
    NATIVE_JSON_AVAILABLE,
    encode_json,
    encode_json_request,
    json_to_wire,
    reference_json_to_wire,
)
from tests.counting.test_view_equivalence import KEY, attributes, bodies
from tests.support.reference import Messages, messages_of

U64 = st.integers(0, 2**64 - 1)
U32 = st.integers(0, 2**32 - 1)
records = st.builds(
    LogRecord,
    time_unix_nano=U64,
    observed_time_unix_nano=U64,
    severity_number=st.integers(-(2**31), 2**31 - 1) | st.integers(0, 24),
    severity_text=st.text(max_size=6),
    body=bodies,
    attributes=attributes,
    dropped_attributes_count=U32,
    flags=U32,
    trace_id=st.binary(max_size=16),
    span_id=st.binary(max_size=8),
    event_name=st.text(max_size=6),
)
scope_logs = st.builds(
    ScopeLogs,
    scope=st.builds(
        InstrumentationScope,
        name=st.text(max_size=4),
        version=st.text(max_size=4),
        attributes=attributes,
        dropped_attributes_count=U32,
    ),
    log_records=st.lists(records, max_size=4),
    schema_url=st.text(max_size=4),
)
requests = st.builds(
    lambda groups: ExportLogsServiceRequest(resource_logs=groups),
    st.lists(
        st.builds(
            ResourceLogs,
            resource=st.builds(Resource, attributes=attributes, dropped_attributes_count=U32),
            scope_logs=st.lists(scope_logs, max_size=3),
            schema_url=st.text(max_size=4),
        ),
        max_size=3,
    ),
)


def otlp_json(request: ExportLogsServiceRequest, proto_names: bool = False) -> bytes:
    """The request as OTLP/JSON (hex trace and span ids), camelCase or with the proto names."""
    if not proto_names:
        return encode_json_request(request)
    document = json_format.MessageToDict(request, preserving_proto_field_name=proto_names)
    for resource_logs in document.get("resourceLogs", document.get("resource_logs", [])):
        for scope in resource_logs.get("scopeLogs", resource_logs.get("scope_logs", [])):
            for record in scope.get("logRecords", scope.get("log_records", [])):
                for name in ("traceId", "spanId", "trace_id", "span_id"):
                    if name in record:
                        record[name] = base64.b64decode(record[name]).hex()
    return json.dumps(document).encode()


def counted(wire: bytes) -> Messages:
    scanner = NativeScanner(KEY)
    return messages_of(scanner.tally(scanner.check(wire), LabelRenderer()))


def reference_outcome(payload: bytes) -> bytes | str:
    """The reference path's protobuf, or the reason it refuses the request."""
    try:
        return reference_json_to_wire(payload)
    except MalformedRequest as refusal:
        return f"refused: {refusal}"


def assert_transcodes_as_the_reference(payload: bytes) -> bytes | None:
    """The transcoder answers only for what the reference path accepts, with the same request."""
    fast = transcode(payload)
    reference = reference_outcome(payload)
    if fast is not None:
        assert isinstance(reference, bytes), (payload, reference)
        assert ExportLogsServiceRequest.FromString(fast) == ExportLogsServiceRequest.FromString(
            reference
        )
    return fast


def test_the_json_transcoder_is_built() -> None:
    # A build that silently fell back to json_format would pass every other test, slowly.
    assert NATIVE_JSON_AVAILABLE


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.booleans())
def test_what_an_encoder_writes_becomes_the_bytes_json_format_gives(
    request: ExportLogsServiceRequest, proto_names: bool
) -> None:
    payload = otlp_json(request, proto_names)
    fast = transcode(payload)
    assert fast is not None
    # Byte for byte; the original's bytes differ only by NaN payloads, which JSON does not keep.
    assert fast == reference_json_to_wire(payload)
    assert counted(fast) == counted(request.SerializeToString())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.randoms(use_true_random=False))
def test_fields_in_any_order_count_alike(
    request: ExportLogsServiceRequest, shuffler: random.Random
) -> None:
    def shuffled(node: Any) -> Any:
        if isinstance(node, dict):
            items = list(node.items())
            # KeyValue keeps its key first; every other object is shuffled.
            if list(node) != ["key", "value"]:
                shuffler.shuffle(items)
            return {name: shuffled(value) for name, value in items}
        if isinstance(node, list):
            return [shuffled(item) for item in node]
        return node

    payload = json.dumps(shuffled(json.loads(otlp_json(request)))).encode()
    fast = assert_transcodes_as_the_reference(payload)
    assert fast is not None
    assert counted(fast) == counted(request.SerializeToString())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.data())
def test_a_damaged_request_gets_the_reference_verdict(
    request: ExportLogsServiceRequest, data: st.DataObject
) -> None:
    payload = bytearray(otlp_json(request))
    for _ in range(data.draw(st.integers(1, 3))):
        if not payload:
            break
        at = data.draw(st.integers(0, len(payload) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        byte = data.draw(st.sampled_from(b'{}[]",:\\ 0-9eE.nul\xff\xc3\x80"'))
        if action == "flip":
            payload[at] = byte
        elif action == "delete":
            del payload[at]
        else:
            payload.insert(at, byte)
    assert_transcodes_as_the_reference(bytes(payload))


def request_of(record: str, *, after: str = "", resource: str = "{}") -> bytes:
    scope_logs = f'{{"logRecords": [{record}]}}'
    resource_logs = f'{{"resource": {resource}, "scopeLogs": [{scope_logs}]}}'
    return f'{{"resourceLogs": [{resource_logs}]{after}}}'.encode()


def body(any_value: str) -> bytes:
    return request_of(f'{{"body": {any_value}}}')


def text_body(raw: bytes) -> bytes:
    """A string body of these exact bytes, whatever they are."""
    return body('{"stringValue": "X"}').replace(b"X", raw)


def nested(depth: int) -> bytes:
    return body('{"arrayValue": {"values": [' * depth + "{}" + "]}}" * depth)


FAST, REFERENCE = "fast", "reference"
HEX_IDS = '{"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "eee19b7ec3c1b174"}'
UNKNOWN = '{"x": {"y": [1, -2.5e3, "z", true, false, null, {}]}}'
# (what, the request, which path answers). Every row also holds the transcoder to the
# reference's verdict; a refusal's reason is the reference path's.
CORNERS = [
    ("escapes in a body", body(r'{"stringValue": "a\"\\\/\b\f\n\r\t\u00e9"}'), FAST),
    ("a surrogate pair", body(r'{"stringValue": "\ud83d\ude00"}'), FAST),
    ("a lone high surrogate", body(r'{"stringValue": "\ud83d"}'), REFERENCE),
    ("a lone low surrogate", body(r'{"stringValue": "\ude00x"}'), REFERENCE),
    ("an escaped NUL", body(r'{"stringValue": "a\u0000b"}'), FAST),
    ("a raw control character", text_body(b"a\tb"), REFERENCE),
    ("an unknown escape", body(r'{"stringValue": "\x41"}'), REFERENCE),
    ("UTF-8 text", text_body("é€😀".encode()), FAST),
    ("invalid UTF-8", text_body(b"\xff"), REFERENCE),
    ("a truncated UTF-8 sequence", text_body(b"\xe2\x82"), REFERENCE),
    ("an overlong UTF-8 slash", text_body(b"\xc0\xaf"), REFERENCE),
    ("UTF-8 of a surrogate", text_body(b"\xed\xa0\x80"), REFERENCE),
    ("past U+10FFFF", text_body(b"\xf4\x90\x80\x80"), REFERENCE),
    ("a UTF-8 byte order mark", b"\xef\xbb\xbf" + request_of("{}"), REFERENCE),
    ("UTF-16", request_of("{}").decode().encode("utf-16"), REFERENCE),
    ("int64 as a string", body('{"intValue": "-9223372036854775808"}'), FAST),
    ("int64 as a number", body('{"intValue": 9223372036854775807}'), FAST),
    ("int64 too large", body('{"intValue": "9223372036854775808"}'), REFERENCE),
    ("an int of 25 digits", body('{"intValue": 1000000000000000000000000}'), REFERENCE),
    ("uint64 time, largest", request_of('{"timeUnixNano": "18446744073709551615"}'), FAST),
    ("uint64 time, too large", request_of('{"timeUnixNano": 18446744073709551616}'), REFERENCE),
    ("a negative time", request_of('{"observedTimeUnixNano": "-1"}'), REFERENCE),
    ("a float for an int", request_of('{"timeUnixNano": 1.0e3}'), REFERENCE),
    ("a fraction for an int", request_of('{"timeUnixNano": 1.5}'), REFERENCE),
    ("an int with a plus", request_of('{"timeUnixNano": "+5"}'), REFERENCE),
    ("an int with a space", request_of('{"timeUnixNano": " 5"}'), REFERENCE),
    ("an int with leading zeros", request_of('{"timeUnixNano": "007"}'), FAST),
    ("an empty int", request_of('{"timeUnixNano": ""}'), REFERENCE),
    ("a bool for an int", request_of('{"flags": true}'), REFERENCE),
    ("flags too large", request_of('{"flags": 4294967296}'), REFERENCE),
    ("a double", body('{"doubleValue": -1.5e-300}'), FAST),
    ("a double written as an int", body('{"doubleValue": 12345678901234567890}'), FAST),
    ("a double too large", body('{"doubleValue": 1e400}'), REFERENCE),
    ("quoted NaN", body('{"doubleValue": "NaN"}'), FAST),
    ("quoted -Infinity", body('{"doubleValue": "-Infinity"}'), FAST),
    ("a bare NaN", body('{"doubleValue": NaN}'), REFERENCE),
    ("a NaN in an unknown field", request_of('{"x": NaN}'), REFERENCE),
    ("a quoted double", body('{"doubleValue": "1.5"}'), REFERENCE),
    ("an enum by name", request_of('{"severityNumber": "SEVERITY_NUMBER_WARN"}'), FAST),
    ("an enum by number", request_of('{"severityNumber": 17}'), FAST),
    ("an enum number it does not name", request_of('{"severityNumber": 99}'), FAST),
    ("an enum name it does not know", request_of('{"severityNumber": "LOUD"}'), REFERENCE),
    ("an enum number in a string", request_of('{"severityNumber": "9"}'), FAST),
    ("hex ids", request_of(HEX_IDS), FAST),
    ("an odd hex id", request_of('{"traceId": "abc"}'), REFERENCE),
    ("a hex id with spaces", request_of('{"traceId": "ab cd"}'), REFERENCE),
    ("a hex id that is not hex", request_of('{"spanId": "zz"}'), REFERENCE),
    ("base64 bytes", body('{"bytesValue": "AAEC/w=="}'), FAST),
    ("URL-safe base64", body('{"bytesValue": "AAEC_w=="}'), REFERENCE),
    ("unpadded base64", body('{"bytesValue": "AAEC/w"}'), REFERENCE),
    ("empty bytes", body('{"bytesValue": ""}'), FAST),
    ("an empty string body", body('{"stringValue": ""}'), FAST),
    ("an empty body", body("{}"), FAST),
    ("the proto field names", request_of('{"time_unix_nano": "5", "severity_text": "x"}'), FAST),
    ("both spellings", request_of('{"timeUnixNano": "5", "time_unix_nano": "6"}'), REFERENCE),
    ("a duplicate key", request_of('{"timeUnixNano": "5", "timeUnixNano": "6"}'), REFERENCE),
    ("two members of the oneof", body('{"stringValue": "a", "intValue": 1}'), REFERENCE),
    ("a null field", body("null"), REFERENCE),
    ("a null element", request_of("null"), REFERENCE),
    ("a null in an unknown field", request_of('{"x": null}'), FAST),
    ("unknown fields of every shape", request_of(UNKNOWN, after=', "future": [[]]'), FAST),
    ("a string where an object goes", request_of("{}", resource='"r"'), REFERENCE),
    ("an object where a list goes", b'{"resourceLogs": {}}', REFERENCE),
    ("a number where a string goes", request_of('{"severityText": 5}'), REFERENCE),
    ("value before key", request_of('{"attributes": [{"value": {}, "key": "k"}]}'), REFERENCE),
    ("an escaped key", request_of(r'{"b\u006fdy": {"stringValue": "v"}}'), REFERENCE),
    ("string indexes (profiles only)", body('{"stringValueStrindex": 1}'), REFERENCE),
    ("entity refs", request_of("{}", resource='{"entityRefs": []}'), REFERENCE),
    ("a trailing comma", request_of('{"timeUnixNano": "5",}'), REFERENCE),
    ("data after the request", request_of("{}") + b" {}", REFERENCE),
    ("whitespace around it", b" \n\t" + request_of("{}") + b"\r\n ", FAST),
    ("a list, not an object", b"[]", REFERENCE),
    ("no bytes at all", b"", REFERENCE),
    ("an empty request", b"{}", FAST),
    ("AnyValue nested 30 deep", nested(30), FAST),
    ("AnyValue nested 100 deep", nested(100), REFERENCE),
    (
        "unknown JSON nested 2000 deep",
        request_of('{"x": %s}' % ("[" * 2000 + "]" * 2000)),
        REFERENCE,
    ),
    ("a 20 MB body", text_body("é".encode() * 10_000_000), FAST),
    ("a lone surrogate in a key", request_of(r'{"x\ud83d": 1}'), REFERENCE),
    # The fast paths: keys an encoder writes next, strings 16 bytes at a time, hex by table,
    # integers of up to 19 digits unchecked, severity names after their prefix, lengths set
    # aside by guess.
    ("a key longer than the one expected", request_of('{"timeUnixNanos": "5"}'), FAST),
    ("an expected key cut short", request_of('{"timeUnixNan": "5"}'), FAST),
    ("a space before the colon", request_of('{"body" : {"stringValue" : "v"}}'), FAST),
    ("keys out of the usual order", request_of('{"spanId": "00", "timeUnixNano": "5"}'), FAST),
    (
        "a key and value swapped",
        request_of('{"attributes": [{"value": {}, "key": ""}]}'),
        REFERENCE,
    ),
    ("upper-case hex ids", request_of('{"spanId": "ABCDEF0123456789"}'), FAST),
    ("a hex id ending in a non-hex digit", request_of('{"spanId": "0123456789abcdeg"}'), REFERENCE),
    ("a hex id with a NUL", request_of(r'{"spanId": "0\u0000"}'), REFERENCE),
    ("19 nines", request_of('{"timeUnixNano": "9999999999999999999"}'), FAST),
    ("20 nines", request_of('{"timeUnixNano": "99999999999999999999"}'), REFERENCE),
    ("2**64 as a string", request_of('{"timeUnixNano": "18446744073709551616"}'), REFERENCE),
    ("a letter in 19 digits", request_of('{"timeUnixNano": "123456789x123456789"}'), REFERENCE),
    (
        "a letter as the 20th digit",
        request_of('{"timeUnixNano": "1234567890123456789x"}'),
        REFERENCE,
    ),
    ("a colon among digits", request_of('{"timeUnixNano": "12:4"}'), REFERENCE),
    (
        "a severity name with no suffix",
        request_of('{"severityNumber": "SEVERITY_NUMBER_"}'),
        REFERENCE,
    ),
    (
        "a severity name of another enum",
        request_of('{"severityNumber": "SEVERITY_NUMBER_X"}'),
        REFERENCE,
    ),
    ("the last severity name", request_of('{"severityNumber": "SEVERITY_NUMBER_FATAL4"}'), FAST),
    ("a 20 kB body (3-byte lengths)", text_body(b"x" * 20_000), FAST),
    ("a 200 B record (a 2-byte length)", text_body(b"x" * 200), FAST),
]


@pytest.mark.parametrize(
    ("payload", "path"), [pytest.param(p, path, id=what) for what, p, path in CORNERS]
)
def test_corner_cases_get_the_reference_verdict(payload: bytes, path: str) -> None:
    fast = assert_transcodes_as_the_reference(payload)
    assert (FAST if fast is not None else REFERENCE) == path
    outcome = reference_outcome(payload)
    if isinstance(outcome, bytes):
        assert ExportLogsServiceRequest.FromString(
            json_to_wire(payload)
        ) == ExportLogsServiceRequest.FromString(outcome)
    else:
        with pytest.raises(MalformedRequest) as refused:
            json_to_wire(payload)
        assert f"refused: {refused.value}" == outcome


def test_a_body_sent_as_json_and_as_protobuf_is_one_message() -> None:
    record = LogRecord()
    record.body.kvlist_value.values.add(key="b").value.int_value = 1
    record.body.kvlist_value.values.add(key="a").value.string_value = "x"
    request = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])]
    )
    fast = transcode(encode_json(request))
    assert fast is not None
    assert counted(fast) == counted(request.SerializeToString())


SPECIALS = [
    "é".encode(), "😀".encode(), rb"\n", rb"\u00e9", rb"\ud83d\ude00", rb"\"", b"\x01", b"\xff",
    rb"\ud83d",
]  # fmt: skip


@pytest.mark.parametrize("special", SPECIALS, ids=repr)
def test_a_special_character_anywhere_in_a_string_gets_the_reference_verdict(
    special: bytes,
) -> None:
    # Strings are read 16 bytes at a time: each offset puts the character in another place in
    # a block, or in the bytes after the last whole block.
    for offset in range(40):
        raw = b"a" * offset + special + b"z" * (offset % 7)
        assert_transcodes_as_the_reference(text_body(raw))
        in_a_key = request_of("{}").replace(b'{"logRecords"', b'{"x' + raw + b'": 1, "logRecords"')
        assert_transcodes_as_the_reference(in_a_key)
