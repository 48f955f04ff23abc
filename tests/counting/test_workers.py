"""From a request to per-value tallies (precedence, grouping, identity), and the verdicts the
workers give the Export handlers."""

from __future__ import annotations

import asyncio
import random

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from prometheus_client import CollectorRegistry

from otlp_stats.counting import workers
from otlp_stats.counting.aggregator import Aggregator
from otlp_stats.counting.late import RejectLate
from otlp_stats.counting.queue import QueuedRequest, RequestQueue, Verdict
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import EventTime, NativeScanner, default_scanner, tally_view
from otlp_stats.counting.view import decode_view, key_may_be_on_records
from otlp_stats.counting.workers import INLINE_BYTES, WorkerPool
from otlp_stats.errors import CountingFailed, MalformedRequest, RequestTooLarge, ShuttingDown
from otlp_stats.telemetry import Metrics
from tests.support.fakes import Plain, export_request, log_record, worked_example_request
from tests.support.pipeline_front import CountedBatches, worker_pool
from tests.support.reference import messages_of, reference_messages


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


async def admitted(
    queue: RequestQueue, request: ExportLogsServiceRequest | bytes, arrival: float = 1.0
) -> QueuedRequest:
    wire = request if isinstance(request, bytes) else request.SerializeToString()
    item = QueuedRequest(arrival, wire, "grpc", asyncio.get_running_loop().create_future())
    queue.put_nowait(item)
    return item


async def test_a_request_is_counted_then_given_its_record_count_as_verdict() -> None:
    queue = RequestQueue(10, 1 << 20)
    pool, counted = worker_pool(queue)
    await pool.start()
    item = await admitted(queue, worked_example_request(), arrival=7.0)
    assert await item.verdict == Verdict(5)
    [(arrival, batch)] = counted.batches
    assert arrival == 7.0
    assert {label: tally.records for label, tally in batch.items()} == {
        "bar": 1,
        "qux": 1,
        "baz": 2,
        None: 1,
    }
    await queue.wait_idle()
    await pool.stop()


async def test_what_cannot_be_counted_is_refused_to_its_sender_and_counts_nothing() -> None:
    queue = RequestQueue(10, 1 << 20)
    pool, counted = worker_pool(queue, max_records=3)
    await pool.start()
    malformed = await admitted(queue, b"\x0a\xff\xff\xff")
    too_many = await admitted(queue, export_request([log_record("x")] * 4))
    with pytest.raises(MalformedRequest):
        await malformed.verdict
    with pytest.raises(RequestTooLarge, match="4 log records exceeds the limit of 3"):
        await too_many.verdict
    assert counted.batches == []
    await pool.stop()


async def test_a_request_whose_sender_gave_up_is_not_counted() -> None:
    queue = RequestQueue(10, 1 << 20)
    pool, counted = worker_pool(queue)
    gone = await admitted(queue, worked_example_request())
    gone.verdict.cancel()  # the handler's await was cancelled: deadline passed, client went away
    kept = await admitted(queue, worked_example_request())
    await pool.start()
    assert await kept.verdict == Verdict(5)
    assert len(counted.batches) == 1
    await pool.stop()


@pytest.mark.parametrize(("turn_seconds", "counted_before_the_loop_gets_in"), [(60.0, 5), (0.0, 1)])
async def test_a_worker_counts_what_waits_in_turns_then_lets_the_handlers_in(
    monkeypatch: pytest.MonkeyPatch, turn_seconds: float, counted_before_the_loop_gets_in: int
) -> None:
    # A yield per request costs a loop iteration each; a yield per turn still lets the Export
    # handlers admit (or be refused) while a backlog is counted.
    monkeypatch.setattr(workers, "TURN_SECONDS", turn_seconds)
    queue = RequestQueue(10, 1 << 20)
    pool, counted = worker_pool(queue)
    items = [await admitted(queue, worked_example_request()) for _ in range(5)]
    await pool.start()
    # Runs right after the worker's first step: what the worker counted before it yielded.
    seen: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: seen.append(len(counted.batches)))
    assert [await item.verdict for item in items] == [Verdict(5)] * 5
    assert seen == [counted_before_the_loop_gets_in]
    await pool.stop()


