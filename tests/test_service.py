"""The real service as a process: real gRPC requests in, stdout reports and /metrics out."""

from __future__ import annotations

import random
import signal

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.receiving.grpc_receiver import (
    EXPORT_METHOD,
    RETRY_INFO_TRAILER,
    STATUS_DETAILS_TRAILER,
)
from tests.support.fakes import Plain, export_request, log_record, worked_example_request
from tests.support.grpctools import GrpcChannels
from tests.support.servicetools import running_service, totals_by_value
from tests.support.slowed_service import running_slowed_service

# A window so long that a test never straddles two: everything lands in the final report.
ONE_WINDOW = "1000000000"


def value_summary(report: dict[str, object]) -> dict[tuple[str, bool], tuple[int, int]]:
    values = report["values"]
    assert isinstance(values, list)
    return {(v["value"], v["missing"]): (v["distinct_messages"], v["records"]) for v in values}


def test_worked_example_end_to_end(grpc_channels: GrpcChannels) -> None:
    with running_service("--attribute-key", "foo", "--window", ONE_WINDOW) as service:
        grpc_channels.logs_stub(service.grpc_target).Export(worked_example_request(), timeout=10)
        assert service.stop() == 0
        [report] = service.all_reports()
    assert report["partial"] is True
    assert report["attribute_key"] == "foo"
    assert report["records"] == 5
    assert value_summary(report) == {
        ("baz", False): (2, 2),
        ("bar", False): (1, 1),
        ("qux", False): (1, 1),
        ("unknown", True): (1, 1),
    }
    assert [v["value"] for v in report["values"]] == ["baz", "bar", "qux", "unknown"]


def test_report_top_keeps_the_top_values_and_sums_up_the_rest(
    grpc_channels: GrpcChannels,
) -> None:
    argv = ("--attribute-key", "foo", "--window", ONE_WINDOW, "--report-top", "2")
    with running_service(*argv) as service:
        grpc_channels.logs_stub(service.grpc_target).Export(worked_example_request(), timeout=10)
        assert service.stop() == 0
        [report] = service.all_reports()
    # bar and qux tie on messages and records: the value decides.
    assert [v["value"] for v in report["values"]] == ["baz", "bar"]
    assert report["more_values"] == {"values": 2, "records": 2}
    assert report["records"] == 5


def test_windows_are_reported_as_they_close_with_metrics(
    grpc_channels: GrpcChannels,
) -> None:
    with running_service("--attribute-key", "foo", "--window", "1") as service:
        grpc_channels.logs_stub(service.grpc_target).Export(worked_example_request(), timeout=10)
        reports = service.reports_until(lambda r: r["records"] > 0 and not r["partial"])
        counted = sum(r["records"] for r in reports)
        if counted < 5:  # the request straddled a window boundary on the server's clock
            reports += service.reports_until(lambda r: r["records"] > 0)
        assert totals_by_value(reports) == {
            ("bar", False): 1,
            ("qux", False): 1,
            ("baz", False): 2,
            ("unknown", True): 1,
        }
        assert service.metric("otlp_stats_records_counted_total") == 5
        reported = service.metric("otlp_stats_windows_reported_total", {"partial": "false"})
        assert reported is not None
        assert reported >= len(reports)
        assert service.metric("otlp_stats_last_window_end_timestamp_seconds") is not None
        # The heartbeat: an empty window still prints.
        empty = service.next_report()
        assert empty["records"] == 0 and empty["values"] == []
        assert service.stop() == 0


def test_counts_match_an_independent_count_of_random_traffic(
    grpc_channels: GrpcChannels,
) -> None:
    rng = random.Random(7)
    expected: dict[tuple[str, bool], tuple[set[str], int]] = {}
    requests = []
    for _ in range(40):
        resource = rng.choice([None, "svc-a", "svc-b"])
        records = []
        for _ in range(rng.randint(1, 200)):
            own = rng.choice([None, None, "svc-a", "svc-c", ""])
            body = f"message {rng.randint(0, 300)}"
            attributes: dict[str, Plain] = {"noise": rng.randint(0, 9)}
            if own is not None:
                attributes["service.name"] = own
            records.append(log_record(body, **attributes))
            value = own if own is not None else resource
            key = ("unknown", True) if value is None else (value, False)
            bodies, count = expected.get(key, (set(), 0))
            expected[key] = (bodies | {body}, count + 1)
        requests.append(
            export_request(records, resource={"service.name": resource} if resource else {})
        )

    with running_service("--window", ONE_WINDOW, "--workers", "3") as service:
        stub = grpc_channels.logs_stub(service.grpc_target)
        futures = [stub.Export.future(request, timeout=30) for request in requests]
        for future in futures:
            future.result()
        assert service.stop() == 0
        [report] = service.all_reports()
    assert value_summary(report) == {k: (len(b), n) for k, (b, n) in expected.items()}
    assert report["records"] == sum(n for _, n in expected.values())


