"""The decode and resolve path as one fuzz target: bytes in, a tally or a refusal out.

Anything else (an exception that is not an ExportRefused, a crash, a hang) is a bug. atheris
drives it coverage-guided (tests/fuzz/atheris_run.py, `make fuzz`); the hypothesis tests in
test_hostile_input.py call it too.
"""

from __future__ import annotations

from otlp_stats.compression import inflate
from otlp_stats.errors import ExportRefused
from otlp_stats.http_receiver import decode_json_view
from otlp_stats.resolve import LabelRenderer
from otlp_stats.view import count_records, decode_request
from otlp_stats.workers import tally_view

KEY = "service.name"
LIMIT = 1 << 20


def decode_and_resolve(data: bytes) -> int:
    """Records tallied from `data` read as each front door reads a body; -1 if all refused it."""
    tallied = -1
    labels = LabelRenderer(max_length=64)
    for decode in (_protobuf, _json, _gzip_protobuf):
        try:
            view = decode(data)
        except ExportRefused:
            continue
        batch = tally_view(view, KEY, labels)
        counted = sum(len(hashes) for hashes in batch.values())
        assert counted == count_records(view), (counted, count_records(view))
        tallied = max(tallied, counted)
    return tallied


def _protobuf(data: bytes):  # type: ignore[no-untyped-def]
    return decode_request(data).view


def _json(data: bytes):  # type: ignore[no-untyped-def]
    return decode_json_view(data).view


def _gzip_protobuf(data: bytes):  # type: ignore[no-untyped-def]
    return decode_request(inflate(data, "gzip", LIMIT)).view
