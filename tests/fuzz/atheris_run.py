"""`python -m tests.fuzz.atheris_run [libFuzzer flags]`: coverage-guided fuzzing of decoding.

Only otlp_stats is instrumented (instrumenting every loaded module takes minutes), so the
coverage that guides the fuzzer is the project's own branches: inflating, the JSON mapping,
rendering labels, hashing bodies. `-max_total_time=S` or `-runs=N` bound a run; a crash leaves
its input as crash-<sha1> in the working directory. A corpus directory given as an argument is
seeded with valid requests (protobuf, JSON, gzip) when empty, so mutation starts from inputs
that get past the first byte.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otlp_stats.receiving.otlp_json import encode_json

with atheris.instrument_imports(include=["otlp_stats"]):
    from tests.fuzz.decode_path import decode_and_resolve


def one_input(data: bytes) -> None:
    decode_and_resolve(data)


def seed_requests() -> list[bytes]:
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="b", value=AnyValue(array_value=ArrayValue(values=[AnyValue()]))),
                KeyValue(key="a", value=AnyValue(double_value=0.1)),
            ]
        )
    )
    values = [AnyValue(string_value="checkout"), AnyValue(int_value=7), nested]
    records = [
        LogRecord(body=value, attributes=[KeyValue(key="service.name", value=value)])
        for value in values
    ]
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(
                    attributes=[KeyValue(key="service.name", value=AnyValue(bool_value=True))]
                ),
                scope_logs=[ScopeLogs(log_records=records)],
            )
        ]
    )
    wire = request.SerializeToString()
    return [wire, encode_json(request), gzip.compress(wire)]


def seed(corpus: Path) -> None:
    if corpus.is_dir() and not any(corpus.iterdir()):
        for number, request in enumerate(seed_requests()):
            (corpus / f"seed-{number}").write_bytes(request)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        if not argument.startswith("-"):
            seed(Path(argument))
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
