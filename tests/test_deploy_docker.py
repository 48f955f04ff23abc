"""The container image, checked without a Docker engine: hadolint, the build context, and the
image's own entry point, environment and HEALTHCHECK run here as the image would run them."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from otlp_stats.config import Settings, load_settings
from tests.support.deploytools import (
    DOCKERFILE,
    Instruction,
    dockerfile_stages,
    exec_form,
    image_environment,
    run_tool,
)
from tests.support.servicetools import REPO, running_service


def final_stage() -> list[Instruction]:
    return dockerfile_stages(DOCKERFILE)[-1]


def instructions(keyword: str, stage: list[Instruction] | None = None) -> list[Instruction]:
    return [i for i in (final_stage() if stage is None else stage) if i.keyword == keyword]


def image_file(path_in_image: str) -> Path:
    """The repository file that a COPY of the final stage puts at this path in the image."""
    for copy in instructions("COPY"):
        if copy.arguments.startswith("--from"):
            continue
        source, destination = copy.arguments.split()
        if destination == path_in_image:
            return REPO / source
    raise AssertionError(f"nothing in the final stage copies {path_in_image}")


def test_dockerfile_passes_hadolint() -> None:
    run_tool("hadolint", str(DOCKERFILE))


def test_image_is_multi_stage_and_runs_as_a_numeric_non_root_user() -> None:
    stages = dockerfile_stages(DOCKERFILE)
    assert len(stages) >= 2
    [user] = instructions("USER")
    uid = user.arguments.split(":")[0]
    # Numeric, so Kubernetes can enforce runAsNonRoot without reading the image's passwd.
    assert uid.isdigit() and int(uid) != 0
    assert instructions("FROM")[0].arguments.endswith("AS runtime")


def test_image_exposes_the_three_default_ports() -> None:
    exposed = {int(port) for e in instructions("EXPOSE") for port in e.arguments.split()}
    defaults = Settings()
    ports = {defaults.grpc_listen.port, defaults.http_listen.port, defaults.admin_listen.port}
    assert exposed == ports == {4317, 4318, 9464}


def test_image_environment_is_a_valid_configuration(tmp_path: Path) -> None:
    settings = load_settings([], environ=image_environment(), cwd=tmp_path)
    assert settings.grpc_listen.host == settings.admin_listen.host == "0.0.0.0"
    assert settings.log_format == "json"


def dockerignore_exceptions() -> list[str]:
    """The paths `.dockerignore` lets back in after excluding everything with `*`."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


def test_dockerignore_lets_every_copied_path_into_the_context() -> None:
    for stage in dockerfile_stages(DOCKERFILE):
        for copy in instructions("COPY", stage):
            if copy.arguments.startswith("--from"):
                continue
            *sources, _ = copy.arguments.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source in dockerignore_exceptions(), f".dockerignore excludes {source}"


def test_build_context_holds_everything_the_wheel_is_built_from(tmp_path: Path) -> None:
    """Build the wheel from exactly what the build stage copies, as `pip install` there does."""
    build_stage = dockerfile_stages(DOCKERFILE)[0]
    context = tmp_path / "src"
    context.mkdir()
    for copy in instructions("COPY", build_stage):
        *sources, destination = copy.arguments.split()
        for source in sources:
            target = context / destination
            if destination.endswith("/"):
                target = target / Path(source).name
            if (REPO / source).is_dir():
                skip = shutil.ignore_patterns("__pycache__", "_generated", "*.so")
                shutil.copytree(REPO / source, target, ignore=skip)
            else:
                shutil.copy(REPO / source, target)
    built_wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert built_wheel.returncode == 0, built_wheel.stderr
    [wheel] = tmp_path.glob("otlp_stats-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    # Every module of the built tree, the ones setup.py generates from proto/ included, must be
    # in the wheel: the image has nothing else to import from.
    built = {
        path.relative_to(context).as_posix()
        for path in (context / "otlp_stats").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    if any((REPO / "proto").rglob("*.proto")):
        assert any(name.startswith("otlp_stats/_generated/") for name in built)
    missing = sorted(built - shipped)
    assert not missing, f"the image would lack these modules of the built tree: {missing}"
    assert "otlp_stats/py.typed" in shipped
    # The C wire scanner is compiled from the copied sources, not carried in from a checkout.
    assert any(
        name.startswith("otlp_stats/counting/_wire.") and name.endswith(".so") for name in shipped
    )


def run_healthcheck(admin_port: int) -> int:
    [healthcheck] = instructions("HEALTHCHECK")
    command = exec_form(healthcheck)
    assert command[0] == "python"
    script = image_file(command[1])
    env = {**image_environment(), "OTLP_STATS_ADMIN_LISTEN": f"0.0.0.0:{admin_port}"}
    return subprocess.run(
        [sys.executable, str(script), *command[2:]], env=env, capture_output=True, timeout=30
    ).returncode


def test_entry_point_with_the_image_environment_serves_passes_healthcheck_and_drains() -> None:
    [entrypoint] = instructions("ENTRYPOINT")
    [program] = exec_form(entrypoint)
    [stopsignal] = instructions("STOPSIGNAL")
    assert stopsignal.arguments == "SIGTERM"
    console_script = shutil.which(program, path=image_environment()["PATH"])
    assert console_script is not None, f"{program} is not installed in the environment"
    # Same program and environment as the image; only the listen addresses are moved to free
    # loopback ports (servicetools passes them as flags, which win over the environment).
    with running_service(entry=(console_script,), env=image_environment()) as service:
        admin_port = service.ports["admin_port"]
        assert run_healthcheck(admin_port) == 0
        status, _ = service.http_get("/readyz")
        assert status == 200
        assert service.stop() == 0
    assert run_healthcheck(admin_port) != 0


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("0.0.0.0:9464", "http://127.0.0.1:9464/health"),
        ("[::]:9464", "http://[::1]:9464/health"),
        ("10.1.2.3:19464", "http://10.1.2.3:19464/health"),
    ],
)
def test_healthcheck_probes_the_configured_admin_address(listen: str, url: str) -> None:
    script = image_file("/opt/otlp-stats/healthcheck.py")
    spec = importlib.util.spec_from_file_location("healthcheck", script)
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    assert healthcheck.health_url(listen) == url