def test_full_queue_refuses_with_retry_info_and_every_acknowledged_record_is_counted(
    grpc_channels: GrpcChannels,
) -> None:
    big = export_request([log_record(f"body {n}", foo=f"v{n % 7}") for n in range(5000)])
    # The worker holds each request a while (tests.support.slowed_service), so that the queue fills
    # however fast this machine counts; 30 requests at once then find it full.
    with running_slowed_service(0.05, "--attribute-key=foo", queue_size=1) as service:
        stub = grpc_channels.logs_stub(service.grpc_target)
        futures = [stub.Export.future(big, timeout=60) for _ in range(30)]
        accepted = refused = 0
        for future in futures:
            try:
                future.result()
                accepted += 1
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                trailers = {datum.key for datum in error.trailing_metadata() or ()}
                assert RETRY_INFO_TRAILER in trailers and STATUS_DETAILS_TRAILER in trailers
                refused += 1
        assert accepted >= 1 and refused >= 1
        assert (
            service.metric(
                "otlp_stats_export_refused_total", {"transport": "grpc", "reason": "queue_requests"}
            )
            == refused
        )
        assert service.stop() == 0
        [report] = service.all_reports()
    assert report["records"] == 5000 * accepted
    assert {v["value"]: v["distinct_messages"] for v in report["values"]} == {
        f"v{n}": len(range(n, 5000, 7)) for n in range(7)
    }


def test_a_drain_cut_short_refuses_what_waits_rather_than_acknowledging_it(
    grpc_channels: GrpcChannels,
) -> None:
    # The worker holds each request 30 s, far past the 0.3 s grace.
    with running_slowed_service(30, "--attribute-key=foo", "--shutdown-grace=0.3") as service:
        stub = grpc_channels.logs_stub(service.grpc_target)
        futures = [stub.Export.future(worked_example_request(), timeout=60) for _ in range(2)]
        service.wait_metric("otlp_stats_queue_requests", 2)
        assert service.stop() == 1  # the drain timed out
        for future in futures:
            with pytest.raises(grpc.RpcError) as refused:
                future.result()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            trailers = {datum.key for datum in refused.value.trailing_metadata() or ()}
            assert RETRY_INFO_TRAILER in trailers
        [report] = service.all_reports()
    assert report["records"] == 0  # nothing acknowledged, nothing counted


def test_malformed_and_oversized_requests_are_refused_and_the_service_stays_up(
    grpc_channels: GrpcChannels,
) -> None:
    with running_service(
        "--attribute-key", "foo", "--window", ONE_WINDOW, "--max-recv-size", "2KiB"
    ) as service:
        channel = grpc_channels.open(service.grpc_target)
        export_raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EXPORT_METHOD)
        with pytest.raises(grpc.RpcError) as malformed:
            export_raw(b"\x0a\x05\x0a\x03", timeout=10)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as oversized:
            grpc_channels.logs_stub(service.grpc_target).Export(
                export_request([log_record("x" * 4096)]), timeout=10
            )
        assert oversized.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        grpc_channels.logs_stub(service.grpc_target).Export(ExportLogsServiceRequest(), timeout=10)
        grpc_channels.logs_stub(service.grpc_target).Export(worked_example_request(), timeout=10)
        assert service.stop() == 0
        [report] = service.all_reports()
    assert report["records"] == 5


def test_health_endpoints() -> None:
    with running_service() as service:
        assert service.http_get("/health") == (200, '{"status": "serving"}')
        assert service.http_get("/livez")[0] == 200
        assert service.http_get("/readyz") == (200, '{"status": "serving"}')
        assert service.http_get("/nope")[0] == 404
        assert service.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_prints_a_partial_final_report_and_exits_0(
    sig: int, grpc_channels: GrpcChannels
) -> None:
    request = export_request([log_record(f"body {n}", foo="a") for n in range(2000)])
    with running_service("--attribute-key", "foo", "--window", ONE_WINDOW) as service:
        stub = grpc_channels.logs_stub(service.grpc_target)
        for _ in range(10):
            stub.Export(request, timeout=30)
        assert service.stop(sig) == 0
        [report] = service.all_reports()
        service.wait_log("stopped")
    assert report["partial"] is True
    assert value_summary(report) == {("a", False): (2000, 20000)}


def test_exports_while_draining_are_refused_by_the_service_not_a_closed_port(
    grpc_channels: GrpcChannels,
) -> None:
    # The one worker sleeps HOLD seconds from the start before it takes anything, so the
    # request sent first keeps the service draining (port open) for seconds after SIGTERM.
    hold = 5
    with running_slowed_service(hold, "--shutdown-grace=30") as service:
        stub = grpc_channels.logs_stub(service.grpc_target)
        admitted = stub.Export.future(worked_example_request(), timeout=30)
        service.wait_metric("otlp_stats_queue_requests", 1)
        service.process.send_signal(signal.SIGTERM)
        service.wait_log("draining")
        with pytest.raises(grpc.RpcError) as late:
            stub.Export(worked_example_request(), timeout=5)
        assert late.value.code() == grpc.StatusCode.UNAVAILABLE
        trailers = {datum.key for datum in late.value.trailing_metadata() or ()}
        assert RETRY_INFO_TRAILER in trailers  # the service's answer: a closed port sends none
        # Still draining after the refusal: the admin port (closed last) says so.
        assert service.http_get("/readyz") == (503, '{"status": "draining"}')
        refused = {"transport": "grpc", "reason": "not_serving"}
        assert service.metric("otlp_stats_export_refused_total", refused) == 1
        admitted.result()  # what was admitted before the signal is still counted and answered
        assert service.process.wait(30) == 0
        [report] = service.all_reports()
    assert report["records"] == 5
