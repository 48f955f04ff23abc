"""From a decoded request to per-value tallies: precedence, grouping, identity."""

from __future__ import annotations

import random

import structlog
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from prometheus_client import CollectorRegistry

from otlp_stats.queue import QueuedRequest, RequestQueue
from otlp_stats.resolve import LabelRenderer
from otlp_stats.scan import CheckedRequest, NativeScanner, tally_view
from otlp_stats.telemetry import Metrics
from otlp_stats.view import decode_view, key_may_be_on_records
from otlp_stats.workers import WorkerPool
from tests.fakes import Plain, export_request, log_record, worked_example_request
from tests.reference import messages_of, reference_messages


def summary(
    request: ExportLogsServiceRequest, key: str = "foo"
) -> dict[str | None, tuple[int, int]]:
    """Distinct messages and records per label through both scanners, checked against the
    straightforward model."""
    wire = request.SerializeToString()
    view = decode_view(wire)
    tallies = tally_view(view, key, LabelRenderer(), key_may_be_on_records(wire, view, key))
    # Looking up every record must agree with the shortcut taken when no record has the key.
    assert tally_view(view, key, LabelRenderer()) == tallies
    messages = messages_of(tallies)
    native = NativeScanner(key)
    assert messages_of(native.tally(native.check(wire), LabelRenderer())) == messages
    assert messages == reference_messages(request, key)
    return {label: (len(hashes), records) for label, (hashes, records) in messages.items()}


def test_worked_example() -> None:
    assert summary(worked_example_request()) == {
        "bar": (1, 1),
        "qux": (1, 1),
        "baz": (2, 2),
        None: (1, 1),
    }


def test_repeated_bodies_are_one_message_but_every_record_counts() -> None:
    request = export_request([log_record("same", foo="a") for _ in range(4)])
    assert summary(request) == {"a": (1, 4)}


def test_scope_and_resource_values_apply_to_their_records_only() -> None:
    request = ExportLogsServiceRequest(
        resource_logs=[
            *export_request(
                [log_record("1"), log_record("2", foo="own")], resource={"foo": "res"}
            ).resource_logs,
            *export_request(
                [log_record("3")], scope={"foo": "scope"}, resource={"foo": "res"}
            ).resource_logs,
            *export_request([log_record("4")]).resource_logs,
        ]
    )
    assert summary(request) == {"res": (1, 1), "own": (1, 1), "scope": (1, 1), None: (1, 1)}


def test_typed_values_are_rendered_labels() -> None:
    request = export_request(
        [log_record("a", foo=7), log_record("b", foo=True), log_record("c", foo=[1])]
    )
    assert summary(request) == {"7": (1, 1), "true": (1, 1), "[1]": (1, 1)}


def test_int_and_string_with_same_text_share_a_label() -> None:
    # Labels are text: an int 7 and a string "7" are the same attribute value in the report.
    request = export_request([log_record("a", foo=7), log_record("b", foo="7")])
    assert summary(request) == {"7": (2, 2)}


def test_empty_request_and_empty_groups() -> None:
    assert summary(ExportLogsServiceRequest()) == {}
    assert summary(ExportLogsServiceRequest(resource_logs=[ResourceLogs()])) == {}


def test_matches_an_independent_count_on_random_requests() -> None:
    rng = random.Random(20261123)
    for _ in range(30):
        expected: dict[str | None, tuple[set[str], int]] = {}
        groups: list[ResourceLogs] = []
        for _ in range(rng.randint(1, 3)):
            resource = _maybe(rng, "r")
            scope = _maybe(rng, "s")
            records = []
            for _ in range(rng.randint(0, 40)):
                own = _maybe(rng, "v")
                body = f"body {rng.randint(0, 15)}"
                attributes: dict[str, Plain] = {"other": 1}
                if own is not None:
                    attributes["foo"] = own
                records.append(log_record(body, **attributes))
                value = own if own is not None else scope if scope is not None else resource
                bodies, count = expected.get(value, (set(), 0))
                expected[value] = (bodies | {body}, count + 1)
            groups.extend(
                export_request(
                    records,
                    resource={"foo": resource} if resource is not None else {},
                    scope={"foo": scope} if scope is not None else {},
                ).resource_logs
            )
        request = ExportLogsServiceRequest(resource_logs=groups)
        assert summary(request) == {v: (len(b), n) for v, (b, n) in expected.items()}


def _maybe(rng: random.Random, prefix: str) -> str | None:
    return None if rng.random() < 0.4 else f"{prefix}{rng.randint(0, 3)}"


async def test_stop_reports_requests_still_queued_as_failed_not_silently_dropped() -> None:
    queue = RequestQueue(10, 1 << 20)
    for records in (3, 4):
        queue.put_nowait(QueuedRequest(1.0, 10, "grpc", CheckedRequest(b"", records)))
    metrics = Metrics(CollectorRegistry())
    counted: list[float] = []
    pool = WorkerPool(
        queue,
        lambda arrival, _: counted.append(arrival),
        NativeScanner("foo"),
        1,
        metrics,
        structlog.get_logger(),
    )
    await pool.stop()  # as after a drain timeout: nothing was worked on
    assert counted == []
    assert metrics.registry.get_sample_value("otlp_stats_records_failed_total") == 7
    assert queue.depth == 0
