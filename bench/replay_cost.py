"""Replay's cost (issue 16): `otlp-stats replay` run for real, its CPU read from the kernel.

Protobuf replay is set against the live service's own counting of the same requests, both
in this process and in interleaved rounds (live, replay, live, replay in each, the lesser of
each side's two kept), so the machine's drift falls on both alike and the ratio is read round
by round:

- replay: `otlp-stats replay`'s entry point (`otlp_stats.cli.replay.main`, argument parsing,
  file, framing, progress, summary and all) on the reference workload's requests as a
  `format: proto` file, CPU (`time.process_time`) per record; the same file zstd-compressed
  beside it, with zstd's inflation of that file alone, which is its whole difference;
- live counting: what the live service does with each of those requests once its transport
  has handed it over (event time, as replay counts): the worker's `resolve` (the scanner's
  check and tally), the aggregator's `add_windows`, then the window closed and reported.

The yardstick used to be the live service's server CPU per record less that of the
transport-only server, from two separate runs of about 0.6 µs each: a difference of 0.09 µs
between two noisy figures, below even the scanner's in-process cost (0.16 µs), so the ratio
swung with either run's noise. Counting the same bytes in-process measures the floor itself.

The other figures are the CPU of a replay process (user + system, from getrusage of the
child) less that of the same command on an empty input (interpreter start and imports), per
record:

- OTLP/JSON: the same requests as a `format: json` file, against `orjson.loads` of the same
  lines alone, in-process;
- JSON frames: 1,000,000 `{"ts", "uid", "service"}` lines, uids from 100,000, over 17 minutes;
- memory: the peak RSS of a two-year replay (one record a minute, 1,051,200 records, zstd
  proto, 10 s windows) into SQLite with the default rollups.

`python -m bench.replay_cost` prints the figures alone; `--frames-only` the JSON frames', with
patterns counted and without, in interleaved rounds.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from otlp_stats.cli import replay
from otlp_stats.clock import SystemClock
from otlp_stats.config import Settings
from otlp_stats.counting.aggregator import Aggregator
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import EventTime, WindowedTally, default_scanner
from otlp_stats.counting.workers import WorkerPool
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
from prometheus_client import CollectorRegistry

from otlp_stats.reporting.reporter import Reporter
from otlp_stats.telemetry import Metrics

FRAMES = 1_000_000
# Enough passes over the reference requests for a couple of CPU seconds per replay.
_TARGET_RECORDS = 400_000
_REPLAY = [sys.executable, "-m", "otlp_stats", "replay", "--report-format", "json"]
# Rounds of live counting and protobuf replay, interleaved; each round is one pass of each.
_ROUNDS = 5


@dataclass(frozen=True)
class ReplayCost:
    # Medians over the interleaved rounds, and replay over live counting round by round.
    protobuf_us: float
    live_counting_us: float
    protobuf_rounds: tuple[float, ...]
    zstd_us: float
    inflate_us: float
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


def _live_counting_us(payloads: Sequence[bytes], records: int) -> float:
    """The live service's work on each request past its transport, in event time, per record."""
    settings = Settings()
    arrival = Workload().time_base_ns / 1e9 + 1.0  # just after the records: none late, none ahead
    aggregator = Aggregator(
        settings.window,
        0.0,
        settings.max_values,
        settings.sketch_lg_k,
        lateness=settings.allowed_lateness,
    )
    reporter = Reporter(
        aggregator,
        RequestQueue(1, 1),
        SystemClock(),
        io.StringIO(),
        Metrics(CollectorRegistry()),
        settings.attribute_key,
        settings.missing_label,
        "json",
        window_time="event",
    )
    event_time = EventTime.of(settings.window, settings.max_clock_skew)
    workers = WorkerPool(
        RequestQueue(1, 1),
        aggregator,
        # As the service is configured by default: patterns counted, as replay counts them.
        default_scanner(settings.attribute_key, event_time, settings.masker()),
        1,
        Metrics(CollectorRegistry()),
        None,
        settings.max_records_per_request,
        settings.retry_delay,
        LabelRenderer(settings.max_value_length),
        event_time,
    )
    started = time.process_time()
    for wire in payloads:
        _, tally = workers.resolve(wire, arrival)
        assert isinstance(tally, WindowedTally)
        aggregator.add_windows(arrival, tally.windows)
    for report in aggregator.close_until(arrival + 3600.0, empty=False):
        reporter.publish(report)
    return (time.process_time() - started) / records * 1e6


def _replay_in_process_us(path: Path, records: int) -> float:
    """`otlp-stats replay PATH`, its entry point called here, in CPU µs per record."""
    started = time.process_time()
    with contextlib.redirect_stderr(io.StringIO()):
        status = replay.main(["--report-format", "json", str(path)], out=io.StringIO())
    spent = time.process_time() - started
    if status != replay.EXIT_OK:
        raise OSError(f"otlp-stats replay {path} exited {status}")
    return spent / records * 1e6


