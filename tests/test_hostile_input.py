"""Hostile and malformed input over both transports: documented answers, nothing else.

One service takes everything below. Each request gets OK or its documented refusal; afterwards
the service is still serving, no acknowledged record failed to count, and its memory stayed
bounded. The decode path alone is also fuzzed (hypothesis here, atheris in `make fuzz`).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import resource
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from tests.fuzz.decode_path import decode_and_resolve
from tests.support.securetools import EXPORT, KEY, export_request
from tests.support.servicetools import REPO, ServiceProcess, running_service

# Large enough for 100,000 attributes on one record (about 1.3 MB).
LIMIT = 4 * 1024 * 1024
GRPC_ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
HTTP_ANSWERS = {200, 400, 413, 415}
PROTOBUF = "application/x-protobuf"
# Every example goes over the network twice; enough to find a crash, few enough for CI.
NETWORK = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    with running_service(f"--attribute-key={KEY}", f"--max-recv-size={LIMIT}") as running:
        yield running


@pytest.fixture(scope="module")
def channel(service: ServiceProcess) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 8 * LIMIT)]
    with grpc.insecure_channel(service.grpc_target, options=options) as opened:
        yield opened


def grpc_answer(channel: grpc.Channel, payload: bytes) -> grpc.StatusCode:
    try:
        export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EXPORT)
        export(payload, timeout=30)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def http_answer(
    service: ServiceProcess, body: bytes, content_type: str, encoding: str | None = None
) -> int:
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    request = urllib.request.Request(f"{service.http_url}/v1/logs", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand: the library refuses to build these."""
    length, size = bytearray(), len(payload)
    while size >= 0x80:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return bytes([number << 3 | 2]) + bytes(length) + payload


def nested_request(depth: int) -> bytes:
    """A record whose body is an array in a kvlist in an array ... `depth` levels down."""
    value = _field(1, b"bottom")  # AnyValue.string_value
    for level in range(depth):
        if level % 2:
            value = _field(5, _field(1, value))  # AnyValue.array_value: ArrayValue.values
        else:  # AnyValue.kvlist_value: KeyValueList.values: KeyValue{key, value}
            value = _field(6, _field(1, _field(1, b"k") + _field(2, value)))
    record = _field(5, value)  # LogRecord.body
    return _field(1, _field(2, _field(2, record)))  # resource_logs.scope_logs.log_records


def invalid_utf8_request(key: bytes, value: bytes) -> bytes:
    """A record whose body is the string b"bad \\xff" and with one attribute, both by hand."""
    body = _field(5, _field(1, b"bad \xff"))  # LogRecord.body: AnyValue.string_value
    attribute = _field(6, _field(1, key) + _field(2, _field(1, value)))  # LogRecord.attributes
    return _field(1, _field(2, _field(2, body + attribute)))


def request_of(*records: LogRecord) -> bytes:
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=list(records))])]
    ).SerializeToString()


def named_payloads() -> dict[str, bytes]:
    valid = export_request("tenant-a", "one", "two")
    many_attributes = [KeyValue(key=f"a{n}", value=AnyValue(int_value=n)) for n in range(100_000)]
    return {
        "empty request": b"",
        "no records": ExportLogsServiceRequest(resource_logs=[ResourceLogs()]).SerializeToString(),
        "truncated": valid[: len(valid) // 2],
        "wrong wire type": b"\x0d\x00\x00\x00\x00" + valid,  # field 1 as fixed32
        "random bytes": bytes(range(256)) * 4,
        "deep nesting 30": nested_request(30),
        "deep nesting 5000": nested_request(5000),
        "100,000 attributes": request_of(
            LogRecord(body=AnyValue(string_value="x"), attributes=many_attributes)
        ),
        "huge attribute value": request_of(
            LogRecord(
                body=AnyValue(string_value="big"),
                attributes=[KeyValue(key=KEY, value=AnyValue(string_value="v" * (LIMIT - 100)))],
            )
        ),
        "body just over the limit": request_of(LogRecord(body=AnyValue(string_value="b" * LIMIT))),
        "invalid UTF-8 in body and value": invalid_utf8_request(KEY.encode(), b"\xc3\x28"),
        "invalid UTF-8 in a key": invalid_utf8_request(b"\xff\xfe", b"value"),
    }


COUNTED = (grpc.StatusCode.OK, 200)
MALFORMED = (grpc.StatusCode.INVALID_ARGUMENT, 400)
TOO_LARGE = (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
# What each named payload gets, and the records each transport then counts (written out here,
# not taken from a scanner: the scanners are what is under test). Protobuf parsers skip a known
# field sent with the wrong wire type as an unknown field (the two records after it still
# count); strings in bodies and values are kept as bytes, so invalid UTF-8 there is counted,
# while a map key must be valid UTF-8.
NAMED_ANSWERS: dict[str, tuple[tuple[grpc.StatusCode, int], int]] = {
    "empty request": (COUNTED, 0),
    "no records": (COUNTED, 0),
    "truncated": (MALFORMED, 0),
    "wrong wire type": (COUNTED, 2),
    "random bytes": (MALFORMED, 0),
    "deep nesting 30": (COUNTED, 1),
    "deep nesting 5000": (COUNTED, 1),
    "100,000 attributes": (COUNTED, 1),
    "huge attribute value": (COUNTED, 1),
    "body just over the limit": (TOO_LARGE, 0),
    "invalid UTF-8 in body and value": (COUNTED, 1),
    "invalid UTF-8 in a key": (MALFORMED, 0),
}


@pytest.mark.parametrize("name", list(NAMED_ANSWERS))
def test_named_hostile_payloads_get_documented_answers_on_both_transports(
    service: ServiceProcess, channel: grpc.Channel, name: str
) -> None:
    payload = named_payloads()[name]
    answers, records = NAMED_ANSWERS[name]
    before = accepted(service)
    assert (
        grpc_answer(channel, payload),
        http_answer(service, payload, PROTOBUF),
    ) == answers
    assert accepted(service) == before + 2 * records


def accepted(service: ServiceProcess) -> float:
    return sum(
        service.metric("otlp_stats_records_accepted_total", {"transport": transport}) or 0.0
        for transport in ("grpc", "http")
    )


MALFORMED_HTTP_BODIES: list[tuple[bytes, str, str | None, int]] = [
    (b'{"resourceLogs": "not a list"}', "application/json", None, 400),
    (
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": 5}]}]}]}',
        "application/json",
        None,
        400,
    ),
    (b'{"unknownField": 1, "resourceLogs": []}', "application/json", None, 200),
    (b"[1, 2, 3]", "application/json", None, 400),
    (b"\xff\xfe not json", "application/json", None, 400),
    (gzip.compress(b"\x00" * (64 * 1024 * 1024)), "application/x-protobuf", "gzip", 413),
    (gzip.compress(b"not gzip")[:-8], "application/x-protobuf", "gzip", 400),
    (b"plain text", "text/plain", None, 415),
    (b"x", "application/x-protobuf", "br", 415),
    (b"", "application/json", None, 400),
]


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "status"),
    MALFORMED_HTTP_BODIES,
    ids=[
        "json wrong type",
        "json body as number",
        "json unknown field",
        "json array",
        "json invalid utf-8",
        "gzip bomb",
        "truncated gzip",
        "wrong content type",
        "unknown encoding",
        "empty json",
    ],
)
def test_malformed_http_bodies_get_their_documented_status(
    service: ServiceProcess, body: bytes, content_type: str, encoding: str | None, status: int
) -> None:
    assert http_answer(service, body, content_type, encoding) == status


