"""Synthetic history for replay: requests as a Collector's file exporter writes them, the truth.

Two years of records, a few an hour, under several services; half the bodies repeat (a fixed
set of messages), half are fresh (an order number seen once), so distinct counts per day and
month are neither all-distinct nor all-repeated. The truth is computed here from the records
themselves, the way the service is meant to count them: distinct bodies and records per UTC
day and calendar month, per service.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otlp_stats.receiving.otlp_json import encode_json_request

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

SERVICES = ("checkout", "search", "auth", "billing")
_REPEATED = tuple(f"{verb} completed for tenant {n}" for verb in ("sync", "load") for n in range(9))
_NS = 1_000_000_000


@dataclass
class Truth:
    """Per (resolution, period start) and service: the distinct bodies and the records."""

    bodies: dict[tuple[str, float, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    records: dict[tuple[str, float, str], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, seconds: float, service: str, body: str) -> None:
        moment = datetime.fromtimestamp(seconds, tz=UTC)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        for resolution, start in (("1d", day), ("1mo", month)):
            key = (resolution, start.timestamp(), service)
            self.bodies[key].add(body)
            self.records[key] += 1


def history_requests(
    first: float, last: float, per_hour: int, seed: int = 7
) -> tuple[list[ExportLogsServiceRequest], Truth]:
    """One request per hour from `first` to `last`, `per_hour` records in it spread over the
    hour (in any order within it), one service per request."""
    rng = random.Random(seed)
    truth = Truth()
    requests = []
    order = 0
    hour = first
    while hour < last:
        service = SERVICES[rng.randrange(len(SERVICES))]
        records = []
        for _ in range(per_hour):
            seconds = hour + rng.uniform(0, 3599)
            if rng.random() < 0.5:
                body = rng.choice(_REPEATED)
            else:
                order += 1
                body = f"order {order} shipped"
            truth.add(int(seconds * _NS) / _NS, service, body)
            records.append(
                LogRecord(time_unix_nano=int(seconds * _NS), body=AnyValue(string_value=body))
            )
        requests.append(
            ExportLogsServiceRequest(
                resource_logs=[
                    ResourceLogs(
                        resource=Resource(
                            attributes=[
                                KeyValue(key="service.name", value=AnyValue(string_value=service))
                            ]
                        ),
                        scope_logs=[ScopeLogs(log_records=records)],
                    )
                ]
            )
        )
        hour += 3600
    return requests, truth


def write_json_lines(path: Path, requests: Sequence[ExportLogsServiceRequest]) -> None:
    """`format: json`, gzipped whole: one OTLP/JSON request per line."""
    with gzip.open(path, "wb") as out:
        for request in requests:
            out.write(encode_json_request(request) + b"\n")


def proto_frames(requests: Sequence[ExportLogsServiceRequest]) -> Iterator[bytes]:
    for request in requests:
        wire = request.SerializeToString()
        yield struct.pack(">I", len(wire)) + wire


def write_proto(path: Path, requests: Sequence[ExportLogsServiceRequest]) -> None:
    """`format: proto`, zstd-compressed whole: length-prefixed requests."""
    buffer = io.BytesIO()
    with zstd.ZstdFile(buffer, mode="wb") as out:
        for frame in proto_frames(requests):
            out.write(frame)
    path.write_bytes(buffer.getvalue())


def write_proto_compressed_each(path: Path, requests: Sequence[ExportLogsServiceRequest]) -> None:
    """`format: proto` with `compression: zstd` as the exporter does it without its native
    compression gate: each message compressed on its own, then length-prefixed."""
    with path.open("wb") as out:
        for request in requests:
            packed = zstd.compress(request.SerializeToString())
            out.write(struct.pack(">I", len(packed)) + packed)
