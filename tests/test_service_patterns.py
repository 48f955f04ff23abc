"""The real service's reports with and without patterns counted: fields added after the others,
and with --count-patterns false exactly the report of before patterns."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.support.fakes import Plain, export_request, log_record, worked_example_request
from tests.support.grpctools import GrpcChannels
from tests.support.servicetools import ServiceProcess, metric_value, running_service

ONE_WINDOW = "1000000000"
FIELDS_BEFORE = ["value", "missing", "overflow", "distinct_messages", "estimated", "records"]


def final_report(grpc_channels: GrpcChannels, *flags: str) -> dict[str, object]:
    argv = ("--attribute-key", "foo", "--window", ONE_WINDOW, *flags)
    with running_service(*argv) as service:
        grpc_channels.logs_stub(service.grpc_target).Export(worked_example_request(), timeout=10)
        assert service.stop() == 0
        [report] = service.all_reports()
    return report


def values_of(report: dict[str, object]) -> list[dict[str, object]]:
    values = report["values"]
    assert isinstance(values, list) and len(values) == 4  # the worked example's four values
    return values


def test_values_carry_pattern_fields_after_the_others(grpc_channels: GrpcChannels) -> None:
    for value in values_of(final_report(grpc_channels)):
        assert list(value) == [*FIELDS_BEFORE, "distinct_patterns", "top_patterns"]
        assert isinstance(value["distinct_patterns"], int)
        top = value["top_patterns"]
        assert isinstance(top, list) and len(top) <= 3


def test_pattern_fields_follow_the_settings(grpc_channels: GrpcChannels) -> None:
    no_list = values_of(final_report(grpc_channels, "--top-patterns", "0"))
    assert [list(value) for value in no_list] == [[*FIELDS_BEFORE, "distinct_patterns"]] * 4
    not_counted = values_of(final_report(grpc_channels, "--count-patterns", "false"))
    assert [list(value) for value in not_counted] == [FIELDS_BEFORE] * 4


HOSTILE: list[str | bytes] = [
    "7" * 100_000,
    " ".join(f"t{n}" for n in range(1_000_000)),
    " ".join(f"word{chr(97 + n % 26)}" for n in range(10_000)),
    # Invalid UTF-8 cannot be a protobuf string: a careless sender's bytes body.
    b"caf\xc3 \xff\xfe order 12 failed",
]


def test_hostile_bodies_are_counted_within_the_bounds(grpc_channels: GrpcChannels) -> None:
    request = export_request([log_record(body) for body in HOSTILE], resource={"foo": "x"})
    flags = ("--attribute-key", "foo", "--window", ONE_WINDOW, "--top-patterns", "10")
    with running_service(*flags) as service:
        grpc_channels.logs_stub(service.grpc_target).Export(request, timeout=30)
        assert service.stop() == 0
        [report] = service.all_reports()
    [value] = report["values"]
    assert (value["records"], value["distinct_patterns"]) == (len(HOSTILE), len(HOSTILE))
    for top in value["top_patterns"]:
        assert len(top["pattern"].encode()) <= 512
        assert top["pattern"].count(" ") <= 64
        assert len(top["example"]) <= 1_024


CUT = "otlp_stats_pattern_cut_records_total"
LONG_WORDS = " ".join("y" * 30 for _ in range(40))  # 1,239 bytes in 40 tokens
# Each body, and whether its pattern is cut at the token bound, at the length bound (defaults:
# 64 tokens, 512 bytes). Bytes are sent as a string body's bytes: invalid UTF-8, which the C
# scanner leaves to Python, where it is read as U+FFFD and masked and cut alike.
CUT_BODIES: list[tuple[Plain, bool, bool]] = [
    ("7" * 100_000, False, False),  # one masked token: within both bounds, nothing cut
    (" ".join(f"t{n}" for n in range(1_000_000)), True, False),
    (" ".join(f"word{chr(97 + n % 26)}" for n in range(10_000)), True, False),
    (LONG_WORDS, False, True),
    (LONG_WORDS, False, True),  # the same body twice: one masking, two records cut
    (" ".join(["y" * 30] * 100), True, True),
    (b"\xff " * 100, True, False),
    (b"\xfe " + b"z" * 600, False, True),
    ({"k" * 600: 1, "user": "bob"}, False, True),  # a structured body's key, masked and cut
    ([{"a b " * 40: None}], True, False),
    ({"ok": 1}, False, False),
]


def cut_request() -> bytes:
    """CUT_BODIES as one request's bytes, each bytes body in a string field as it is."""
    placeholders: dict[bytes, bytes] = {}
    records = []
    for number, (body, _, _) in enumerate(CUT_BODIES):
        if isinstance(body, bytes):
            placeholder = f"<{number}>".ljust(len(body), "#")
            placeholders[placeholder.encode()] = body
            body = placeholder
        records.append(log_record(body))
    wire = export_request(records, resource={"foo": "x"}).SerializeToString()
    for placeholder_bytes, raw in placeholders.items():
        wire = wire.replace(placeholder_bytes, raw, 1)
    return wire


