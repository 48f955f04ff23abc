"""docker-compose.yml run for real with podman-compose: the service and Prometheus (from
Debian's package), on the compose network and the ports the file publishes. Prometheus finds
the service by its compose name, scrapes its metrics and loads the alert rules. Grafana has no
Debian package here; tests/test_deploy_compose.py checks its provisioning."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.containertools import build_image, global_flags
from tests.support.deploytools import alert_rules
from tests.support.servicetools import REPO

pytestmark = pytest.mark.timeout(900)

PROMETHEUS = "http://127.0.0.1:9090"
PUBLISHED = (4317, 4318, 9464, 9090)
COMPOSE_FILES = ("docker-compose.yml", "deploy/docker/compose.podman.yml")


def compose(project: str, *args: str) -> subprocess.CompletedProcess[str]:
    files = [flag for name in COMPOSE_FILES for flag in ("-f", name)]
    command = [
        str(Path(sys.executable).parent / "podman-compose"),
        f"--podman-args={global_flags()}",
        "-p",
        project,
        *files,
        *args,
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(image_built: float) -> Iterator[str]:
    build_image("prometheus")
    taken = [port for port in PUBLISHED if port_taken(port)]
    assert not taken, f"docker-compose.yml publishes ports already in use here: {taken}"
    project = f"otlpstatstest{uuid.uuid4().hex[:8]}"
    try:
        up = compose(project, "up", "--detach", "--no-build")
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        yield project
    finally:
        compose(project, "down", "--volumes")


def prometheus_api(path: str, **params: str) -> Any:
    url = f"{PROMETHEUS}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def wait_for_query(expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """An instant query's result once it is not empty (the scrape interval is 15 s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result: list[dict[str, Any]] = prometheus_api("query", query=expr)["result"]
            if result:
                return result
        except (urllib.error.URLError, OSError):
            pass  # Prometheus still starting
        assert time.monotonic() < deadline, f"{expr} had no result within {timeout}s"
        time.sleep(0.5)


def test_prometheus_scrapes_the_service_by_its_compose_name(stack: str) -> None:
    [up] = wait_for_query('up{job="otlp-stats"} == 1')
    assert up["metric"]["instance"] == "otlp-stats:9464"
    [queue] = wait_for_query('otlp_stats_queue_requests{job="otlp-stats"}')
    assert queue["value"][1] == "0"


def test_prometheus_loads_every_alert_rule(stack: str) -> None:
    wait_for_query("up")
    groups = prometheus_api("rules")["groups"]
    loaded = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    shipped = {rule["alert"] for rule in alert_rules()}
    assert shipped <= set(loaded), shipped - set(loaded)
    assert {loaded[name] for name in shipped} <= {"ok", "unknown"}
