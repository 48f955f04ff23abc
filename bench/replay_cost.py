"""Replay's cost (issue 16): `otlp-stats replay` run for real, its CPU read from the kernel.

Each figure is the CPU of a replay process (user + system, from getrusage of the child) less
that of the same command on an empty input (interpreter start and imports), per record:

- protobuf: the reference workload's requests as a `format: proto` file;
- OTLP/JSON: the same requests as a `format: json` file, against `orjson.loads` of the same
  lines alone, in-process;
- JSON frames: 1,000,000 `{"ts", "uid", "service"}` lines, uids from 100,000, over 17 minutes;
- memory: the peak RSS of a two-year replay (one record a minute, 1,051,200 records, zstd
  proto, 10 s windows) into SQLite with the default rollups.

`python -m bench.replay_cost` prints the figures alone.
"""

from __future__ import annotations

import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from otlp_stats.loadgen import PreparedRequest, Workload, build_requests
from otlp_stats.receiving.otlp_json import encode_json_request

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

FRAMES = 1_000_000
# Enough passes over the reference requests for a couple of CPU seconds per replay.
_TARGET_RECORDS = 400_000
_REPLAY = [sys.executable, "-m", "otlp_stats", "replay", "--report-format", "json"]


@dataclass(frozen=True)
class ReplayCost:
    protobuf_us: float
    json_us: float
    orjson_us: float
    frames_per_second: float
    two_year_records: int
    two_year_peak_mb: float
    two_year_seconds: float


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _replay_cpu(argv: Sequence[str], path: Path | None = None) -> float:
    before = _child_cpu()
    subprocess.run(
        [*_REPLAY, *argv, *([str(path)] if path else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        check=True,
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
    )
    return _child_cpu() - before


def _per_record_us(argv: Sequence[str], path: Path, empty: Path, records: int) -> float:
    """Median of three replays, less the empty input's start-up, in µs per record."""
    start = min(_replay_cpu(argv, empty) for _ in range(2))
    runs = sorted(_replay_cpu(argv, path) - start for _ in range(3))
    return runs[1] / records * 1e6


def _write_proto(path: Path, payloads: Sequence[bytes]) -> None:
    with path.open("wb") as out:
        for wire in payloads:
            out.write(struct.pack(">I", len(wire)) + wire)


def _orjson_us(lines: Sequence[bytes], records: int) -> float:
    samples = []
    for _ in range(3):
        started = time.process_time()
        for line in lines:
            orjson.loads(line)
        samples.append((time.process_time() - started) / records * 1e6)
    return sorted(samples)[1]


def _frames(path: Path) -> None:
    rng = random.Random(16)
    start = 1_468_244_384
    services = (b"web", b"api", b"worker")
    with path.open("wb") as out:
        # Formatted by hand, not orjson.dumps: each of its results keeps about 4 KiB.
        for i in range(FRAMES):
            ts = start + i * 1020 // FRAMES - rng.randint(0, 5)
            uid = f"{rng.randrange(100_000):05x}".encode()
            service = services[rng.randrange(3)]
            out.write(b'{"ts":%d,"uid":"%s","service":"%s"}\n' % (ts, uid, service))


def _two_years(path: Path) -> int:
    """One record a minute for 730 days ending now, 4 services, zstd proto, 60 per request."""
    rng = random.Random(730)
    last = time.time() // 86_400 * 86_400
    first = last - 730 * 86_400
    services = ("checkout", "search", "auth", "billing")
    records = 0
    with zstd.ZstdFile(path, mode="wb") as out:
        hour = first
        while hour < last:
            logs = [
                LogRecord(
                    time_unix_nano=int((hour + minute * 60) * 1e9),
                    body=AnyValue(
                        string_value=f"order {records + minute} shipped"
                        if rng.random() < 0.5
                        else f"sync completed for tenant {rng.randrange(20)}"
                    ),
                )
                for minute in range(60)
            ]
            service = AnyValue(string_value=services[rng.randrange(4)])
            request = ExportLogsServiceRequest(
                resource_logs=[
                    ResourceLogs(
                        resource=Resource(attributes=[KeyValue(key="service.name", value=service)]),
                        scope_logs=[ScopeLogs(log_records=logs)],
                    )
                ]
            )
            wire = request.SerializeToString()
            out.write(struct.pack(">I", len(wire)) + wire)
            records += 60
            hour += 3600
    return records


def _peak_replay(path: Path, store: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of one replay into SQLite, from /usr/bin/time's view:
    the child's ru_maxrss."""
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, subprocess, sys; "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
            *_REPLAY,
            "--store",
            f"sqlite:///{store}",
            "--retention",
            "1d=800d,1mo=36mo",
            str(path),
        ],
        capture_output=True,
        check=True,
    )
    return int(done.stdout.strip()) / 1024, time.monotonic() - started


def measure_replay(requests: Sequence[PreparedRequest] | None = None) -> ReplayCost:
    requests = requests if requests is not None else build_requests(Workload())
    per_pass = sum(r.records for r in requests)
    passes = max(1, _TARGET_RECORDS // per_pass)
    payloads = [r.payload for r in requests] * passes
    records = per_pass * passes
    with tempfile.TemporaryDirectory(prefix="otlp-replay-bench-") as scratch:
        root = Path(scratch)
        empty = root / "empty"
        empty.write_bytes(b"")
        proto = root / "requests.pb"
        _write_proto(proto, payloads)
        lines = [
            encode_json_request(ExportLogsServiceRequest.FromString(r.payload)) for r in requests
        ] * passes
        as_json = root / "requests.json"
        as_json.write_bytes(b"\n".join(lines) + b"\n")
        frames = root / "frames.jsonl"
        _frames(frames)
        jsonl = [
            *("--input-format", "jsonl", "--value-field", "service", "--message-field", "uid"),
            *("--window", "60"),
        ]
        frame_us = _per_record_us(jsonl, frames, empty, FRAMES)
        history = root / "history.pb.zst"
        two_year_records = _two_years(history)
        peak_mb, seconds = _peak_replay(history, root / "state.db")
        return ReplayCost(
            protobuf_us=_per_record_us([], proto, empty, records),
            json_us=_per_record_us([], as_json, empty, records),
            orjson_us=_orjson_us(lines, records),
            frames_per_second=1e6 / frame_us,
            two_year_records=two_year_records,
            two_year_peak_mb=peak_mb,
            two_year_seconds=seconds,
        )


if __name__ == "__main__":
    print(measure_replay())
