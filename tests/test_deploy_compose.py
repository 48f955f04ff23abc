"""docker-compose.yml and Grafana's provisioning, checked without a Docker engine: the Compose
specification's schema (offline, check-jsonschema), and the wiring between the files that
makes `docker compose up` give a working board with no clicking."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from otlp_stats.config import load_settings
from tests.support.deploytools import (
    DASHBOARD,
    PROMETHEUS_DIR,
    image_environment,
    load_yaml,
    run_tool,
)
from tests.support.servicetools import REPO

COMPOSE = REPO / "docker-compose.yml"
GRAFANA = REPO / "deploy" / "grafana"


def services() -> dict[str, Any]:
    found: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return found


def mounts(service: str) -> dict[str, Path]:
    """Container path -> repository path, for the service's bind mounts of repository files."""
    found = {}
    for volume in services()[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = REPO / source
    return found


def test_compose_file_matches_the_compose_specification() -> None:
    run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE))


def test_stack_is_the_service_prometheus_and_grafana_built_from_this_repository() -> None:
    profiled = {name for name, service in services().items() if service.get("profiles")}
    assert set(services()) - profiled == {"otlp-stats", "prometheus", "grafana"}
    assert profiled == {"redis", "otlp-stats-replica"}
    build = services()["otlp-stats"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile"


def interpolated(environment: dict[str, str], shell: dict[str, str]) -> dict[str, str]:
    """Compose's `${NAME:-default}`, from `shell` or else the default."""
    return {
        key: re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: shell.get(m.group(1), m.group(2)), value)
        for key, value in environment.items()
    }


def test_service_environment_is_a_configuration_the_service_accepts(tmp_path: Path) -> None:
    environment = {
        **image_environment(),
        **interpolated(services()["otlp-stats"]["environment"], {}),
    }
    settings = load_settings([], environ=environment, cwd=tmp_path)
    grace = services()["otlp-stats"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > settings.shutdown_grace


def test_redis_profile_makes_three_replicas_of_one_redis(tmp_path: Path) -> None:
    shell = {"OTLP_STATS_STORE": "redis://redis:6379/0"}
    main = interpolated(services()["otlp-stats"]["environment"], shell)
    replica = services()["otlp-stats-replica"]
    for environment in (main, replica["environment"]):
        settings = load_settings([], environ={**image_environment(), **environment}, cwd=tmp_path)
        assert settings.store == "redis://redis:6379/0"
    assert replica["deploy"]["replicas"] + 1 == 3
    assert services()["redis"]["profiles"] == ["redis"]


def test_every_bind_mount_exists() -> None:
    for service in services():
        for target, source in mounts(service).items():
            assert source.exists(), f"{service} mounts missing {source} at {target}"


def test_prometheus_scrapes_the_service_admin_port_with_the_alert_rules(tmp_path: Path) -> None:
    config_dir = mounts("prometheus")["/etc/prometheus"]
    assert config_dir.resolve() == PROMETHEUS_DIR
    config = load_yaml(config_dir / "prometheus.yml")
    assert (config_dir / config["rule_files"][0]).exists()
    [job] = config["scrape_configs"]
    assert job["job_name"] == "otlp-stats"  # the alert rules and dashboard select this job
    [target] = job["static_configs"][0]["targets"]
    admin = load_settings([], environ=image_environment(), cwd=tmp_path).admin_listen
    assert target == f"otlp-stats:{admin.port}"


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard() -> None:
    grafana_mounts = mounts("grafana")
    provisioning = grafana_mounts["/etc/grafana/provisioning"]
    [datasource] = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True

    [provider] = load_yaml(provisioning / "dashboards" / "otlp-stats.yml")["providers"]
    dashboards_dir = grafana_mounts[provider["options"]["path"]]
    assert (dashboards_dir / DASHBOARD.name).resolve() == DASHBOARD

    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    home_dir, _, home_file = home.rpartition("/")
    assert (grafana_mounts[home_dir] / home_file).resolve() == DASHBOARD
