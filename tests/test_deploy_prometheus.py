"""The Prometheus scrape config and alert rules, checked and unit-tested with promtool."""

from __future__ import annotations

from tests.support.deploytools import (
    PROMETHEUS_DIR,
    alert_rules,
    exported_metric_names,
    load_yaml,
    promql_metric_names,
    run_tool,
)
from tests.support.servicetools import REPO

# The metric Prometheus itself writes for every target.
PROMETHEUS_SERIES = {"up"}


def test_scrape_config_and_the_rules_it_loads_pass_promtool_check() -> None:
    result = run_tool("promtool", "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert "1 rule files found" in result.stdout
    run_tool("promtool", "check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))


def test_alert_rules_pass_their_unit_tests() -> None:
    run_tool("promtool", "test", "rules", "alerts.test.yml", cwd=PROMETHEUS_DIR)


def test_the_alerts_operators_asked_for_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "OtlpStatsThrottling",  # refusals / throttling
        "OtlpStatsQueueNearFull",
        "OtlpStatsNoWindowReport",
        "OtlpStatsDown",  # scrape down
    } <= names


def test_every_alert_has_a_unit_test_a_severity_and_a_runbook_entry() -> None:
    tested = {
        case["alertname"]
        for test in load_yaml(PROMETHEUS_DIR / "alerts.test.yml")["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    operations = (REPO / "docs" / "operations.md").read_text()
    for rule in alert_rules():
        assert rule["alert"] in tested, f"{rule['alert']} is never shown firing in a unit test"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert f"### {rule['alert']}" in operations, f"docs/operations.md lacks {rule['alert']}"


def test_alert_rules_name_only_metrics_the_service_exports() -> None:
    known = exported_metric_names() | PROMETHEUS_SERIES
    unknown = {
        f"{rule['alert']}: {name}"
        for rule in alert_rules()
        for name in promql_metric_names(rule["expr"])
        if name not in known
    }
    assert not unknown, sorted(unknown)