def post_protobuf(service: ServiceProcess, wire: bytes) -> None:
    sent = urllib.request.Request(
        f"{service.http_url}/v1/logs", wire, {"Content-Type": "application/x-protobuf"}
    )
    with urllib.request.urlopen(sent, timeout=30) as answer:
        assert answer.status == 200


@pytest.mark.parametrize("rules", [False, True], ids=["c-masker", "team-rules"])
def test_records_cut_at_a_bound_move_the_metric_per_record(tmp_path: Path, rules: bool) -> None:
    """The built-in rules mask in the C scanner's pass; with a team's rules every text is masked
    in Python: the same records are counted either way."""
    flags = ["--attribute-key", "foo", "--window", ONE_WINDOW]
    if rules:
        (tmp_path / "rules.toml").write_text("[rules]\nnever = 'no such word here'\n")
        flags += ["--pattern-rules", str(tmp_path / "rules.toml")]
    tokens = sum(cut for _, cut, _ in CUT_BODIES)
    length = sum(cut for _, _, cut in CUT_BODIES)
    assert (tokens, length) == (5, 5)
    wire = cut_request()
    with running_service(*flags) as service:
        assert service.metric(CUT, {"bound": "tokens"}) == 0
        post_protobuf(service, wire)
        # The answer comes once the request is counted, cuts and all.
        assert service.metric(CUT, {"bound": "tokens"}) == tokens
        assert service.metric(CUT, {"bound": "length"}) == length
        post_protobuf(service, wire)
        assert service.metric(CUT, {"bound": "tokens"}) == 2 * tokens
        assert service.metric(CUT, {"bound": "length"}) == 2 * length
        assert service.stop() == 0


def test_several_processes_sum_their_cuts_on_one_metrics_page() -> None:
    """--processes 2: each serving process counts the cuts of what it received; the supervisor's
    /metrics sums them, one family, as it does records_counted."""
    tokens = sum(cut for _, cut, _ in CUT_BODIES)
    length = sum(cut for _, _, cut in CUT_BODIES)
    wire = cut_request()
    flags = ("--processes", "2", "--attribute-key", "foo", "--window", ONE_WINDOW)
    with running_service(*flags) as service:
        for _ in range(4):  # a connection each: the kernel spreads them over the processes
            post_protobuf(service, wire)
        # Each process sends its figures every second: poll until they are in.
        service.wait_metric("otlp_stats_records_counted_total", 4 * len(CUT_BODIES), timeout=20)
        _, page = service.http_get("/metrics")
        assert page.count(f"# TYPE {CUT} counter") == 1
        assert metric_value(page, CUT, {"bound": "tokens"}) == 4 * tokens
        assert metric_value(page, CUT, {"bound": "length"}) == 4 * length
        assert service.stop() == 0
