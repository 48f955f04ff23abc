"""The decode and resolve path as one fuzz target: bytes in, a tally or a refusal out.

Both scanners see every input, read as each front door reads a body: they must refuse the same
inputs and, where they accept one, count the same records under the same labels with the same
message hashes; read with event time too, both put the same records in the same windows.
Read as OTLP/JSON, the C transcoder must answer only where the reference path (json_format)
accepts, with the same request. Anything else (a disagreement, an exception that is not an
ExportRefused, a crash, a hang) is a bug. atheris drives it coverage-guided
(tests/fuzz/atheris_run.py, `make fuzz`); the hypothesis tests in test_hostile_input.py call it
too.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import EventTime, NativeScanner, Scanner, ViewScanner
from otlp_stats.errors import ExportRefused
from otlp_stats.receiving._otlp_json import transcode
from otlp_stats.receiving.compression import inflate
from otlp_stats.receiving.otlp_json import json_to_wire, reference_json_to_wire
from tests.support.reference import Messages, messages_of, windows_of

KEY = "service.name"
LIMIT = 1 << 20
SCANNERS: tuple[Scanner, Scanner] = (ViewScanner(KEY), NativeScanner(KEY))
EVENT_TIME = EventTime.of(10, 300)
TIMED_SCANNERS: tuple[Scanner, Scanner] = (
    ViewScanner(KEY, EVENT_TIME),
    NativeScanner(KEY, EVENT_TIME),
)
ARRIVAL_NS = 1_767_225_600_000_000_000
# Per window, what it counts; then the records put at arrival: dated too far ahead, undated.
Windowed = tuple[dict[int, Messages], int, int]


def decode_and_resolve(data: bytes) -> int:
    """Records tallied from `data` read as each front door reads a body; -1 if all refused it."""
    tallied = -1
    for to_wire in (_protobuf, _json_both_ways, _gzip_protobuf):
        try:
            wire = to_wire(data)
        except ExportRefused:
            continue
        outcomes = [_scan(scanner, wire) for scanner in SCANNERS]
        assert outcomes[0] == outcomes[1], (wire, outcomes)
        windowed = [_scan_windows(scanner, wire) for scanner in TIMED_SCANNERS]
        assert windowed[0] == windowed[1], (wire, windowed)
        assert (windowed[0] is None) == (outcomes[0] is None), wire
        messages = outcomes[0]
        if messages is not None:
            tallied = max(tallied, sum(records for _, records in messages.values()))
    return tallied


def _scan(scanner: Scanner, wire: bytes) -> Messages | None:
    """What the scanner counts per label, or None if it refused the wire."""
    try:
        checked = scanner.check(wire)
    except ExportRefused:
        return None
    tally = scanner.tally(checked, LabelRenderer(max_length=64))
    assert sum(counted.records for counted in tally.values()) == checked.records
    return messages_of(tally)


def _scan_windows(scanner: Scanner, wire: bytes) -> Windowed | None:
    """What the event-time scanner counts per window, or None if it refused the wire."""
    try:
        checked = scanner.check(wire)
    except ExportRefused:
        return None
    tally = scanner.tally_windows(checked, LabelRenderer(max_length=64), ARRIVAL_NS)
    counted = sum(c.records for labels in tally.windows.values() for c in labels.values())
    assert counted == checked.records
    return windows_of(tally.windows), tally.future, tally.missing


_protobuf: Callable[[bytes], bytes] = bytes


def _json_both_ways(data: bytes) -> bytes:
    fast = transcode(data)
    try:
        reference = reference_json_to_wire(data)
    except ExportRefused:
        assert fast is None, ("transcoded what the reference path refuses", data)
        raise
    if fast is not None:
        assert ExportLogsServiceRequest.FromString(fast) == ExportLogsServiceRequest.FromString(
            reference
        ), data
    return json_to_wire(data)


def _gzip_protobuf(data: bytes) -> bytes:
    return inflate(data, "gzip", LIMIT)