@NETWORK
@given(payload=st.binary(max_size=4096))
def test_random_bytes_never_get_an_undocumented_answer(
    service: ServiceProcess, channel: grpc.Channel, payload: bytes
) -> None:
    assert grpc_answer(channel, payload) in GRPC_ANSWERS
    assert http_answer(service, payload, PROTOBUF) in HTTP_ANSWERS


@NETWORK
@given(
    cut=st.integers(min_value=0, max_value=200),
    flip=st.tuples(
        st.integers(min_value=0, max_value=200), st.integers(min_value=1, max_value=255)
    ),
)
def test_mutated_requests_never_get_an_undocumented_answer(
    service: ServiceProcess, channel: grpc.Channel, cut: int, flip: tuple[int, int]
) -> None:
    valid = bytearray(export_request("tenant-b", "alpha", "beta", "alpha"))
    position, mask = flip
    valid[position % len(valid)] ^= mask
    payload = bytes(valid[: max(1, len(valid) - cut)])
    assert grpc_answer(channel, payload) in GRPC_ANSWERS
    assert http_answer(service, payload, PROTOBUF) in HTTP_ANSWERS


# `make fuzz` sets HYPOTHESIS_PROFILE=fuzz: the same property, a hundred times longer.
DECODE_EXAMPLES = 30_000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 300


@settings(max_examples=DECODE_EXAMPLES, deadline=None)
@given(payload=st.binary(max_size=2048))
def test_the_decode_path_only_tallies_or_refuses(payload: bytes) -> None:
    decode_and_resolve(payload)


def test_a_short_coverage_guided_fuzz_run_finds_nothing(tmp_path: object) -> None:
    # A declared test tool (pyproject's test extra): missing means a broken install, not a skip.
    assert importlib.util.find_spec("atheris") is not None, "atheris is not installed"
    # libFuzzer reads the peak RSS, which Linux carries over from this process through fork and
    # exec: the 1 GiB the run may use comes on top of the test session's own peak.
    limit_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + 1024
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.atheris_run",
            "-max_total_time=8",
            f"-rss_limit_mb={limit_mb}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_after_every_hostile_payload_the_service_still_serves_and_counts(
    service: ServiceProcess, channel: grpc.Channel
) -> None:
    """Survival, checked after this test's own barrage: it holds in any order, or alone.

    Run with the others, the shared service has also taken everything they sent.
    """
    for name, payload in named_payloads().items():
        assert (grpc_answer(channel, payload), http_answer(service, payload, PROTOBUF)) == (
            NAMED_ANSWERS[name][0]
        ), name
    for body, content_type, encoding, status in MALFORMED_HTTP_BODIES:
        assert http_answer(service, body, content_type, encoding) == status
    for size in range(1, 200, 7):
        payload = bytes((n * 131 + size) % 256 for n in range(size))
        assert grpc_answer(channel, payload) in GRPC_ANSWERS
    assert service.http_get("/readyz")[0] == 200
    before = service.metric("otlp_stats_records_accepted_total", {"transport": "grpc"}) or 0.0
    assert grpc_answer(channel, export_request("tenant-c", "still", "here")) is grpc.StatusCode.OK
    after = service.metric("otlp_stats_records_accepted_total", {"transport": "grpc"})
    assert after == before + 2
    assert service.metric("otlp_stats_records_failed_total") == 0
    rss = service.metric("process_resident_memory_bytes")
    assert rss is not None and rss < 600 * 1024 * 1024, rss
    print(json.dumps({"rss_bytes": rss}))
