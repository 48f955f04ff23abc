"""The straightforward model of counting: full OTLP decode, scan each KeyValue list.

Tests compare the service's fast path (the light view in proto/) against this.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import datasketches
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otlp_stats.counting.aggregator import LabelTally
from otlp_stats.counting.messages import message_hash
from otlp_stats.counting.resolve import find_attribute, render_value


def labelled_records(
    request: ExportLogsServiceRequest, key: str
) -> Iterator[tuple[str | None, LogRecord]]:
    """Every record with the label of its value for `key` (record > scope > resource)."""
    for resource_logs in request.resource_logs:
        resource_value = find_attribute(resource_logs.resource.attributes, key)
        for scope_logs in resource_logs.scope_logs:
            scope_value = find_attribute(scope_logs.scope.attributes, key)
            for record in scope_logs.log_records:
                own = find_attribute(record.attributes, key)
                value = (
                    own
                    if own is not None
                    else scope_value
                    if scope_value is not None
                    else resource_value
                )
                yield (None if value is None else render_value(value)), record


def reference_tally(
    request: ExportLogsServiceRequest, key: str
) -> dict[str | None, tuple[set[int], int]]:
    """Per value label: the set of message hashes and the record count."""
    tallies: dict[str | None, tuple[set[int], int]] = {}
    for label, record in labelled_records(request, key):
        hashes, records = tallies.get(label, (set(), 0))
        hashes.add(message_hash(record.body))
        tallies[label] = (hashes, records + 1)
    return tallies


def reference_windows(
    request: ExportLogsServiceRequest,
    key: str,
    arrival_ns: int,
    window_ns: int,
    max_skew_ns: int,
) -> dict[int, Messages]:
    """Event time, straightforwardly: per window index, per label, messages and records.

    A record's time is time_unix_nano, else observed_time_unix_nano, else the arrival; one
    more than the skew ahead of the arrival is the arrival too.
    """
    tallies: dict[int, dict[str | None, tuple[set[int], int]]] = {}
    for label, record in labelled_records(request, key):
        time = record.time_unix_nano or record.observed_time_unix_nano or arrival_ns
        if time > arrival_ns + max_skew_ns:
            time = arrival_ns
        window = tallies.setdefault(time // window_ns, {})
        hashes, records = window.get(label, (set(), 0))
        hashes.add(message_hash(record.body))
        window[label] = (hashes, records + 1)
    return {
        index: {label: (theta_hashes(h), n) for label, (h, n) in window.items()}
        for index, window in tallies.items()
    }


# Messages as a theta sketch sees them: large enough a sketch that no test's set is sampled.
_EXACT_LG_K = 20

# Per label: its distinct messages as a sketch sees them, and its records.
Messages = dict[str | None, tuple[frozenset[int], int]]


def theta_hashes(hashes: Iterable[int]) -> frozenset[int]:
    """The hashes a theta sketch keeps for these message hashes (the sketch's own hash of each)."""
    sketch = datasketches.update_theta_sketch(_EXACT_LG_K)
    for digest in hashes:
        sketch.update(digest)
    return frozenset(sketch.compact())


def messages_of(tally: Mapping[str | None, LabelTally]) -> Messages:
    """Per label: its distinct messages as a sketch sees them, and its records.

    The scanners hand a record's message hash over either as an int or inside a compact sketch;
    this is what both ways come to, to compare scanners with each other and with the reference.
    """
    return {
        label: (
            theta_hashes(counted.hashes).union(
                *(
                    frozenset(datasketches.compact_theta_sketch.deserialize(sketch))
                    for sketch in counted.sketches
                )
            ),
            counted.records,
        )
        for label, counted in tally.items()
    }


def windows_of(windows: Mapping[int, Mapping[str | None, LabelTally]]) -> dict[int, Messages]:
    """messages_of for each window of an event-time tally."""
    return {index: messages_of(tally) for index, tally in windows.items()}


def reference_messages(request: ExportLogsServiceRequest, key: str) -> Messages:
    """reference_tally with each label's messages as a sketch sees them."""
    return {
        label: (theta_hashes(hashes), records)
        for label, (hashes, records) in reference_tally(request, key).items()
    }
