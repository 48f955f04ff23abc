"""The Grafana dashboard: every panel's query names only metrics the real service exports, and
the board shows what operators asked for. (tests/test_prometheus.py runs every query against a
real Prometheus scraping the service.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.deploytools import (
    DASHBOARD,
    dashboard_queries,
    exported_metric_names,
    metric_names_in_exposition,
    promql_metric_names,
)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le, transport) (rate(a_bucket{job="x", le!="+Inf"}[$__rate_interval]))',
            {"a_bucket"},
        ),
        ("histogram_quantile(0.99, sum(rate(b_bucket[5m])) by (le))", {"b_bucket"}),
        ("topk(15, c) or vector(0)", {"c"}),
        (
            'time() - max(d{instance=~"$instance"}) > bool 30 unless on (job) e offset 5m',
            {"d", "e"},
        ),
        ('label_replace(f / g, "limit", "bytes", "", "")', {"f", "g"}),
    ],
)
def test_promql_metric_names_finds_selectors_not_functions_labels_or_keywords(
    expr: str, names: set[str]
) -> None:
    assert promql_metric_names(expr) == names


def test_exposition_names_include_counter_and_histogram_series_without_samples() -> None:
    text = (
        "# HELP x_total Things.\n# TYPE x_total counter\n"
        "# HELP h Latency.\n# TYPE h histogram\n"
        'h_bucket{le="+Inf"} 0\nh_sum 0\nh_count 0\n'
    )
    assert {"x_total", "h_bucket", "h_sum", "h_count"} <= metric_names_in_exposition(text)


def test_every_panel_query_names_only_metrics_the_service_exports() -> None:
    exported = exported_metric_names()
    unknown = {
        f"{title}: {name}"
        for title, expr in dashboard_queries(dashboard())
        for name in promql_metric_names(expr)
        if name not in exported
    }
    assert not unknown, f"panels query metrics /metrics does not have: {sorted(unknown)}"


def test_every_panel_has_a_query_naming_a_metric() -> None:
    for panel in panels():
        exprs = [target["expr"] for target in panel["targets"]]
        assert exprs, panel["title"]
        assert all(promql_metric_names(expr) for expr in exprs), panel["title"]


def test_board_shows_what_operators_asked_for() -> None:
    queried = {
        name for _, expr in dashboard_queries(dashboard()) for name in promql_metric_names(expr)
    }
    wanted = {
        "ingest records/s": "otlp_stats_records_accepted_total",
        "refusals by reason": "otlp_stats_export_refused_total",
        "queue depth": "otlp_stats_queue_requests",
        "export latency": "otlp_stats_export_duration_seconds_bucket",
        "windows reported": "otlp_stats_windows_reported_total",
        "distinct messages per top value": "otlp_stats_last_window_distinct_messages",
        "CPU": "process_cpu_seconds_total",
        "RSS": "process_resident_memory_bytes",
    }
    assert {what for what, metric in wanted.items() if metric not in queried} == set()
    latency = [
        expr for _, expr in dashboard_queries(dashboard()) if "export_duration_seconds" in expr
    ]
    assert any("histogram_quantile(0.5," in expr for expr in latency)
    assert any("histogram_quantile(0.99," in expr for expr in latency)


def test_every_store_metric_the_service_exports_has_a_panel() -> None:
    queried = {
        name for _, expr in dashboard_queries(dashboard()) for name in promql_metric_names(expr)
    }
    store = {
        name
        for name in exported_metric_names()
        if name.startswith(("otlp_stats_store_", "otlp_stats_scoped_"))
        and not name.endswith("_created")
    }
    counters = {name.removesuffix("_total") for name in store if name.endswith("_total")}
    assert "otlp_stats_store_reachable" in store  # the replica metrics were exported
    assert sorted(store - counters - queried) == []


def test_panels_use_the_datasource_variable_have_unique_ids_and_fit_the_grid() -> None:
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        position = panel["gridPos"]
        assert position["x"] >= 0 and position["x"] + position["w"] <= 24, panel["title"]
    assert board["uid"] == "otlp-stats"
