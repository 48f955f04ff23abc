"""The real service's reports with and without patterns counted: fields added after the others,
and with --count-patterns false exactly the report of before patterns."""

from __future__ import annotations

from tests.support.fakes import export_request, log_record, worked_example_request
from tests.support.grpctools import GrpcChannels
from tests.support.servicetools import running_service

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
