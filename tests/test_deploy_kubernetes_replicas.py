"""The Kubernetes variant with three replicas sharing a Redis StatefulSet: valid manifests, a
configuration the service accepts, and a store URL that names the Redis Service and port."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from otlp_stats.config import load_settings
from tests.support.deploytools import KUBERNETES_DIR, load_yaml_documents, run_tool

REPLICAS_DIR = KUBERNETES_DIR / "replicas"
MANIFESTS = sorted(REPLICAS_DIR.glob("*.yaml"))


def resources(kind: str) -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in load_yaml_documents(path) if doc["kind"] == kind]


def by_name(kind: str, name: str) -> dict[str, Any]:
    [found] = [doc for doc in resources(kind) if doc["metadata"]["name"] == name]
    return found


def test_replica_manifests_validate_against_the_kubernetes_schemas() -> None:
    run_tool("kubernetes-validate", "--strict", "--quiet", *map(str, MANIFESTS))


def test_three_replicas_share_the_redis_statefulset(tmp_path: Path) -> None:
    replicas = by_name("StatefulSet", "otlp-stats")
    assert replicas["spec"]["replicas"] == 3
    # Stable pod names: a replaced replica replays the journal kept under its name.
    assert by_name("Service", replicas["spec"]["serviceName"])
    [container] = replicas["spec"]["template"]["spec"]["containers"]
    [config_ref] = container["envFrom"]
    config = by_name("ConfigMap", config_ref["configMapRef"]["name"])
    settings = load_settings([], environ=config["data"], cwd=tmp_path)
    store = urlparse(settings.store)
    assert store.scheme == "redis"

    statefulset = by_name("StatefulSet", "otlp-stats-redis")
    redis_service = by_name("Service", statefulset["spec"]["serviceName"])
    assert store.hostname == redis_service["metadata"]["name"]
    assert store.port == redis_service["spec"]["ports"][0]["port"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert redis_service["spec"]["selector"].items() <= labels.items()
    # Each replica names itself after its pod in the global reports.
    [replica_id] = [env for env in container["env"] if env["name"] == "OTLP_STATS_REPLICA_ID"]
    assert replica_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
