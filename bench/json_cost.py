"""What OTLP/JSON costs next to protobuf: in-process decoding, and the service over OTLP/HTTP.

In-process, per record of the reference workload written as OTLP/JSON: the C transcoder
(receiving/_otlp_json.c), orjson.loads alone (the fastest well-kept parser, building Python
objects and nothing else) and the reference path (json.loads + json_format). Over HTTP: one
service, the same requests posted as protobuf and as OTLP/JSON in interleaved rounds, the
server's CPU per record acknowledged in each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench.floor import CpuPerRecord, _measure
from bench.server_process import ServerProcess
from otlp_stats.loadgen import PreparedRequest, Workload, build_requests
from otlp_stats.receiving.otlp_json import (
    NATIVE_JSON_AVAILABLE,
    encode_json_request,
    json_to_wire,
    reference_json_to_wire,
)

# The reference path takes about 90 µs a record: a few requests are enough to time it.
_REFERENCE_REQUESTS = 2


@dataclass(frozen=True)
class HttpCost:
    """Server CPU µs per record acknowledged over OTLP/HTTP, per body encoding, every round."""

    rounds: Mapping[str, Sequence[float]]

    def median(self, encoding: str) -> float:
        return statistics.median(self.rounds[encoding])


def measure_json_decoding(
    requests: Sequence[PreparedRequest], cpu_seconds: float
) -> dict[str, CpuPerRecord]:
    documents = [
        encode_json_request(ExportLogsServiceRequest.FromString(r.payload)) for r in requests
    ]
    records = sum(request.records for request in requests)
    assert not NATIVE_JSON_AVAILABLE or all(
        json_to_wire(document) == request.payload
        for document, request in zip(documents, requests, strict=True)
    ), "the transcoder did not give the protobuf bytes back"

    def transcoder() -> None:
        for document in documents:
            json_to_wire(document)

    def orjson_alone() -> None:
        for document in documents:
            orjson.loads(document)

    few = documents[:_REFERENCE_REQUESTS]

    def reference() -> None:
        for document in few:
            reference_json_to_wire(document)

    few_records = sum(request.records for request in requests[:_REFERENCE_REQUESTS])
    name = "transcoder" if NATIVE_JSON_AVAILABLE else "transcoder (not built: reference path)"
    return {
        name: _measure(transcoder, records, cpu_seconds),
        "orjson": _measure(orjson_alone, records, cpu_seconds),
        "json_format": _measure(reference, few_records, cpu_seconds),
    }


def measure_http_bodies(
    service_argv: Sequence[str],
    *,
    seconds: float,
    rounds: int,
    callers: int,
    cwd: Path,
    env: Mapping[str, str],
) -> HttpCost:
    """One service; protobuf and OTLP/JSON posted in turn, `rounds` times each."""
    argv = [*service_argv, "--http-listen", "127.0.0.1:0"]
    figures: dict[str, list[float]] = {"protobuf": [], "json": []}
    with ServerProcess("service over HTTP", argv, cwd=cwd, env=env) as server:
        server.start()
        url = f"http://127.0.0.1:{server.http_port}/v1/logs"
        for encoding in figures:  # warm-up: imports, first allocations
            _post(url, encoding, min(seconds, 2.0), callers, cwd, env)
        for _ in range(max(1, rounds)):
            for encoding, measured in figures.items():
                before = server.sample()
                tally = _post(url, encoding, seconds, callers, cwd, env)
                after = server.sample()
                if tally["records"]:
                    cpu = after.cpu_seconds - before.cpu_seconds
                    measured.append(cpu / tally["records"] * 1e6)
        server.stop()
    return HttpCost({encoding: tuple(values) for encoding, values in figures.items() if values})


def _post(
    url: str, encoding: str, seconds: float, callers: int, cwd: Path, env: Mapping[str, str]
) -> dict[str, int]:
    argv = [
        sys.executable, "-m", "bench.http_client", f"--url={url}", f"--encoding={encoding}",
        f"--duration={seconds}", f"--callers={callers}",
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=seconds + 300
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.http_client exited {done.returncode}: {done.stderr}")
    tally: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return tally


def main(argv: Sequence[str] | None = None) -> None:
    """This part of `make bench` alone: in-process decoding, then the service over HTTP."""
    # bench.run imports this module: imported here, so that neither needs the other loaded.
    from bench.run import _clean_env, service_argv

    parser = argparse.ArgumentParser(prog="python -m bench.json_cost", description=__doc__)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--floor-seconds", type=float, default=2.0)
    parser.add_argument("--skip-decoding", action="store_true", help="only the HTTP figures")
    args = parser.parse_args(argv)
    workload = Workload()
    if not args.skip_decoding:
        decoding = measure_json_decoding(build_requests(workload), args.floor_seconds)
        for name, decoded in decoding.items():
            print(f"in-process {name}: {decoded.median_us:.3f} µs/record")
    with tempfile.TemporaryDirectory(prefix="otlp-bench-") as scratch:
        http = measure_http_bodies(
            service_argv(workload, ""), seconds=args.duration, rounds=args.rounds,
            callers=args.callers, cwd=Path(scratch), env=_clean_env(),
        )  # fmt: skip
    for encoding, rounds in http.rounds.items():
        figures = ", ".join(f"{value:.3f}" for value in rounds)
        print(f"HTTP {encoding}: median {http.median(encoding):.3f} µs/record ({figures})")
    print(f"HTTP json / protobuf: {http.median('json') / http.median('protobuf'):.2f}x")


if __name__ == "__main__":
    main()
