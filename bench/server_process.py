"""A server under test as a child process: started, watched through its output, stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

from bench.proc_stats import ProcessTreeSample, resident_bytes, sample_process_tree


class ServerFailed(RuntimeError):
    """The server did not come up, or did not stop cleanly."""


@dataclass(frozen=True)
class StoppedServer:
    exit_code: int
    reports: list[dict[str, object]]

    @property
    def reported_records(self) -> int:
        return sum(_as_int(report.get("records")) for report in self.reports)

    @property
    def partial_reports(self) -> int:
        return sum(1 for report in self.reports if report.get("partial") is True)


class ServerProcess:
    """Runs `argv`; learns its ports from the `"event": "serving"` JSON line on stderr.

    Both pipes are drained by threads for the whole life of the process: a server whose
    stderr pipe fills up blocks in its logger, which would be measured as slowness.
    """

    def __init__(
        self, name: str, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.grpc_port = 0
        self.http_port: int | None = None
        self.admin_port: int | None = None
        self._process: subprocess.Popen[str] | None = None
        self._serving = threading.Event()
        self._stdout_lines: list[str] = []
        self._stderr_tail: deque[str] = deque(maxlen=40)
        self._readers: list[threading.Thread] = []

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self._running().pid

    def start(self, timeout: float = 30.0) -> None:
        process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._process = process
        # Popen with PIPE always sets both streams; the asserts tell mypy so.
        assert process.stdout is not None
        assert process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(process.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + timeout
        while not self._serving.wait(0.1):
            if process.poll() is not None or time.monotonic() >= deadline:
                self.kill()
                raise ServerFailed(f"{self.name} did not start serving: {self.stderr_tail()}")

    def sample(self) -> ProcessTreeSample:
        return sample_process_tree(self.pid)

    def resident_bytes(self) -> int:
        """VmRSS of the server process itself, now."""
        return resident_bytes(self.pid)

    def scrape_counter(self, sample_name: str) -> float | None:
        """Sum of a sample over all label sets on /metrics; None without an admin port."""
        if self.admin_port is None:
            return None
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode("utf-8")
        total = 0.0
        for family in text_string_to_metric_families(text):
            total += sum(sample.value for sample in family.samples if sample.name == sample_name)
        return total

    def stop(self, timeout: float = 30.0) -> StoppedServer:
        """SIGTERM, wait for the exit, and collect every JSON report line from stdout."""
        process = self._running()
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout)
        except subprocess.TimeoutExpired as error:
            self.kill()
            raise ServerFailed(f"{self.name} ignored SIGTERM for {timeout}s") from error
        for reader in self._readers:
            reader.join(timeout=5)
        return StoppedServer(exit_code, self._reports())

    def kill(self) -> None:
        """Idempotent last resort, so no run leaves a server behind."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stderr_tail(self) -> str:
        return " | ".join(self._stderr_tail)

    def _running(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise ServerFailed(f"{self.name} was never started")
        return self._process

    def _reports(self) -> list[dict[str, object]]:
        reports = []
        for line in self._stdout_lines:
            entry = _json_object(line)
            if entry is not None and entry.get("event") == "window_report":
                reports.append(entry)
        return reports

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            self._stdout_lines.append(line)

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr_tail.append(line.rstrip())
            if self._serving.is_set():
                continue
            entry = _json_object(line)
            if entry is not None and entry.get("event") == "serving":
                self.grpc_port = _as_int(entry.get("grpc_port"))
                http_port = entry.get("http_port")
                self.http_port = None if http_port is None else _as_int(http_port)
                admin_port = entry.get("admin_port")
                self.admin_port = None if admin_port is None else _as_int(admin_port)
                self._serving.set()


def _json_object(line: str) -> dict[str, object] | None:
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ServerFailed(f"expected a number, got {value!r}")
    return int(value)
