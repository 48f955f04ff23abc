"""The built image run with Debian's podman, and looked at from outside the container.

Every podman call goes through deploy/docker/image.sh, which holds the flags this machine needs
(vfs storage, runc, cgroupfs; host network and explicit ulimits for `run` and `build`). The
containers share the host's network, so each listens on free loopback ports of its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.support.deploytools import free_port
from tests.support.servicetools import REPO

IMAGE_SCRIPT = REPO / "deploy" / "docker" / "image.sh"
IMAGE = "localhost/otlp-stats:local"

PROMETHEUS_IMAGE = "localhost/otlp-stats-prometheus:local"
BUILD_TIMEOUT = 900.0
START_TIMEOUT = 60.0


def podman(
    *args: str, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(IMAGE_SCRIPT), "podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, (
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def global_flags() -> str:
    """podman's global flags from image.sh, for podman-compose, which calls podman itself."""
    return subprocess.run(
        [str(IMAGE_SCRIPT), "global-flags"], capture_output=True, text=True, check=True
    ).stdout.strip()


def engine_problem() -> str | None:
    """Why no container can run on this machine, or None when podman can run them."""
    if shutil.which("podman") is None:
        return "podman is not installed (`make image-deps` installs it, as root or with sudo)"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"podman cannot run here: {reason}"
    return None


def build_image(*target: str) -> float:
    """deploy/docker/image.sh build (or another of its targets); the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        [str(IMAGE_SCRIPT), *(target or ("build",))],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"image build failed:\n{result.stdout[-6000:]}\n{result.stderr}"
    return time.monotonic() - started


def inspect(name: str, template: str) -> Any:
    return json.loads(podman("inspect", name, "--format", "{{json " + template + "}}").stdout)


@dataclass
class Container:
    """One container of the image on free loopback ports."""

    name: str
    grpc_port: int
    http_port: int
    admin_port: int

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def http_get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def logs(self) -> tuple[str, str]:
        """What the container wrote to stdout (reports) and stderr (its JSON log lines)."""
        result = podman("logs", self.name)
        return result.stdout, result.stderr

    def reports(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs()[0].splitlines() if line.startswith("{")]

    def log_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs()[1].splitlines() if line.startswith("{")]

    def wait_for(self, what: str, found: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not found():
            assert time.monotonic() < deadline, f"{what} not within {timeout}s:\n{self.logs()}"
            time.sleep(0.1)

    def exec(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, check=check)

    def state(self) -> dict[str, Any]:
        found: dict[str, Any] = inspect(self.name, ".State")
        return found

    def stop(self, timeout: int = 30) -> int:
        """`podman stop` (SIGTERM, then SIGKILL after `timeout`); the exit code."""
        podman("stop", "--time", str(timeout), self.name, timeout=timeout + 30)
        code: int = self.state()["ExitCode"]
        return code

    def wait_exit(self, timeout: float = 60.0) -> int:
        podman("wait", self.name, timeout=timeout)
        code: int = self.state()["ExitCode"]
        return code


def run_container(
    *args: str,
    podman_flags: Sequence[str] = (),
    env: dict[str, str] | None = None,
    image: str = IMAGE,
) -> Container:
    """`podman run --detach` of the image, hardened as a cluster would run it: read-only root,
    no capabilities, no privilege escalation; its ports are moved to free loopback ports."""
    container = Container(
        f"otlp-stats-test-{uuid.uuid4().hex[:10]}", free_port(), free_port(), free_port()
    )
    listen = {
        "OTLP_STATS_GRPC_LISTEN": container.grpc_target,
        "OTLP_STATS_HTTP_LISTEN": f"127.0.0.1:{container.http_port}",
        "OTLP_STATS_ADMIN_LISTEN": f"127.0.0.1:{container.admin_port}",
    }
    environment = [f"--env={key}={value}" for key, value in {**listen, **(env or {})}.items()]
    podman(
        "run",
        "--detach",
        f"--name={container.name}",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        *environment,
        *podman_flags,
        image,
        *args,
    )
    return container


def remove(name: str) -> None:
    podman("rm", "--force", "--time", "0", name, check=False)


@contextmanager
def running_container(
    *args: str,
    podman_flags: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready: bool = True,
) -> Iterator[Container]:
    """A container, ready (`/readyz` 200) unless `ready=False`; removed on the way out."""
    container = run_container(*args, podman_flags=podman_flags, env=env)
    try:
        if ready:
            container.wait_for(
                "/readyz 200", lambda: _ready(container) or _exited(container), START_TIMEOUT
            )
            assert not _exited(container), f"the container exited:\n{container.logs()}"
        yield container
    finally:
        remove(container.name)


def _ready(container: Container) -> bool:
    try:
        return container.http_get("/readyz")[0] == 200
    except OSError:
        return False


def _exited(container: Container) -> bool:
    return container.state()["Status"] in ("exited", "stopped")


@contextmanager
def named_volume() -> Iterator[str]:
    name = f"otlp-stats-test-{uuid.uuid4().hex[:10]}"
    podman("volume", "create", name)
    try:
        yield name
    finally:
        podman("volume", "rm", "--force", name, check=False)
