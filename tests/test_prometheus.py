"""A real Prometheus (Debian's binary) scraping the real service on loopback, with the project's
own scrape job and alert rules: the series arrive with the values the service counted, the
rules evaluate against them (one really goes pending), and every dashboard query runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from otlp_stats.config import Settings
from otlp_stats.receiving.grpc_receiver import EXPORT_METHOD
from tests.support.deploytools import (
    DASHBOARD,
    PROMETHEUS_DIR,
    Prometheus,
    alert_rules,
    dashboard_queries,
    load_yaml,
    metric_names_in_exposition,
    promql_metric_names,
    running_prometheus,
)
from tests.support.fakes import export_request, log_record
from tests.support.servicetools import ServiceProcess, running_service

# Short enough that a report follows the request within seconds; scrapes every second see it.
WINDOW = "2"
# What Grafana's $__rate_interval becomes: ten 1 s scrapes.
RATE_INTERVAL = "10s"
JOB = 'job="otlp-stats"'


def scrape_config(admin_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, pointed at the test's service and scraping every second."""
    config: dict[str, Any] = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{admin_port}"]}]
    return config


def value(result: list[dict[str, Any]]) -> float:
    [sample] = result
    return float(sample["value"][1])


def equals(expected: float) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda result: len(result) == 1 and float(result[0]["value"][1]) == expected


def active_alerts(prometheus: Prometheus) -> set[tuple[str, str, str]]:
    return {
        (alert["labels"]["alertname"], alert["state"], alert["labels"].get("reason", ""))
        for alert in prometheus.alerts()
    }


def wait_for_alerts(
    prometheus: Prometheus, expected: set[tuple[str, str, str]], timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while (seen := active_alerts(prometheus)) != expected:
        assert time.monotonic() < deadline, f"alerts {seen}, expected {expected}"
        time.sleep(0.2)


def send_known_traffic(service: ServiceProcess, prometheus: Prometheus) -> float:
    """Two malformed Exports and 5 records; returns a time at which Prometheus had scraped the
    window report that counted the last 4.

    rate() cannot see a series' first sample, so one of each kind goes first and Prometheus is
    seen to have scraped it before the rest follow: every rate then has an increase to show.
    """
    with grpc.insecure_channel(service.grpc_target) as channel:
        export_raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EXPORT_METHOD)
        export = LogsServiceStub(channel).Export  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as malformed:
            export_raw(b"\x0a\x05\x0a\x03", timeout=10)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        warmup = export_request([log_record("warming up")], resource={"service.name": "warmup"})
        export(warmup, timeout=10)
        prometheus.wait_for(
            f'otlp_stats_export_refused_total{{{JOB}, reason="malformed"}}', equals(1)
        )
        prometheus.wait_for(
            f'otlp_stats_records_accepted_total{{{JOB}, transport="grpc"}}', equals(1)
        )
        with pytest.raises(grpc.RpcError):
            export_raw(b"\x0a\x05\x0a\x03", timeout=10)
        request = export_request(
            [
                log_record("order placed"),
                log_record("order placed"),
                log_record("payment declined"),
                log_record("user logged in", **{"service.name": "auth"}),
            ],
            resource={"service.name": "checkout"},
        )
        export(request, timeout=10)
    # The per-value gauges show the last reported window only, so they are present for one
    # window: take the time of a scrape that caught them and ask every question at that time.
    [sample] = prometheus.wait_for(
        f'otlp_stats_last_window_records{{{JOB}, value="checkout"}}', bool
    )
    at: float = sample["value"][0]
    return at


def assert_series_match_the_counts(prometheus: Prometheus, at: float) -> None:
    def at_time(expr: str) -> float:
        return value(prometheus.query(expr, at))

    assert at_time(f'otlp_stats_last_window_records{{{JOB}, value="checkout"}}') == 3
    assert at_time(f'otlp_stats_last_window_distinct_messages{{{JOB}, value="checkout"}}') == 2
    assert at_time(f'otlp_stats_last_window_records{{{JOB}, value="auth"}}') == 1
    assert at_time(f'otlp_stats_last_window_distinct_messages{{{JOB}, value="auth"}}') == 1
    assert at_time(f"otlp_stats_records_counted_total{{{JOB}}}") == 5
    assert at_time(f'otlp_stats_records_accepted_total{{{JOB}, transport="grpc"}}') == 5
    assert at_time(f'otlp_stats_export_requests_total{{{JOB}, transport="grpc"}}') == 4
    assert at_time(f'otlp_stats_export_refused_total{{{JOB}, reason="malformed"}}') == 2
    assert at_time(f"otlp_stats_records_failed_total{{{JOB}}}") == 0
    assert at_time(f'otlp_stats_health_state{{{JOB}, state="serving"}}') == 1
    assert at_time(f"otlp_stats_queue_capacity_requests{{{JOB}}}") == Settings().queue_size
    assert at_time(f'otlp_stats_windows_reported_total{{{JOB}, partial="false"}}') >= 1
    assert at_time(f"up{{{JOB}}}") == 1


def assert_dashboard_queries_run(prometheus: Prometheus, at: float, exported: set[str]) -> None:
    """Every panel's query is valid PromQL; those whose metrics exist return series."""
    dashboard = json.loads(DASHBOARD.read_text())
    empty = []
    for title, expr in dashboard_queries(dashboard):
        concrete = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$instance", ".+")
        result = prometheus.query(concrete, at)  # fails the test if Prometheus rejects it
        if promql_metric_names(expr) <= exported and not result:
            empty.append(f"{title}: {expr}")
    assert not empty, empty


def test_prometheus_scrapes_the_service_evaluates_the_rules_and_runs_the_dashboard(
    tmp_path: Path,
) -> None:
    # A sink besides stdout, so the sink panels and the sink alert have series to work on.
    sink = f"file://{tmp_path / 'reports.jsonl'}"
    with running_service(
        "--window", WINDOW, "--report-sink", "stdout", "--report-sink", sink
    ) as service:
        config = scrape_config(service.ports["admin_port"])
        with running_prometheus(config, tmp_path) as prometheus:
            # A few scrapes first, so rates have samples before the traffic arrives.
            prometheus.wait_for(f"count_over_time(up{{{JOB}}}[1m]) >= 3", bool)
            at = send_known_traffic(service, prometheus)
            assert_series_match_the_counts(prometheus, at)
            _, text = service.http_get("/metrics")
            assert_dashboard_queries_run(prometheus, at, metric_names_in_exposition(text))

            rules = [rule for group in prometheus.rules() for rule in group["rules"]]
            assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
            assert all(rule["health"] == "ok" for rule in rules), rules
            # The malformed Export makes one rule pending (it fires after 10 minutes); no other
            # rule is active while the service is healthy.
            wait_for_alerts(prometheus, {("OtlpStatsRejectingRequests", "pending", "malformed")})

            assert service.stop() == 0
            prometheus.wait_for(f"up{{{JOB}}}", equals(0))
            # Scrape down; the refusal rate still looks back 5 minutes, so it stays pending.
            wait_for_alerts(
                prometheus,
                {
                    ("OtlpStatsRejectingRequests", "pending", "malformed"),
                    ("OtlpStatsDown", "pending", ""),
                },
            )
