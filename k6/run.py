"""Run one k6 script against a fresh otlp-stats on loopback, then check what the service counted.

    python k6/run.py k6/load.js -e VUS=16 -e RECORDS_PER_REQUEST=1000
    python k6/run.py --target 127.0.0.1:4317 k6/smoke.js      # a service already running
    python k6/run.py --service-arg=--workers=4 k6/soak.js -e DURATION=10m

Without --target it starts `python -m otlp_stats` on free loopback ports (JSON reports to
<out-dir>/<name>-reports.jsonl, logs to <name>-service.log), points k6 at it with OTLP_TARGET,
stops it with SIGTERM and checks that the records its window reports add up to equal the
records k6 saw acknowledged. Arguments after the script go to `k6 run`. It prints a Markdown
table (request size, throughput, latency, server CPU and memory) and writes the same figures
to <name>-result.json. The exit status is k6's if k6 failed (99: a threshold was crossed),
else 1 if the counts disagree, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

DESCRIPTION = "Run one k6 script against a fresh otlp-stats on loopback and check its counts."
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    script: str
    k6_exit_code: int
    request_records: int | None
    request_bytes: int | None
    placement: str | None
    exports_ok: int
    export_error_rate: float
    requests_per_second: float
    records_per_second: float
    latency_ms: dict[str, float]
    duration_seconds: float
    server_cpu_seconds: float | None
    server_peak_rss_bytes: int | None
    records_sent: int
    records_reported: int | None
    service_exit_code: int | None = None
    k6_cpu_seconds: float | None = None

    @property
    def counts_agree(self) -> bool:
        return self.records_reported is None or self.records_reported == self.records_sent


class LocalService:
    """otlp-stats as a child process on free loopback ports, ports read from its serving log."""

    def __init__(self, out_dir: Path, name: str, extra_args: Sequence[str]) -> None:
        self.reports_path = out_dir / f"{name}-reports.jsonl"
        self.log_path = out_dir / f"{name}-service.log"
        command = [sys.executable, "-m", "otlp_stats", "--log-format", "json"]
        command += ["--report-format", "json"]
        for flag in ("--grpc-listen", "--http-listen", "--admin-listen"):
            command += [flag, "127.0.0.1:0"]
        with self.reports_path.open("w") as out, self.log_path.open("w") as err:
            self.process = subprocess.Popen([*command, *extra_args], stdout=out, stderr=err)
        self.grpc_port = self._wait_serving()["grpc_port"]

    def _wait_serving(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for entry in _json_lines(self.log_path):
                if entry.get("event") == "serving":
                    return entry
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.process.kill()
        raise SystemExit(f"otlp-stats did not start; see {self.log_path}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def peak_rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def records_reported(self) -> int:
        return sum(entry["records"] for entry in _json_lines(self.reports_path))


def _json_lines(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def k6_binary() -> str:
    beside = Path(sys.executable).parent / "k6"
    return str(beside) if beside.exists() else "k6"


def run_k6(script: Path, target: str, out_dir: Path, k6_args: Sequence[str]) -> tuple[int, float]:
    """k6's exit code and the CPU seconds it used (it shares the machine with the service)."""
    name = script.stem
    command = [
        k6_binary(),
        "run",
        "--no-usage-report",
        # k6's REST API is not needed; port 0 keeps parallel runs from colliding on 6565.
        "--address",
        "127.0.0.1:0",
        "--summary-export",
        str(out_dir / f"{name}-summary.json"),
        "--log-format",
        "json",
        "--log-output",
        f"file={out_dir / f'{name}-k6.log'}",
        *k6_args,
        str(script),
    ]
    env = {**os.environ, "OTLP_TARGET": target, "K6_NO_USAGE_REPORT": "true"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    exit_code = subprocess.run(command, env=env, check=False).returncode
    # The service is a child too, but not yet reaped: only k6 is in this difference.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return exit_code, cpu


def sent_request(k6_log: Path) -> tuple[int | None, int | None, str | None]:
    """Records, protobuf bytes and placement of the request the script logged in setup()."""
    for entry in _json_lines(k6_log):
        if entry.get("source") != "console":
            continue
        try:
            logged = json.loads(entry.get("msg", ""))
        except ValueError:
            continue
        if isinstance(logged, dict) and "otlp_request" in logged:
            request = json_format.ParseDict(logged["otlp_request"], ExportLogsServiceRequest())
            return logged.get("records"), request.ByteSize(), logged.get("placement")
    return None, None, None


def print_problems(k6_log: Path) -> None:
    for entry in _json_lines(k6_log):
        if entry.get("level") in ("warning", "error", "fatal"):
            print(f"k6 {entry['level']}: {entry.get('msg')}", file=sys.stderr)


def summarize(script: Path, out_dir: Path, exit_code: int, elapsed: float) -> Result:
    summary = out_dir / f"{script.stem}-summary.json"
    if not summary.exists():
        raise SystemExit(f"k6 exited {exit_code} without a summary")
    metrics = json.loads(summary.read_text())["metrics"]
    records, size, placement = sent_request(out_dir / f"{script.stem}-k6.log")
    durations = metrics.get("grpc_req_duration", {})
    errors = metrics.get("otlp_export_errors", {})
    sent = metrics.get("otlp_records_sent", {})
    return Result(
        script=str(script),
        k6_exit_code=exit_code,
        request_records=records,
        request_bytes=size,
        placement=placement,
        # k6's Rate counts true values as passes: a pass here is a failed Export.
        exports_ok=int(errors.get("fails", 0)),
        export_error_rate=float(errors.get("value", 0.0)),
        # Each iteration of these scripts is one Export (k6 has no gRPC request counter).
        requests_per_second=float(metrics.get("iterations", {}).get("rate", 0.0)),
        records_per_second=float(sent.get("rate", 0.0)),
        latency_ms={k: float(v) for k, v in durations.items() if isinstance(v, int | float)},
        duration_seconds=elapsed,
        server_cpu_seconds=None,
        server_peak_rss_bytes=None,
        records_sent=int(sent.get("count", 0)),
        records_reported=None,
    )


def markdown(result: Result) -> str:
    latency = result.latency_ms
    rows = [
        ("Script", f"`{result.script}`"),
        ("Request", _request_text(result)),
        ("Exports OK", f"{result.exports_ok:,} (error rate {result.export_error_rate:.2%})"),
        ("Throughput", f"{result.requests_per_second:,.1f} Exports/s"),
        ("Records", f"{result.records_per_second:,.0f} records/s"),
        (
            "Export latency, ms",
            ", ".join(
                f"{k} {latency[k]:.1f}"
                for k in ("avg", "med", "p(95)", "p(99)", "max")
                if k in latency
            ),
        ),
    ]
    if result.server_cpu_seconds is not None:
        cores = result.server_cpu_seconds / result.duration_seconds
        per_record = result.server_cpu_seconds / max(1, result.records_sent) * 1e6
        rows.append(
            (
                "Server CPU",
                f"{result.server_cpu_seconds:.1f} s over {result.duration_seconds:.0f} s "
                f"({cores:.2f} cores), {per_record:.2f} µs/record",
            )
        )
    if result.k6_cpu_seconds is not None:
        cores = result.k6_cpu_seconds / result.duration_seconds
        rows.append(("k6 CPU", f"{result.k6_cpu_seconds:.1f} s ({cores:.2f} cores)"))
    if result.server_peak_rss_bytes:
        rows.append(("Server peak RSS", f"{result.server_peak_rss_bytes / 1e6:.0f} MB"))
    if result.service_exit_code is not None:
        rows.append(("Service exit code", f"{result.service_exit_code} after SIGTERM"))
    if result.records_reported is not None:
        verdict = "equal" if result.counts_agree else "DIFFERENT"
        rows.append(
            (
                "Counts",
                f"reported {result.records_reported:,}, k6 acknowledged "
                f"{result.records_sent:,}: {verdict}",
            )
        )
    lines = ["| Figure | Value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join(lines)


def _request_text(result: Result) -> str:
    if result.request_bytes is None:
        return "as in the script"
    return (
        f"{result.request_records} records, attribute on the {result.placement}, "
        f"{result.request_bytes:,} bytes of protobuf"
    )


def measure(args: argparse.Namespace, service: LocalService | None) -> Result:
    target = args.target or f"127.0.0.1:{service.grpc_port if service else 0}"
    cpu_before = service.cpu_seconds() if service else 0.0
    started = time.monotonic()
    exit_code, k6_cpu = run_k6(args.script, target, args.out_dir, args.k6_args)
    elapsed = time.monotonic() - started
    print_problems(args.out_dir / f"{args.script.stem}-k6.log")
    result = summarize(args.script, args.out_dir, exit_code, elapsed)
    result.k6_cpu_seconds = k6_cpu
    if service:
        result.server_cpu_seconds = service.cpu_seconds() - cpu_before
        result.server_peak_rss_bytes = service.peak_rss_bytes()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--target", help="host:port of a running service (default: start one)")
    parser.add_argument(
        "--service-arg", action="append", default=[], help="flag for the started service"
    )
    parser.add_argument("--out-dir", type=Path, default=REPO / "build" / "k6")
    parser.add_argument("script", type=Path)
    parser.add_argument("k6_args", nargs=argparse.REMAINDER, help="passed to `k6 run`")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    service = None
    if not args.target:
        service = LocalService(args.out_dir, args.script.stem, args.service_arg)
    try:
        result = measure(args, service)
    finally:
        service_exit_code = service.stop() if service else None
    if service:
        result.service_exit_code = service_exit_code
        result.records_reported = service.records_reported()
    (args.out_dir / f"{args.script.stem}-result.json").write_text(
        json.dumps({**asdict(result), "counts_agree": result.counts_agree}, indent=2) + "\n"
    )
    print(markdown(result))
    if result.k6_exit_code != 0:
        return result.k6_exit_code
    return 0 if result.counts_agree and not service_exit_code else 1


if __name__ == "__main__":
    sys.exit(main())
