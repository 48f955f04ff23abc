"""The Kubernetes manifests: valid against the Kubernetes schemas (offline, kubernetes-validate),
and consistent with the service they deploy: settings it accepts, probe paths it answers,
ports it listens on, a grace period longer than its drain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from otlp_stats.config import load_settings
from tests.support.deploytools import KUBERNETES_DIR, load_yaml_documents, run_tool
from tests.support.servicetools import REPO, running_service

MANIFESTS = sorted(KUBERNETES_DIR.glob("*.yaml"))


def resource(kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        doc for path in MANIFESTS for doc in load_yaml_documents(path) if doc.get("kind") == kind
    ]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = resource("Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def configmap_settings(tmp_path: Path) -> Any:
    return load_settings([], environ=resource("ConfigMap")["data"], cwd=tmp_path)


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    assert {path.name for path in MANIFESTS} >= {
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
        "poddisruptionbudget.yaml",
    }
    # --strict: an unknown field (a misspelt probe setting) is an error, not ignored.
    run_tool("kubernetes-validate", "--strict", "--quiet", *map(str, MANIFESTS))


def test_configmap_is_a_configuration_the_service_accepts(tmp_path: Path) -> None:
    settings = configmap_settings(tmp_path)
    assert settings.report_format == "json" and settings.log_format == "json"
    env_from = container()["envFrom"]
    assert {"configMapRef": {"name": resource("ConfigMap")["metadata"]["name"]}} in env_from


def test_container_ports_are_the_listen_ports_and_the_service_exposes_them(
    tmp_path: Path,
) -> None:
    settings = configmap_settings(tmp_path)
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    assert ports == {
        "otlp-grpc": settings.grpc_listen.port,
        "otlp-http": settings.http_listen.port,
        "metrics": settings.admin_listen.port,
    }
    service_ports = {
        port["name"]: (port["port"], port["targetPort"])
        for port in resource("Service")["spec"]["ports"]
    }
    assert service_ports == {
        "otlp-grpc": (4317, "otlp-grpc"),
        "otlp-http": (4318, "otlp-http"),
        "metrics": (9464, "metrics"),
    }


def test_selectors_pick_the_deployments_pods() -> None:
    deployment = resource("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        resource("Service")["spec"]["selector"],
        resource("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()


def test_termination_grace_outlasts_prestop_and_the_drain(tmp_path: Path) -> None:
    pod = resource("Deployment")["spec"]["template"]["spec"]
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = configmap_settings(tmp_path).shutdown_grace
    # The service also waits up to a second for in-flight gRPC calls after the drain.
    assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain + 1 + 5


def test_resources_have_requests_and_limits() -> None:
    resources = container()["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}


def test_pod_runs_as_the_images_non_root_user_with_a_read_only_root() -> None:
    pod_security = resource("Deployment")["spec"]["template"]["spec"]["securityContext"]
    dockerfile_user = next(
        line.split()[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    )
    assert pod_security["runAsNonRoot"] is True
    assert f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}" == dockerfile_user
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False


def test_probes_are_answered_by_a_serving_service_on_the_metrics_port() -> None:
    probes = {
        name: container()[name]["httpGet"]
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert all(probe["port"] == "metrics" for probe in probes.values())
    # Liveness must not fail while draining (a drain would be killed); readiness must.
    assert probes["livenessProbe"]["path"] == "/health"
    assert probes["readinessProbe"]["path"] == "/readyz"
    with running_service() as service:
        for probe in probes.values():
            status, _ = service.http_get(probe["path"])
            assert status == 200, probe
        service.stop()
