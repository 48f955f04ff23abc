"""Run the real service as a subprocess on free loopback ports, and read what it prints."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
# A window so long that a test never straddles two: everything lands in the final report.
ONE_WINDOW = "1000000000"


@dataclass
class _Lines:
    """Lines a child writes to one stream, collected by a thread as they arrive."""

    stream: IO[str]
    lines: list[str] = field(default_factory=list)
    arrived: queue.Queue[str | None] = field(default_factory=queue.Queue)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for line in self.stream:
            self.lines.append(line.rstrip("\n"))
            self.arrived.put(line.rstrip("\n"))
        self.arrived.put(None)


class ServiceProcess:
    """`python -m otlp_stats` with JSON logs and reports, grpc, http and admin on port 0.

    `entry` replaces `-m otlp_stats` with another entry point taking the same flags.
    """

    def __init__(
        self,
        *flags: str,
        env: dict[str, str] | None = None,
        entry: Sequence[str] = ("-m", "otlp_stats"),
    ) -> None:
        command = [
            sys.executable,
            *entry,
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--report-format",
            "json",
            *flags,
        ]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.stdout = _Lines(self.process.stdout)
        self.stderr = _Lines(self.process.stderr)
        self.stdout.start()
        self.stderr.start()
        self.ports: dict[str, int] = {}
        self._reports_read = 0

    def wait_serving(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        serving = self.wait_log("serving", timeout)
        self.ports = {k: int(v) for k, v in serving.items() if k.endswith("_port")}
        return serving

    def wait_log(self, event: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """The next stderr JSON line whose event is `event` (earlier lines are searched too)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.stderr.lines[seen:]:
                seen += 1
                entry = _parse(line)
                if entry and entry.get("event") == event:
                    return entry
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} log within {timeout}s:\n" + self.stderr_text)
            try:
                if self.stderr.arrived.get(timeout=remaining) is None:
                    raise AssertionError(f"exited before {event!r}:\n" + self.stderr_text)
            except queue.Empty:
                continue

    @property
    def stderr_text(self) -> str:
        return "\n".join(self.stderr.lines)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['grpc_port']}"

    @property
    def http_url(self) -> str:
        """Base URL of the OTLP/HTTP port (append /v1/logs)."""
        return f"http://127.0.0.1:{self.ports['http_port']}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin_port']}"

    def next_report(self, timeout: float = 15.0) -> dict[str, Any]:
        """The next window report on stdout, in order, blocking until it is printed."""
        deadline = time.monotonic() + timeout
        while True:
            while self._reports_read < len(self.stdout.lines):
                line = self.stdout.lines[self._reports_read]
                self._reports_read += 1
                report: dict[str, Any] = json.loads(line)
                assert report["event"] == "window_report", line
                return report
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no window report within {timeout}s:\n" + self.stderr_text)
            try:
                if self.stdout.arrived.get(timeout=remaining) is None and (
                    self._reports_read >= len(self.stdout.lines)
                ):
                    raise AssertionError("stdout closed:\n" + self.stderr_text)
            except queue.Empty:
                continue

    def reports_until(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Reports in order up to and including the first one `predicate` accepts."""
        deadline = time.monotonic() + timeout
        reports = []
        while True:
            report = self.next_report(max(0.1, deadline - time.monotonic()))
            reports.append(report)
            if predicate(report):
                return reports

    def http_get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's value from /metrics, or None if the series is absent."""
        _, text = self.http_get("/metrics")
        return metric_value(text, name, labels or {})

    def wait_metric(self, name: str, at_least: float, timeout: float = 10.0) -> None:
        """Poll /metrics until `name` reaches `at_least`: a separate process's state has no
        event to wait on."""
        deadline = time.monotonic() + timeout
        while (self.metric(name) or 0.0) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not reach {at_least} within {timeout}s")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("service did not stop in time:\n" + self.stderr_text) from None

    def all_reports(self) -> list[dict[str, Any]]:
        """Every report printed; call after the process has exited."""
        self.process.wait(30)
        assert self.stdout.thread is not None
        self.stdout.thread.join(10)  # the pump ends at EOF, once every line is collected
        return [json.loads(line) for line in self.stdout.lines if line.strip()]


def metric_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def _parse(line: str) -> dict[str, Any] | None:
    try:
        entry: object = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


@contextmanager
def running_service(
    *flags: str,
    env: dict[str, str] | None = None,
    entry: Sequence[str] = ("-m", "otlp_stats"),
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(*flags, env=env, entry=entry)
    try:
        service.wait_serving()
        yield service
    finally:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()


def totals_by_value(reports: Sequence[dict[str, Any]]) -> dict[tuple[str, bool], int]:
    """Records per (value, missing) summed over reports."""
    totals: dict[tuple[str, bool], int] = {}
    for report in reports:
        for entry in report["values"]:
            key = (entry["value"], entry["missing"])
            totals[key] = totals.get(key, 0) + entry["records"]
    return totals