def _inflate_us(path: Path, records: int) -> float:
    started = time.process_time()
    with zstd.ZstdFile(path, mode="rb") as stream:
        while stream.read(1 << 20):
            pass
    return (time.process_time() - started) / records * 1e6


def _protobuf_rounds(
    payloads: Sequence[bytes], proto: Path, compressed: Path, records: int
) -> tuple[float, float, tuple[float, ...], float, float]:
    """Live counting and replay of the same requests, interleaved: medians and round ratios."""
    _live_counting_us(payloads, records)  # warm: imports, descriptors, the allocator's arenas
    _replay_in_process_us(proto, records)
    live, replayed, zstd_replayed, inflated = [], [], [], []
    for _ in range(_ROUNDS):
        # Each side twice within the round, the lesser kept: another process taking the core
        # (the caches, the clock's boost) for part of one pass only ever adds to its CPU time.
        live_pair, replay_pair = [], []
        for _ in range(2):
            live_pair.append(_live_counting_us(payloads, records))
            replay_pair.append(_replay_in_process_us(proto, records))
        live.append(min(live_pair))
        replayed.append(min(replay_pair))
        zstd_replayed.append(_replay_in_process_us(compressed, records))
        inflated.append(_inflate_us(compressed, records))
    ratios = tuple(r / v for r, v in zip(replayed, live, strict=True))
    return (
        statistics.median(replayed),
        statistics.median(live),
        ratios,
        statistics.median(zstd_replayed),
        statistics.median(inflated),
    )


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
        compressed = root / "requests.pb.zst"
        with zstd.ZstdFile(compressed, mode="wb") as out:
            out.write(proto.read_bytes())
        protobuf_us, live_us, rounds, zstd_us, inflate_us = _protobuf_rounds(
            payloads, proto, compressed, records
        )
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
            protobuf_us=protobuf_us,
            live_counting_us=live_us,
            protobuf_rounds=rounds,
            zstd_us=zstd_us,
            inflate_us=inflate_us,
            json_us=_per_record_us([], as_json, empty, records),
            orjson_us=_orjson_us(lines, records),
            frames_per_second=1e6 / frame_us,
            two_year_records=two_year_records,
            two_year_peak_mb=peak_mb,
            two_year_seconds=seconds,
        )


def _protobuf_only() -> None:
    """The protobuf figures alone (seconds, not minutes): `--protobuf-only`."""
    requests = build_requests(Workload())
    per_pass = sum(r.records for r in requests)
    passes = max(1, _TARGET_RECORDS // per_pass)
    payloads = [r.payload for r in requests] * passes
    records = per_pass * passes
    with tempfile.TemporaryDirectory(prefix="otlp-replay-bench-") as scratch:
        proto = Path(scratch) / "requests.pb"
        _write_proto(proto, payloads)
        compressed = Path(scratch) / "requests.pb.zst"
        with zstd.ZstdFile(compressed, mode="wb") as out:
            out.write(proto.read_bytes())
        replayed, live, rounds, zstd_us, inflate_us = _protobuf_rounds(
            payloads, proto, compressed, records
        )
    print(
        f"protobuf replay {replayed:.3f} µs/record, live counting {live:.3f} µs/record, "
        f"ratio {statistics.median(rounds):.2f} (rounds: "
        + " / ".join(f"{ratio:.2f}" for ratio in rounds)
        + f"); zstd file {zstd_us:.3f} µs/record, of which inflation {inflate_us:.3f}"
    )


def _frames_only() -> None:
    """The JSON frames figure alone, with patterns counted (the default) and without, in
    interleaved rounds so that the machine's drift falls on both: `--frames-only`."""
    with tempfile.TemporaryDirectory(prefix="otlp-replay-bench-") as scratch:
        empty, frames = Path(scratch) / "empty", Path(scratch) / "frames.jsonl"
        empty.write_bytes(b"")
        _frames(frames)
        argv = [
            *("--input-format", "jsonl", "--value-field", "service", "--message-field", "uid"),
            *("--window", "60"),
        ]
        start = min(_replay_cpu(argv, empty) for _ in range(2))
        rounds = []
        for _ in range(_ROUNDS):
            counted = FRAMES / (_replay_cpu(argv, frames) - start)
            uncounted = FRAMES / (_replay_cpu([*argv, "--count-patterns", "false"], frames) - start)
            rounds.append((counted, uncounted))
    print(
        f"JSON frames per CPU second: {statistics.median(r[0] for r in rounds):,.0f} with "
        f"patterns, {statistics.median(r[1] for r in rounds):,.0f} without; with/without by "
        "round: " + " / ".join(f"{counted / uncounted:.2f}" for counted, uncounted in rounds)
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--protobuf-only"]:
        _protobuf_only()
    elif sys.argv[1:] == ["--frames-only"]:
        _frames_only()
    else:
        print(measure_replay())