async def test_a_big_request_is_counted_in_a_thread_alike() -> None:
    queue = RequestQueue(10, 64 << 20)
    pool, counted = worker_pool(queue)
    await pool.start()
    records = [log_record(f"body {n}", foo=f"v{n % 3}") for n in range(4000)]
    records[0].body.string_value = "x" * INLINE_BYTES
    big = await admitted(queue, export_request(records))
    small = await admitted(queue, export_request(records[1:]))
    assert len(big.wire) > INLINE_BYTES >= len(small.wire)
    assert await big.verdict == Verdict(4000)
    assert await small.verdict == Verdict(3999)
    [big_batch, small_batch] = [batch for _, batch in counted.batches]
    assert {label: tally.records for label, tally in big_batch.items()} == {
        "v0": 1334,
        "v1": 1333,
        "v2": 1333,
    }
    assert messages_of(big_batch)["v1"] == messages_of(small_batch)["v1"]
    await pool.stop()


async def test_a_fault_in_counting_refuses_the_request_and_is_a_metric() -> None:
    queue = RequestQueue(10, 1 << 20)
    metrics = Metrics(CollectorRegistry())
    pool, _ = worker_pool(queue, metrics)

    class BrokenSink(CountedBatches):
        def add(self, arrival: float, batch: object) -> int:
            raise RuntimeError("a bug")

    pool._sink = BrokenSink()
    await pool.start()
    item = await admitted(queue, worked_example_request())
    with pytest.raises(CountingFailed):
        await item.verdict
    assert metrics.registry.get_sample_value("otlp_stats_records_failed_total") == 5
    await pool.stop()


async def test_stop_refuses_what_still_waits_as_retryable_not_silently_dropped() -> None:
    queue = RequestQueue(10, 1 << 20)
    pool, counted = worker_pool(queue)
    waiting = [await admitted(queue, worked_example_request()) for _ in range(2)]
    await pool.stop()  # as after a drain timeout: nothing was worked on
    for item in waiting:
        with pytest.raises(ShuttingDown):
            await item.verdict
    assert counted.batches == []
    assert queue.depth == 0


async def test_event_time_counts_each_record_in_its_window_and_rejects_the_late_ones() -> None:
    window, lateness, arrival = 10.0, 5.0, 1_767_225_600.0 + 103
    aggregator = Aggregator(window, arrival - 30, lateness=lateness)
    metrics = Metrics(CollectorRegistry())
    event_time = EventTime.of(window, max_skew_seconds=300)
    queue = RequestQueue(10, 1 << 20)
    pool = WorkerPool(
        queue,
        aggregator,
        default_scanner("foo", event_time),
        1,
        metrics,
        None,
        1000,
        1.0,
        event_time=event_time,
        late=RejectLate(window, lateness),
    )
    dated = {
        -1: 2,  # the current window
        -12: 3,  # the previous one, ended 3 s before arrival: within the lateness
        -25: 4,  # ended 23 s before arrival: late
        10_000: 1,  # far past the allowed skew: at arrival
        0: 0,
    }
    records = []
    for offset, count in dated.items():
        for n in range(count):
            record = log_record(f"m{n}", foo="a")
            record.time_unix_nano = int((arrival + offset) * 1e9)
            records.append(record)
    records.append(log_record("undated", foo="a"))  # both times 0: at arrival
    await pool.start()
    item = await admitted(queue, export_request(records), arrival)
    verdict = await item.verdict
    await pool.stop()
    assert (verdict.counted, verdict.rejected) == (7, 4)
    assert "4 log records rejected as late" in verdict.message
    sample = metrics.registry.get_sample_value
    assert sample("otlp_stats_records_counted_total") == 7
    assert sample("otlp_stats_timestamps_adjusted_total", {"reason": "future"}) == 1
    assert sample("otlp_stats_timestamps_adjusted_total", {"reason": "missing"}) == 1
    assert aggregator.late_records["window_closed"] == 4
    reports = aggregator.close_all(arrival + 1)
    assert {r.start: r.records for r in reports if r.records} == {
        arrival - 13: 3,
        arrival - 3: 2 + 1 + 1,
    }
